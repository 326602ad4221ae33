//! Keys and signatures: ed25519 accounts and Ethereum-style secp256k1 accounts, BIP-39 mnemonics.
//!
//! Derivation paths: Ethereum keys follow BIP-32 `m/44'/60'/0'/0/{index}`, the path MetaMask uses,
//! so a MetaMask recovery phrase gives the same 0x address here. Ed25519 keys follow SLIP-0010
//! (hardened only) `m/44'/118'/0'/0'/{index}'`.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use hmac::{Hmac, Mac};
use k256::ecdsa::{RecoveryId, Signature as EcdsaSignature, SigningKey as EcdsaSigningKey, VerifyingKey};
use k256::elliptic_curve::PrimeField;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use sha3::{Digest, Keccak256};

use crate::address::Address;

const HARDENED: u32 = 0x8000_0000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
    #[error("invalid secret key bytes")]
    SecretKey,
    #[error("key derivation produced an invalid key at index {0}; use the next index")]
    Derivation(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("ed25519 public key is not a valid curve point")]
    BadPublicKey,
    #[error("signature does not verify for this public key and sign bytes")]
    Invalid,
    #[error("secp256k1 signature is malformed (r or s out of range)")]
    Malformed,
    #[error("secp256k1 signature has a high s value; normalise it to low s (EIP-2)")]
    HighS,
    #[error("secp256k1 recovery byte v must be 27 or 28, got {0}")]
    BadRecoveryByte(u8),
    #[error("the signing key is not the sender's: it belongs to {signer}, the transaction names {sender}")]
    NotSender { signer: Address, sender: Address },
}

/// Which signature scheme a key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScheme {
    Ed25519,
    Eth,
}

impl std::str::FromStr for KeyScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ed25519" => Ok(KeyScheme::Ed25519),
            "eth" | "secp256k1" | "ethereum" => Ok(KeyScheme::Eth),
            other => Err(format!("unknown key scheme {other:?}: use ed25519 or eth")),
        }
    }
}

/// The signature carried by a transaction.
#[derive(Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum TxSignature {
    /// ed25519 over the 32-byte sign digest; the public key travels with it so that verification
    /// needs no state and whole blocks can be batch-verified up front.
    Ed25519 { pubkey: [u8; 32], sig: [u8; 64] },
    /// EIP-191 `personal_sign` over the readable rendering of the sign doc: `r ‖ s ‖ v`, v ∈ {27, 28},
    /// low s. The public key is recovered from it.
    Eth { sig: [u8; 65] },
}

impl TxSignature {
    /// Checks that `signer` signed `digest`: an ed25519 key hashing to `signer` signed the digest,
    /// or an Ethereum key recovering to `signer` `personal_sign`ed the readable rendering (made by
    /// `readable` only when needed), which must end with the digest.
    pub fn verify(
        &self,
        signer: &Address,
        digest: &[u8; 32],
        readable: impl FnOnce() -> String,
    ) -> Result<(), SignatureError> {
        match self {
            TxSignature::Ed25519 { pubkey, sig } => {
                let key_address = Address::from_ed25519(pubkey);
                if key_address != *signer {
                    return Err(SignatureError::NotSender {
                        signer: key_address,
                        sender: *signer,
                    });
                }
                verify_ed25519(pubkey, sig, digest)
            }
            TxSignature::Eth { sig } => {
                let text = readable();
                let recovered = recover_eth(&eip191_digest(text.as_bytes()), sig)?;
                if recovered != *signer {
                    return Err(SignatureError::NotSender {
                        signer: recovered,
                        sender: *signer,
                    });
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for TxSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxSignature::Ed25519 { pubkey, sig } => {
                write!(
                    f,
                    "Ed25519{{pubkey: {}, sig: {}}}",
                    hex::encode(pubkey),
                    hex::encode(sig)
                )
            }
            TxSignature::Eth { sig } => write!(f, "Eth{{sig: {}}}", hex::encode(sig)),
        }
    }
}

/// The JSON form of a [`TxSignature`]: hex strings under a `scheme` tag.
#[derive(Serialize, serde::Deserialize)]
#[serde(tag = "scheme", rename_all = "lowercase")]
enum SignatureRepr {
    Ed25519 { pubkey: String, sig: String },
    Eth { sig: String },
}

impl<'de> serde::Deserialize<'de> for TxSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        fn bytes<const N: usize, E: Error>(what: &str, s: &str) -> Result<[u8; N], E> {
            let mut out = [0u8; N];
            hex::decode_to_slice(s.strip_prefix("0x").unwrap_or(s), &mut out)
                .map_err(|_| E::custom(format!("{what} must be {N} bytes of hex")))?;
            Ok(out)
        }
        Ok(match SignatureRepr::deserialize(d)? {
            SignatureRepr::Ed25519 { pubkey, sig } => TxSignature::Ed25519 {
                pubkey: bytes("pubkey", &pubkey)?,
                sig: bytes("sig", &sig)?,
            },
            SignatureRepr::Eth { sig } => TxSignature::Eth {
                sig: bytes("sig", &sig)?,
            },
        })
    }
}

