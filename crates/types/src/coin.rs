//! Denominations, integer coins and fixed-point prices.
//!
//! Amounts are integer base units (`u128`). Prices per block are fixed-point numbers with
//! [`DEC_DECIMALS`] decimals stored as a scaled `u128`, so that a lease can cost less than one base
//! unit per block without any rounding: remainders are carried by the escrow, never dropped.

use std::fmt;
use std::io::{Error as IoError, ErrorKind, Read, Write};
use std::str::FromStr;
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Number of decimals of a [`Dec`].
pub const DEC_DECIMALS: u32 = 18;
/// `1.0` as a scaled [`Dec`] integer.
pub const DEC_SCALE: u128 = 1_000_000_000_000_000_000;
/// Longest accepted denomination name.
pub const MAX_DENOM_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinError {
    #[error("invalid denomination {0:?}: expected 2-128 characters [a-zA-Z][a-zA-Z0-9/:._-]*")]
    InvalidDenom(String),
    #[error("invalid amount {0:?}: expected a non-negative integer")]
    InvalidAmount(String),
    #[error("invalid decimal {0:?}: expected digits with at most 18 decimals")]
    InvalidDec(String),
    #[error("invalid coin {0:?}: expected <amount><denom>, e.g. 1000upzr")]
    InvalidCoin(String),
    #[error("amount overflows 128 bits")]
    Overflow,
}

/// A validated denomination name, e.g. `upzr` or `uusd`.
///
/// The name is shared (`Arc<str>`), not owned: the ledger copies denominations into every
/// balance key, journal entry, event and receipt, and a shared name makes each copy a counter
/// increment instead of an allocation. Equality, order, hashing and both encodings are those of
/// the name as a string, exactly as when it was a `String`.
#[derive(Clone)]
pub struct Denom(Arc<str>);

/// Equality, order and hash of the names as strings. Written out because denominations are
/// compared in every transaction (fee checks, balance keys): two copies of one name are equal
/// without reading it, and short names compare in an inlined loop rather than through a
/// `memcmp` call.
impl PartialEq for Denom {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Denom {}

impl std::hash::Hash for Denom {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Ord for Denom {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x.cmp(y);
            }
        }
        a.len().cmp(&b.len())
    }
}

impl PartialOrd for Denom {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Denom {
    pub fn new(name: impl Into<String>) -> Result<Self, CoinError> {
        let name = name.into();
        if Denom::is_valid(&name) {
            Ok(Denom(Arc::from(name)))
        } else {
            Err(CoinError::InvalidDenom(name))
        }
    }

