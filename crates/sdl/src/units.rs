//! Quantities as SDL files write them: byte sizes with SI or binary suffixes (`512Mi`, `1Gi`,
//! `10G`, `4GB`, `1.5Gi`) and CPU units (`0.5`, `1`, `500m`). Integer arithmetic only, so the same
//! file gives the same bytes (and the same manifest hash) everywhere.

/// Whether `s` is written as a non-negative decimal (`12`, `1.5`, `.5`).
fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !(s.ends_with('.') || int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// A non-negative decimal as (integer part, fraction digits): `1.25` → (1, "25"); `None` when
/// malformed or when the integer part overflows.
fn split_decimal(s: &str) -> Option<(u128, &str)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.ends_with('.') {
        return None;
    }
    let int = if int.is_empty() { 0 } else { int.parse().ok()? };
    Some((int, frac))
}

/// `value × unit`, truncated to an integer; `None` on a malformed number or overflow.
fn scale(s: &str, unit: u128) -> Option<u128> {
    let (int, frac) = split_decimal(s)?;
    let mut total = int.checked_mul(unit)?;
    // Fraction: Σ digit × unit / 10^k, computed exactly then truncated.
    let frac = &frac[..frac.len().min(30)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let den = 10u128.checked_pow(frac.len() as u32)?;
        total = total.checked_add(digits.checked_mul(unit)? / den)?;
    }
    Some(total)
}

const SUFFIXES: &[(&str, u128)] = &[
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("pib", 1 << 50),
    ("eib", 1 << 60),
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("ti", 1 << 40),
    ("pi", 1 << 50),
    ("ei", 1 << 60),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("eb", 1_000_000_000_000_000_000),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("p", 1_000_000_000_000_000),
    ("e", 1_000_000_000_000_000_000),
    ("b", 1),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a size: write a number with a unit such as 512Mi, 1Gi, 10G or 4GB")]
    BadSize(String),
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("{0:?} is not a CPU amount: write cores (1, 0.5) or millicores (500m)")]
    BadCpu(String),
}

/// Bytes of a size. Suffixes are case-insensitive, as go-humanize (and so Akash) reads them:
/// `Ki`/`KiB` are powers of 1024, `k`/`kB` powers of 1000; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, unit) = SUFFIXES
        .iter()
        .find_map(|(suf, unit)| lower.strip_suffix(suf).map(|n| (n.trim_end(), *unit)))
        .unwrap_or((lower.as_str(), 1));
    if !is_decimal(num) {
        return Err(UnitError::BadSize(s.to_string()));
    }
    let v = scale(num, unit).ok_or_else(|| UnitError::Overflow(s.to_string()))?;
    u64::try_from(v).map_err(|_| UnitError::Overflow(s.to_string()))
}

/// Millicores of a CPU amount: `500m` is 500, `0.5` and `1` are 500 and 1000 (finer fractions
/// are truncated, as Akash does).
pub fn parse_cpu(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let v = if let Some(m) = t.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UnitError::BadCpu(s.to_string()));
        }
        m.parse::<u128>().map_err(|_| UnitError::Overflow(s.to_string()))?
    } else {
        if !is_decimal(t) {
            return Err(UnitError::BadCpu(s.to_string()));
        }
        scale(t, 1000).ok_or_else(|| UnitError::Overflow(s.to_string()))?
    };
    u64::try_from(v).map_err(|_| UnitError::Overflow(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_binary_and_decimal_suffixes_in_any_case() {
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("1gi"), Ok(1 << 30));
        assert_eq!(parse_size("4.75Gi"), Ok(4 * (1 << 30) + 3 * (1 << 28)));
        assert_eq!(parse_size("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_size("6GB"), Ok(6_000_000_000));
        assert_eq!(parse_size("512Mb"), Ok(512_000_000));
        assert_eq!(parse_size("10G"), Ok(10_000_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
    }

    #[test]
    fn bad_and_absurd_sizes_are_errors() {
        assert!(matches!(parse_size("lots"), Err(UnitError::BadSize(_))));
        assert!(matches!(parse_size("-1Gi"), Err(UnitError::BadSize(_))));
        assert!(matches!(parse_size("1.Gi"), Err(UnitError::BadSize(_))));
        assert!(matches!(parse_size("99999999999Ei"), Err(UnitError::Overflow(_))));
        assert!(matches!(
            parse_size("999999999999999999999999999999999999999999"),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn cpu_reads_cores_and_millicores() {
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("1"), Ok(1000));
        assert_eq!(parse_cpu("1.0"), Ok(1000));
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("0.0005"), Ok(0));
        assert!(parse_cpu("1.5m").is_err());
        assert!(parse_cpu("fast").is_err());
    }
}