impl Serialize for TxSignature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use SignatureRepr as Repr;
        match self {
            TxSignature::Ed25519 { pubkey, sig } => Repr::Ed25519 {
                pubkey: hex::encode(pubkey),
                sig: hex::encode(sig),
            }
            .serialize(s),
            TxSignature::Eth { sig } => Repr::Eth {
                sig: format!("0x{}", hex::encode(sig)),
            }
            .serialize(s),
        }
    }
}

/// Verifies one ed25519 signature (ZIP-215 rules, the same as the batch verifier's).
/// Whether `key` is an ed25519 public key a validator may hold: a point of the curve in its one
/// canonical encoding, and not of small order. A key that is no point can never sign; a second
/// encoding of a member's point would be a second seat for one key; a small-order point
/// verifies signatures nobody made (ZIP-215 verification is cofactored).
pub fn is_ed25519_public_key(key: &[u8; 32]) -> bool {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    match CompressedEdwardsY(*key).decompress() {
        Some(p) => p.compress().to_bytes() == *key && !p.is_small_order(),
        None => false,
    }
}

#[cfg(test)]
mod validator_key_tests {
    use super::*;

    #[test]
    fn a_validator_key_is_a_canonical_point_not_of_small_order() {
        let real = SigningKey::from_secret(KeyScheme::Ed25519, &[5; 32]).expect("a secret");
        let real: [u8; 32] = real.public_key_bytes().try_into().expect("32 bytes");
        assert!(is_ed25519_public_key(&real));
        // The identity (small order), y = 2 (no point), and a non-canonical y = p + 1 (the
        // identity's second encoding).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(!is_ed25519_public_key(&identity));
        let mut no_point = [0u8; 32];
        no_point[0] = 2;
        assert!(!is_ed25519_public_key(&no_point));
        let mut p_plus_one = [0xffu8; 32];
        p_plus_one[0] = 0xee;
        p_plus_one[31] = 0x7f;
        assert!(!is_ed25519_public_key(&p_plus_one));
    }
}

pub fn verify_ed25519(pubkey: &[u8; 32], sig: &[u8; 64], msg: &[u8]) -> Result<(), SignatureError> {
    let vk = ed25519_zebra::VerificationKey::try_from(*pubkey).map_err(|_| SignatureError::BadPublicKey)?;
    vk.verify(&ed25519_zebra::Signature::from(*sig), msg)
        .map_err(|_| SignatureError::Invalid)
}

/// EIP-191 `personal_sign` digest of a message.
pub fn eip191_digest(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    h.update(message);
    h.finalize().into()
}