    fn is_valid(name: &str) -> bool {
        let bytes = name.as_bytes();
        (2..=MAX_DENOM_LEN).contains(&bytes.len())
            && bytes[0].is_ascii_alphabetic()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"/:._-".contains(b))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Denom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Denom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Denom {
    type Err = CoinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Denom::new(s)
    }
}

/// The Borsh encoding of the name as a string (`u32` length, then the bytes), as `String` has.
impl BorshSerialize for Denom {
    fn serialize<W: Write>(&self, writer: &mut W) -> std::io::Result<()> {
        BorshSerialize::serialize(&*self.0, writer)
    }
}

/// The JSON form is the name as a string.
impl Serialize for Denom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Decodes a Borsh string and checks it is a denomination, with the errors of decoding a
/// `String` and then calling [`Denom::new`]. A name short enough to be valid is read onto the
/// stack and copied once into its shared allocation (every transaction decodes two or three).
impl BorshDeserialize for Denom {
    fn deserialize_reader<R: Read>(reader: &mut R) -> std::io::Result<Self> {
        let len = u32::deserialize_reader(reader)? as usize;
        if len == 0 || len > MAX_DENOM_LEN {
            // Not a denomination whatever the bytes: report what decoding the string reports.
            let raw = read_borsh_string_bytes(reader, len)?;
            let raw = String::from_utf8(raw).map_err(|e| IoError::new(ErrorKind::InvalidData, e.to_string()))?;
            return Denom::new(raw).map_err(|e| IoError::new(ErrorKind::InvalidData, e));
        }
        let mut buf = [0u8; MAX_DENOM_LEN];
        read_full(reader, &mut buf[..len])?;
        let name = std::str::from_utf8(&buf[..len]).map_err(|e| IoError::new(ErrorKind::InvalidData, e.to_string()))?;
        if !Denom::is_valid(name) {
            return Err(IoError::new(
                ErrorKind::InvalidData,
                CoinError::InvalidDenom(name.to_string()),
            ));
        }
        Ok(Denom(Arc::from(name)))
    }
}

/// Borsh's error when the input ends inside a value.
const UNEXPECTED_LENGTH_OF_INPUT: &str = "Unexpected length of input";

/// Fills `buf` from `reader` as Borsh reads the bytes of a string: an input that ends first is
/// [`UNEXPECTED_LENGTH_OF_INPUT`].
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<()> {
    let mut pos = 0;
    while pos < buf.len() {
        match reader.read(&mut buf[pos..])? {
            0 => return Err(IoError::new(ErrorKind::InvalidData, UNEXPECTED_LENGTH_OF_INPUT)),
            n => pos += n,
        }
    }
    Ok(())
}

/// The `len` bytes of a Borsh string whose length prefix was read, growing the buffer as the
/// bytes arrive (as Borsh does) so a forged length cannot make it allocate gigabytes.
fn read_borsh_string_bytes<R: Read>(reader: &mut R, len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; len.min(1024 * 1024)];
    let mut pos = 0;
    while pos < len {
        if pos == out.len() {
            out.resize(out.len().saturating_mul(2).min(len), 0);
        }
        match reader.read(&mut out[pos..])? {
            0 => return Err(IoError::new(ErrorKind::InvalidData, UNEXPECTED_LENGTH_OF_INPUT)),
            n => pos += n,
        }
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for Denom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <String as Deserialize>::deserialize(d)?;
        Denom::new(raw).map_err(serde::de::Error::custom)
    }
}

/// An integer amount of one denomination.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Coin {
    pub denom: Denom,
    #[serde(with = "u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub amount: u128,
}

impl Coin {
    pub fn new(amount: u128, denom: Denom) -> Self {
        Coin { denom, amount }
    }
}

impl fmt::Display for Coin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.denom)
    }
}

impl FromStr for Coin {
    type Err = CoinError;
    /// Parses `1000upzr`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| CoinError::InvalidCoin(s.to_string()))?;
        if split == 0 {
            return Err(CoinError::InvalidCoin(s.to_string()));
        }
        let amount = s[..split]
            .parse::<u128>()
            .map_err(|_| CoinError::InvalidAmount(s[..split].to_string()))?;
        Ok(Coin {
            amount,
            denom: Denom::new(&s[split..])?,
        })
    }
}

/// A non-negative fixed-point number with 18 decimals (`raw / 10^18`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize)]
pub struct Dec(pub u128);

impl Dec {
    pub const ZERO: Dec = Dec(0);

    pub fn from_int(units: u128) -> Option<Dec> {
        units.checked_mul(DEC_SCALE).map(Dec)
    }

    pub fn raw(self) -> u128 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Dec) -> Option<Dec> {
        self.0.checked_add(other.0).map(Dec)
    }

    /// `self × n`, e.g. a unit price times a replica count.
    pub fn checked_mul_int(self, n: u128) -> Option<Dec> {
        self.0.checked_mul(n).map(Dec)
    }

    /// Splits `self × blocks + carry` into whole base units and the fractional remainder
    /// (scaled, `< DEC_SCALE`). `carry` must be `< DEC_SCALE`. Returns `None` only when the whole
    /// part does not fit in 128 bits.
    pub fn accrue(self, blocks: u64, carry: u128) -> Option<(u128, u128)> {
        debug_assert!(carry < DEC_SCALE);
        let blocks = u128::from(blocks);
        let whole = (self.0 / DEC_SCALE).checked_mul(blocks)?;
        // (self.0 % SCALE) < 1e18 and blocks < 2^64, so this product is < 1.9e37: no overflow.
        let frac = (self.0 % DEC_SCALE) * blocks + carry;
        let total = whole.checked_add(frac / DEC_SCALE)?;
        Some((total, frac % DEC_SCALE))
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / DEC_SCALE;
        let frac = self.0 % DEC_SCALE;
        if frac == 0 {
            return write!(f, "{int}");
        }
        let digits = format!("{frac:018}");
        write!(f, "{int}.{}", digits.trim_end_matches('0'))
    }
}

