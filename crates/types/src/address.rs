//! Account addresses: bech32 `pazar1…` for ed25519 keys, `0x…` (EIP-55) for Ethereum keys.

use std::fmt;
use std::str::FromStr;

use bech32::{Bech32, Hrp};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sha3::Keccak256;

/// Human-readable part of native addresses.
pub const ADDRESS_HRP: &str = "pazar";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("invalid address {0:?}: expected pazar1… (bech32) or 0x followed by 40 hex digits")]
    Malformed(String),
    #[error("invalid address {0:?}: bech32 prefix must be \"pazar\"")]
    WrongPrefix(String),
    #[error("invalid address {0:?}: mixed-case EIP-55 checksum does not match")]
    BadChecksum(String),
}

/// An account address. Native addresses are the first 20 bytes of SHA-256 of an ed25519 public
/// key (or of a module name); Ethereum addresses are the last 20 bytes of Keccak-256 of an
/// uncompressed secp256k1 public key, exactly as Ethereum derives them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub enum Address {
    Native([u8; 20]),
    Eth([u8; 20]),
}

/// The order a derive would give (native addresses first, then the bytes in order), written
/// out because addresses lead most of the ledger's table keys: comparing the bytes as two
/// big-endian integers is a few instructions, where the derived comparison calls `memcmp`.
impl Ord for Address {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        fn word(b: &[u8; 20], at: usize) -> u64 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(w)
        }
        fn tail(b: &[u8; 20]) -> u32 {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[16..]);
            u32::from_be_bytes(w)
        }
        let (a, b) = (self.bytes(), other.bytes());
        self.is_eth()
            .cmp(&other.is_eth())
            .then_with(|| word(a, 0).cmp(&word(b, 0)))
            .then_with(|| word(a, 8).cmp(&word(b, 8)))
            .then_with(|| tail(a).cmp(&tail(b)))
    }
}

impl PartialOrd for Address {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Address {
    /// The smallest address in the total order (used for range bounds).
    pub const MIN: Address = Address::Native([0; 20]);
    /// The largest address in the total order (used for range bounds).
    pub const MAX: Address = Address::Eth([0xff; 20]);

    pub fn from_ed25519(pubkey: &[u8; 32]) -> Address {
        let digest = Sha256::digest(pubkey);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[..20]);
        Address::Native(out)
    }

    /// From the 64-byte uncompressed public key without its `0x04` prefix.
    pub fn from_eth_pubkey(uncompressed_xy: &[u8; 64]) -> Address {
        let digest = Keccak256::digest(uncompressed_xy);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[12..]);
        Address::Eth(out)
    }

    /// The account of a ledger module (escrow, fee pool…). No key can sign for it.
    pub fn module(name: &str) -> Address {
        let digest = Sha256::digest(format!("pazar/module/{name}").as_bytes());
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[..20]);
        Address::Native(out)
    }

    pub fn bytes(&self) -> &[u8; 20] {
        match self {
            Address::Native(b) | Address::Eth(b) => b,
        }
    }

    pub fn is_eth(&self) -> bool {
        matches!(self, Address::Eth(_))
    }
}

fn eip55(bytes: &[u8; 20]) -> String {
    let lower = hex::encode(bytes);
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0xf;
        if c.is_ascii_alphabetic() && nibble >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Native(b) => {
                let hrp = Hrp::parse_unchecked(ADDRESS_HRP);
                match bech32::encode::<Bech32>(hrp, b) {
                    Ok(s) => f.write_str(&s),
                    Err(_) => Err(fmt::Error),
                }
            }
            Address::Eth(b) => f.write_str(&eip55(b)),
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || AddressError::Malformed(s.to_string());
        if let Some(hex_part) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            if hex_part.len() != 40 {
                return Err(malformed());
            }
            let mut out = [0u8; 20];
            hex::decode_to_slice(hex_part, &mut out).map_err(|_| malformed())?;
            let has_upper = hex_part.bytes().any(|b| b.is_ascii_uppercase());
            let has_lower = hex_part.bytes().any(|b| b.is_ascii_lowercase());
            if has_upper && has_lower && eip55(&out)[2..] != *hex_part {
                return Err(AddressError::BadChecksum(s.to_string()));
            }
            return Ok(Address::Eth(out));
        }
        let (hrp, data) = bech32::decode(s).map_err(|_| malformed())?;
        if hrp.as_str() != ADDRESS_HRP {
            return Err(AddressError::WrongPrefix(s.to_string()));
        }
        let out: [u8; 20] = data.try_into().map_err(|_| malformed())?;
        Ok(Address::Native(out))
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <String as Deserialize>::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_order_by_kind_then_bytes() {
        // The order of (kind, bytes) as a derive on the enum defines it.
        let reference = |a: &Address| (a.is_eth(), *a.bytes());
        let mut all = Vec::new();
        for bytes in [[0u8; 20], [0xff; 20], [1; 20]] {
            for i in [0usize, 7, 15, 16, 19] {
                for v in [0u8, 1, 0x80, 0xff] {
                    let mut b = bytes;
                    b[i] = v;
                    all.push(Address::Native(b));
                    all.push(Address::Eth(b));
                }
            }
        }
        for a in &all {
            for b in &all {
                assert_eq!(a.cmp(b), reference(a).cmp(&reference(b)), "{a:?} vs {b:?}");
            }
        }
        assert!(Address::MIN <= Address::Native([0; 20]) && Address::Eth([0xff; 20]) <= Address::MAX);
    }

    #[test]
    fn native_address_round_trips_through_bech32() {
        let a = Address::module("escrow");
        let text = a.to_string();
        assert!(text.starts_with("pazar1"), "{text}");
        assert_eq!(text.parse::<Address>(), Ok(a));
    }

    #[test]
    fn eth_address_uses_eip55_checksum() {
        // The example from EIP-55 itself.
        let text = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let a: Address = text.parse().expect("valid");
        assert_eq!(a.to_string(), text);
        assert_eq!(text.to_lowercase().parse::<Address>(), Ok(a));
        assert!(matches!(
            "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse::<Address>(),
            Err(AddressError::BadChecksum(_))
        ));
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "",
            "0x12",
            "pazar1",
            "cosmos1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqnrql8a",
            "0xzz5aeb6053f3e94c9b9a09f33669435e7ef1beae",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?}");
        }
    }
}