/// Recovers the Ethereum address that made `sig` over `digest`.
pub fn recover_eth(digest: &[u8; 32], sig: &[u8; 65]) -> Result<Address, SignatureError> {
    let v = sig[64];
    let recid = match v {
        27 | 28 => RecoveryId::from_byte(v - 27).ok_or(SignatureError::BadRecoveryByte(v))?,
        other => return Err(SignatureError::BadRecoveryByte(other)),
    };
    let signature = EcdsaSignature::from_slice(&sig[..64]).map_err(|_| SignatureError::Malformed)?;
    if signature.normalize_s().is_some() {
        return Err(SignatureError::HighS);
    }
    let vk = VerifyingKey::recover_from_prehash(digest, &signature, recid).map_err(|_| SignatureError::Invalid)?;
    Ok(eth_address(&vk))
}

fn eth_address(vk: &VerifyingKey) -> Address {
    let point = vk.to_encoded_point(false);
    let mut xy = [0u8; 64];
    xy.copy_from_slice(&point.as_bytes()[1..65]);
    Address::from_eth_pubkey(&xy)
}

/// A private key able to sign transactions.
#[derive(Clone)]
pub enum SigningKey {
    Ed25519(ed25519_zebra::SigningKey),
    Eth(EcdsaSigningKey),
}

/// The secret leaves memory with the key: ed25519-zebra's key is `Copy` and does not wipe
/// itself, so this does; k256's wipes itself on drop already.
impl Drop for SigningKey {
    fn drop(&mut self) {
        if let SigningKey::Ed25519(k) = self {
            zeroize::Zeroize::zeroize(k);
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material.
        write!(f, "SigningKey({:?}, {})", self.scheme(), self.address())
    }
}

impl SigningKey {
    pub fn generate<R: RngCore + CryptoRng>(scheme: KeyScheme, rng: &mut R) -> SigningKey {
        match scheme {
            KeyScheme::Ed25519 => SigningKey::Ed25519(ed25519_zebra::SigningKey::new(rng)),
            KeyScheme::Eth => SigningKey::Eth(EcdsaSigningKey::random(rng)),
        }
    }

    /// From raw 32 secret bytes.
    pub fn from_secret(scheme: KeyScheme, secret: &[u8; 32]) -> Result<SigningKey, KeyError> {
        match scheme {
            KeyScheme::Ed25519 => Ok(SigningKey::Ed25519(ed25519_zebra::SigningKey::from(*secret))),
            KeyScheme::Eth => EcdsaSigningKey::from_slice(secret)
                .map(SigningKey::Eth)
                .map_err(|_| KeyError::SecretKey),
        }
    }

    /// Derives the key at `index` from a BIP-39 mnemonic (see the module docs for the paths).
    pub fn from_mnemonic(scheme: KeyScheme, phrase: &str, index: u32) -> Result<SigningKey, KeyError> {
        let mnemonic =
            bip39::Mnemonic::parse_normalized(phrase.trim()).map_err(|e| KeyError::Mnemonic(e.to_string()))?;
        let seed = zeroize::Zeroizing::new(mnemonic.to_seed(""));
        match scheme {
            KeyScheme::Eth => {
                let secret = zeroize::Zeroizing::new(bip32_secp256k1(
                    &seed[..],
                    &[44 | HARDENED, 60 | HARDENED, HARDENED, 0, index],
                )?);
                SigningKey::from_secret(KeyScheme::Eth, &secret)
            }
            KeyScheme::Ed25519 => {
                let secret = zeroize::Zeroizing::new(slip10_ed25519(&seed[..], &[44, 118, 0, 0, index]));
                SigningKey::from_secret(KeyScheme::Ed25519, &secret)
            }
        }
    }

    pub fn scheme(&self) -> KeyScheme {
        match self {
            SigningKey::Ed25519(_) => KeyScheme::Ed25519,
            SigningKey::Eth(_) => KeyScheme::Eth,
        }
    }

    /// The raw secret, in a buffer that wipes itself when dropped.
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(match self {
            SigningKey::Ed25519(k) => k.to_bytes(),
            SigningKey::Eth(k) => k.to_bytes().into(),
        })
    }