impl fmt::Debug for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Dec {
    type Err = CoinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CoinError::InvalidDec(s.to_string());
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || !all_digits(frac) || frac.len() > DEC_DECIMALS as usize {
            return Err(bad());
        }
        if s.contains('.') && frac.is_empty() {
            return Err(bad());
        }
        let int_val: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| CoinError::Overflow)?
        };
        let frac_val: u128 = if frac.is_empty() {
            0
        } else {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            f * 10u128.pow(DEC_DECIMALS - frac.len() as u32)
        };
        int_val
            .checked_mul(DEC_SCALE)
            .and_then(|v| v.checked_add(frac_val))
            .map(Dec)
            .ok_or(CoinError::Overflow)
    }
}

impl Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <String as Deserialize>::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// A price per block: a [`Dec`] amount of one denomination.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Price {
    pub denom: Denom,
    pub amount: Dec,
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.denom)
    }
}

impl FromStr for Price {
    type Err = CoinError;
    /// Parses `0.25uusd`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| CoinError::InvalidCoin(s.to_string()))?;
        Ok(Price {
            amount: s[..split].parse()?,
            denom: Denom::new(&s[split..])?,
        })
    }
}

/// Serialises `u128` as a decimal string in JSON: JavaScript numbers lose precision past 2^53.
pub mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Str(String),
            Num(u64),
        }
        match Repr::deserialize(d)? {
            Repr::Str(s) => s.parse().map_err(serde::de::Error::custom),
            Repr::Num(n) => Ok(u128::from(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dec_parses_and_prints_fixed_point() {
        for (text, raw) in [
            ("1", DEC_SCALE),
            ("0.5", DEC_SCALE / 2),
            ("12.000000000000000001", 12 * DEC_SCALE + 1),
        ] {
            let d: Dec = text.parse().expect("valid");
            assert_eq!(d.raw(), raw);
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn dec_rejects_malformed_text() {
        for bad in ["", ".", "1.", "-1", "1e5", "0.0000000000000000001", "1.2.3", "abc"] {
            assert!(bad.parse::<Dec>().is_err(), "{bad:?} should be rejected");
        }
        assert_eq!("999999999999999999999999999".parse::<Dec>(), Err(CoinError::Overflow));
    }

    #[test]
    fn accrual_carries_fractions_exactly() {
        // 0.3 per block over 10 blocks, one block at a time, equals 3 exactly.
        let rate: Dec = "0.3".parse().expect("valid");
        let (mut paid, mut carry) = (0u128, 0u128);
        for _ in 0..10 {
            let (units, c) = rate.accrue(1, carry).expect("fits");
            paid += units;
            carry = c;
        }
        assert_eq!((paid, carry), (3, 0));
        assert_eq!(rate.accrue(10, 0), Some((3, 0)));
    }

    #[test]
    fn accrual_reports_overflow_instead_of_wrapping() {
        assert_eq!(Dec(u128::MAX).accrue(u64::MAX, 0), None);
    }

    #[test]
    fn denom_validation() {
        assert!(Denom::new("upzr").is_ok());
        assert!(Denom::new("ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1").is_ok());
        for bad in ["", "u", "1abc", "up zr", "ü", &"x".repeat(129)] {
            assert!(Denom::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn denoms_compare_and_hash_as_their_names() {
        use std::hash::{BuildHasher, RandomState};
        let names = ["upzr", "uusd", "uusdc", "ibc/27", "ibc/270", "uakt", "u-1", "u.1", "zz"];
        let hasher = RandomState::new();
        for a in names {
            for b in names {
                let (da, db) = (Denom::new(a).expect("valid"), Denom::new(b).expect("valid"));
                assert_eq!(da.cmp(&db), a.cmp(b), "{a} vs {b}");
                assert_eq!(da == db, a == b, "{a} vs {b}");
                assert_eq!(da.partial_cmp(&db), Some(a.cmp(b)));
            }
            let (d, copy) = (Denom::new(a).expect("valid"), Denom::new(a).expect("valid"));
            assert_eq!(hasher.hash_one(&d), hasher.hash_one(&copy));
            assert_eq!(hasher.hash_one(&d), hasher.hash_one(a));
        }
    }

    #[test]
    fn denom_encodes_exactly_as_its_name_string() {
        for name in [
            "upzr",
            "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1",
        ] {
            let d = Denom::new(name).expect("valid");
            let as_string = name.to_string();
            assert_eq!(borsh::to_vec(&d).expect("vec"), borsh::to_vec(&as_string).expect("vec"));
            assert_eq!(
                serde_json::to_string(&d).expect("json"),
                serde_json::to_string(&as_string).expect("json")
            );
            let back: Denom = borsh::from_slice(&borsh::to_vec(&as_string).expect("vec")).expect("decodes");
            assert_eq!(back, d);
        }
        assert!(borsh::from_slice::<Denom>(&borsh::to_vec(&"u".to_string()).expect("vec")).is_err());
    }

    /// What decoding a denomination did before names were read onto the stack: a `String`,
    /// then [`Denom::new`]. Returns the result as text and the bytes left unread.
    fn decode_as_string_then_check(bytes: &[u8]) -> (Result<Denom, String>, usize) {
        let mut r = bytes;
        let res = String::deserialize_reader(&mut r)
            .map_err(|e| e.to_string())
            .and_then(|raw| Denom::new(raw).map_err(|e| IoError::new(ErrorKind::InvalidData, e).to_string()));
        (res, r.len())
    }

    fn decode(bytes: &[u8]) -> (Result<Denom, String>, usize) {
        let mut r = bytes;
        let res = Denom::deserialize_reader(&mut r).map_err(|e| e.to_string());
        (res, r.len())
    }

    fn encoded(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn denom_decoding_accepts_and_refuses_exactly_as_string_then_check() {
        let long_valid = "a".repeat(MAX_DENOM_LEN);
        let too_long = "a".repeat(MAX_DENOM_LEN + 1);
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![4, 0],
            encoded(0, b""),
            encoded(1, b"u"),
            encoded(4, b"upzr"),
            encoded(4, b"upzrTRAILING"),
            encoded(4, b"upz"),
            encoded(4, b"up z"),
            encoded(4, b"1abc"),
            encoded(2, &[0xc3, 0x28]),
            encoded(4, &[b'u', 0xff, b'a', b'b']),
            encoded(MAX_DENOM_LEN as u32, long_valid.as_bytes()),
            encoded(MAX_DENOM_LEN as u32 + 1, too_long.as_bytes()),
            encoded(MAX_DENOM_LEN as u32 + 1, b"short"),
            encoded(u32::MAX, b"upzr"),
            encoded(200, &[0xff; 200]),
        ];
        for bytes in cases {
            assert_eq!(decode(&bytes), decode_as_string_then_check(&bytes), "{bytes:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn denom_decoding_matches_string_then_check_on_any_input(
            len in proptest::prop_oneof![0..140u32, proptest::prelude::any::<u32>()],
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..150),
            alnum in "[a-zA-Z][a-zA-Z0-9/:._-]{0,130}",
        ) {
            assert_eq!(decode(&encoded(len, &body)), decode_as_string_then_check(&encoded(len, &body)));
            let named = encoded(alnum.len() as u32, alnum.as_bytes());
            assert_eq!(decode(&named), decode_as_string_then_check(&named));
        }
    }

    #[test]
    fn coin_parses_amount_then_denom() {
        let c: Coin = "1000upzr".parse().expect("valid");
        assert_eq!(c.amount, 1000);
        assert_eq!(c.denom.as_str(), "upzr");
        assert!("upzr".parse::<Coin>().is_err());
        assert!("1000".parse::<Coin>().is_err());
    }
}