    /// The ed25519 secret (RFC 8032's 32-byte seed) and public key, for a validator's consensus
    /// identity, which is the same key as its account's; `None` for an Ethereum key, which
    /// cannot sign consensus votes.
    pub fn ed25519_parts(&self) -> Option<(zeroize::Zeroizing<[u8; 32]>, [u8; 32])> {
        match self {
            SigningKey::Ed25519(k) => Some((
                zeroize::Zeroizing::new(k.to_bytes()),
                <[u8; 32]>::from(k.verification_key()),
            )),
            SigningKey::Eth(_) => None,
        }
    }

    pub fn address(&self) -> Address {
        match self {
            SigningKey::Ed25519(k) => Address::from_ed25519(&<[u8; 32]>::from(k.verification_key())),
            SigningKey::Eth(k) => eth_address(k.verifying_key()),
        }
    }

    /// Public key bytes: 32 for ed25519, 33 (compressed SEC1) for secp256k1.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(k) => <[u8; 32]>::from(k.verification_key()).to_vec(),
            SigningKey::Eth(k) => k.verifying_key().to_encoded_point(true).as_bytes().to_vec(),
        }
    }

    /// Signs a transaction: ed25519 signs `digest`; Ethereum keys `personal_sign` the `readable`
    /// rendering (which itself ends with the digest).
    pub fn sign_tx(&self, digest: &[u8; 32], readable: &str) -> TxSignature {
        match self {
            SigningKey::Ed25519(k) => TxSignature::Ed25519 {
                pubkey: <[u8; 32]>::from(k.verification_key()),
                sig: k.sign(digest).to_bytes(),
            },
            SigningKey::Eth(k) => TxSignature::Eth {
                sig: personal_sign(k, readable.as_bytes()),
            },
        }
    }

    /// Signs arbitrary bytes (ed25519 directly; Ethereum keys with EIP-191 `personal_sign`).
    pub fn sign_bytes(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            SigningKey::Eth(k) => personal_sign(k, msg).to_vec(),
        }
    }
}

/// EIP-191 `personal_sign`, as MetaMask does it: 65 bytes `r ‖ s ‖ v` with v ∈ {27, 28}.
pub fn personal_sign(key: &EcdsaSigningKey, msg: &[u8]) -> [u8; 65] {
    let digest = eip191_digest(msg);
    let (sig, recid) = key
        .sign_prehash_recoverable(&digest)
        .expect("signing a 32-byte prehash with a valid key cannot fail");
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&sig.to_bytes());
    out[64] = 27 + recid.to_byte();
    out
}

/// Generates a fresh 24-word BIP-39 mnemonic.
pub fn generate_mnemonic<R: RngCore + CryptoRng>(rng: &mut R) -> String {
    let mut entropy = [0u8; 32];
    rng.fill_bytes(&mut entropy);
    bip39::Mnemonic::from_entropy(&entropy)
        .expect("32 bytes is a valid BIP-39 entropy length")
        .to_string()
}

type HmacSha512 = Hmac<Sha512>;

fn hmac512(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    let mut mac = HmacSha512::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// BIP-32 private derivation on secp256k1.
fn bip32_secp256k1(seed: &[u8], path: &[u32]) -> Result<[u8; 32], KeyError> {
    let i = hmac512(b"Bitcoin seed", &[seed]);
    let (mut key, mut chain) = split(&i);
    for &index in path {
        let data = if index >= HARDENED {
            hmac512(&chain, &[&[0u8], &key, &index.to_be_bytes()])
        } else {
            let sk = EcdsaSigningKey::from_slice(&key).map_err(|_| KeyError::Derivation(index))?;
            let pubkey = sk.verifying_key().to_encoded_point(true);
            hmac512(&chain, &[pubkey.as_bytes(), &index.to_be_bytes()])
        };
        let (il, ir) = split(&data);
        let tweak =
            Option::<k256::Scalar>::from(k256::Scalar::from_repr(il.into())).ok_or(KeyError::Derivation(index))?;
        let parent =
            Option::<k256::Scalar>::from(k256::Scalar::from_repr(key.into())).ok_or(KeyError::Derivation(index))?;
        let child = tweak + parent;
        if bool::from(child.is_zero()) {
            return Err(KeyError::Derivation(index));
        }
        key = child.to_bytes().into();
        chain = ir;
    }
    Ok(key)
}

/// SLIP-0010 derivation for ed25519 (every index hardened).
fn slip10_ed25519(seed: &[u8], path: &[u32]) -> [u8; 32] {
    let i = hmac512(b"ed25519 seed", &[seed]);
    let (mut key, mut chain) = split(&i);
    for &index in path {
        let hardened = index | HARDENED;
        let data = hmac512(&chain, &[&[0u8], &key, &hardened.to_be_bytes()]);
        (key, chain) = split(&data);
    }
    key
}

fn split(i: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut l = [0u8; 32];
    let mut r = [0u8; 32];
    l.copy_from_slice(&i[..32]);
    r.copy_from_slice(&i[32..]);
    (l, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARDHAT: &str = "test test test test test test test test test test test junk";

    #[test]
    fn metamask_mnemonic_gives_the_well_known_address() {
        // Hardhat's and MetaMask's derivation of this public test phrase.
        let k = SigningKey::from_mnemonic(KeyScheme::Eth, HARDHAT, 0).expect("valid");
        assert_eq!(k.address().to_string(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        let k1 = SigningKey::from_mnemonic(KeyScheme::Eth, HARDHAT, 1).expect("valid");
        assert_eq!(k1.address().to_string(), "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
    }

    #[test]
    fn slip10_matches_the_published_test_vector() {
        // SLIP-0010 test vector 1 for ed25519, chain m/0'.
        let seed = hex::decode("000102030405060708090a0b0c0d0e0f").expect("hex");
        assert_eq!(
            hex::encode(slip10_ed25519(&seed[..], &[])),
            "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7"
        );
        assert_eq!(
            hex::encode(slip10_ed25519(&seed[..], &[0])),
            "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3"
        );
    }

    #[test]
    fn personal_sign_recovers_the_signer() {
        let k = SigningKey::from_mnemonic(KeyScheme::Eth, HARDHAT, 0).expect("valid");
        let SigningKey::Eth(inner) = &k else { unreachable!() };
        let sig = personal_sign(inner, b"hello");
        assert_eq!(recover_eth(&eip191_digest(b"hello"), &sig), Ok(k.address()));
        assert_ne!(recover_eth(&eip191_digest(b"hellO"), &sig), Ok(k.address()));
    }

    #[test]
    fn high_s_and_bad_v_are_rejected() {
        let k = SigningKey::from_mnemonic(KeyScheme::Eth, HARDHAT, 0).expect("valid");
        let SigningKey::Eth(inner) = &k else { unreachable!() };
        let mut sig = personal_sign(inner, b"x");
        sig[64] = 1;
        assert_eq!(
            recover_eth(&eip191_digest(b"x"), &sig),
            Err(SignatureError::BadRecoveryByte(1))
        );
        let good = personal_sign(inner, b"x");
        let s = EcdsaSignature::from_slice(&good[..64]).expect("valid");
        let (r, s_val) = s.split_scalars();
        let high = EcdsaSignature::from_scalars(r, -*s_val).expect("valid");
        let mut high_bytes = good;
        high_bytes[..64].copy_from_slice(&high.to_bytes());
        assert_eq!(
            recover_eth(&eip191_digest(b"x"), &high_bytes),
            Err(SignatureError::HighS)
        );
    }

    #[test]
    fn mnemonic_round_trip_and_garbage_rejected() {
        let phrase = generate_mnemonic(&mut rand_core::OsRng);
        assert_eq!(phrase.split(' ').count(), 24);
        let a = SigningKey::from_mnemonic(KeyScheme::Ed25519, &phrase, 0).expect("valid");
        let b = SigningKey::from_mnemonic(KeyScheme::Ed25519, &phrase, 0).expect("valid");
        assert_eq!(a.address(), b.address());
        assert!(matches!(
            SigningKey::from_mnemonic(KeyScheme::Ed25519, "not a mnemonic", 0),
            Err(KeyError::Mnemonic(_))
        ));
    }
}
