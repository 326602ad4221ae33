//! Pseudo-gradient compression with error feedback, and the update blob.
//!
//! A worker's pseudo-gradient `delta` (flat parameters in canonical order) is added to its
//! error-feedback buffer `ef`, `v = delta + ef`, and `v` is compressed by one [`Method`]:
//!
//! - [`Method::Int8`]: blocks of [`BLOCK`] elements, `scale = max|v| / 127` per block, at most
//!   [`MAX_SCALE`] (a zero block, or one whose scale underflows to zero, has scale 0 and
//!   all-zero codes), codes `round_half_even(v / scale)` clamped to `[-127, 127]`.
//! - [`Method::TopK`]: the `k = ceil(n · per_mille / 1000)` entries of largest `|v|`, ties broken
//!   by the lower index, kept as ascending indices and their exact `f32` values.
//! - [`Method::TopKInt8`]: the same `k` entries, their values int8-quantised in blocks of
//!   [`BLOCK`] kept values.
//!
//! What the compression dropped goes back into the buffer, `new_ef = v − decompress(update)`, so
//! nothing is lost over rounds, only delayed. Every step is a plain IEEE operation in a fixed
//! order (no fused multiply-add, no platform maths), so every machine gets the same bits.
//!
//! The blob ([`Update::encode`]) is little-endian:
//!
//! ```text
//! magic "PZUP" | version u8 = 1 | method u8 (1 int8, 2 top-k, 3 top-k int8) | per_mille u16
//! | n u32 | k u32 (values carried: n for int8)
//! int8:        scales f32 × ceil(n/256) | codes i8 × n
//! top-k:       indices (varints) | values f32 × k
//! top-k int8:  indices (varints) | scales f32 × ceil(k/256) | codes i8 × k
//! ```
//!
//! Indices are the first index, then each gap to the previous one, as unsigned LEB128 varints:
//! at 1–3 % density the gaps are mostly under 128, one byte each instead of four (see
//! `varint_indices_are_smaller_than_fixed_width` in the tests). [`Update::decode`] accepts only
//! the canonical form, so `encode(decode(b)) == b` for every accepted `b` and a worker's
//! committed hash names exactly one update.

use sha2::{Digest, Sha256};

/// Elements per int8 quantisation block.
pub const BLOCK: usize = 256;

/// The first four bytes of every update blob.
pub const MAGIC: [u8; 4] = *b"PZUP";

/// The blob format this code writes and reads.
pub const VERSION: u8 = 1;

/// Bytes before the payload: magic, version, method, per_mille, n, k.
pub const HEADER_BYTES: usize = 16;

/// The largest block scale: the largest code's value, `127 × MAX_SCALE`, must be finite, and
/// `f32::MAX / 127` rounds up to a scale whose 127-fold overflows, so this is one step below it.
/// The compressor never writes a larger scale and the decoder refuses one.
pub const MAX_SCALE: f32 = f32::from_bits((f32::MAX / 127.0).to_bits() - 1);

/// The largest code magnitude: codes lie in `[-127, 127]` (so `-128` is refused).
pub const MAX_CODE: i8 = 127;

/// Bytes of one unsigned LEB128 varint of a `u32`, at most.
const MAX_VARINT_BYTES: usize = 5;

const UPDATE_DOMAIN: &[u8] = b"pazar/train/update/v1\0";

const METHOD_INT8: u8 = 1;
const METHOD_TOPK: u8 = 2;
const METHOD_TOPK_INT8: u8 = 3;

/// How a pseudo-gradient is compressed. `per_mille` is the share of entries kept, 1 to 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Every entry, int8 in blocks of [`BLOCK`].
    Int8,
    /// The largest `per_mille`‰ of entries, exact `f32` values.
    TopK {
        /// Entries kept per thousand, 1 to 1000.
        per_mille: u16,
    },
    /// The largest `per_mille`‰ of entries, their values int8 in blocks of [`BLOCK`].
    TopKInt8 {
        /// Entries kept per thousand, 1 to 1000.
        per_mille: u16,
    },
}

impl Method {
    fn code(self) -> u8 {
        match self {
            Method::Int8 => METHOD_INT8,
            Method::TopK { .. } => METHOD_TOPK,
            Method::TopKInt8 { .. } => METHOD_TOPK_INT8,
        }
    }

    /// The `per_mille` field of the blob: 0 for int8.
    fn per_mille(self) -> u16 {
        match self {
            Method::Int8 => 0,
            Method::TopK { per_mille } | Method::TopKInt8 { per_mille } => per_mille,
        }
    }

    /// Values an update of `n` entries carries: `n` for int8, otherwise
    /// `ceil(n · per_mille / 1000)`, at least 1. `None` for a `per_mille` outside 1..=1000.
    pub fn kept(self, n: u32) -> Option<u32> {
        match self {
            Method::Int8 => Some(n),
            Method::TopK { per_mille } | Method::TopKInt8 { per_mille } => {
                if per_mille == 0 || per_mille > 1000 {
                    return None;
                }
                let k = (u64::from(n) * u64::from(per_mille)).div_ceil(1000);
                // k <= n because per_mille <= 1000, so it fits u32.
                Some(u32::try_from(k.max(1)).expect("k <= n fits u32"))
            }
        }
    }
}

/// Why a pseudo-gradient could not be compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    /// `delta` and `ef` differ in length.
    #[error("delta has {delta} entries but the error-feedback buffer has {ef}")]
    LengthMismatch {
        /// Entries in `delta`.
        delta: usize,
        /// Entries in `ef`.
        ef: usize,
    },
    /// Nothing to compress.
    #[error("an update needs at least one entry")]
    Empty,
    /// More entries than a `u32` counts.
    #[error("{n} entries; at most {max} are supported", max = u32::MAX)]
    TooLong {
        /// Entries given.
        n: usize,
    },
    /// `delta + ef` is NaN or infinite at `index`.
    #[error("delta + error feedback is not finite at index {index}")]
    NonFinite {
        /// The first offending index.
        index: usize,
    },
    /// A `per_mille` outside 1..=1000.
    #[error("per_mille {0} is outside 1..=1000")]
    PerMille(u16),
}

/// Why a blob is not an update (or not the update expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The blob is larger than the caller allows.
    #[error("the update is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The caller's limit.
        max: usize,
    },
    /// The blob ends inside `section`.
    #[error("the update ends inside its {section}: {needed} more bytes needed, {have} left")]
    Truncated {
        /// The part being read.
        section: &'static str,
        /// Bytes it needs (at least).
        needed: u64,
        /// Bytes left.
        have: usize,
    },
    /// Bytes after the last section.
    #[error("{count} bytes follow the end of the update")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Not an update blob.
    #[error("the update does not start with the magic bytes PZUP")]
    BadMagic,
    /// A version this code does not read.
    #[error("update format version {0} is not supported (this code reads {VERSION})")]
    UnsupportedVersion(u8),
    /// A method code this code does not know.
    #[error("unknown compression method {0}")]
    UnknownMethod(u8),
    /// A `per_mille` field that does not fit the method (0 for int8, 1..=1000 otherwise).
    #[error("per_mille {per_mille} is invalid for method {method}")]
    BadPerMille {
        /// The method code.
        method: u8,
        /// The field.
        per_mille: u16,
    },
    /// The update is for a different parameter count.
    #[error("the update has {n} entries; {expected} were expected")]
    WrongLength {
        /// The blob's n.
        n: u32,
        /// The caller's n.
        expected: u32,
    },
    /// An update of no entries.
    #[error("an update needs at least one entry")]
    Empty,
    /// More values than entries.
    #[error("k = {k} exceeds n = {n}")]
    KTooLarge {
        /// The blob's k.
        k: u32,
        /// The blob's n.
        n: u32,
    },
    /// k is not what the method and n give.
    #[error("k = {k} but the method keeps {expected} of {n} entries")]
    KMismatch {
        /// The blob's k.
        k: u32,
        /// What `Method::kept(n)` gives.
        expected: u32,
        /// The blob's n.
        n: u32,
    },
    /// A varint longer than five bytes, with a zero final byte, or above `u32::MAX`.
    #[error("index {position} is not a canonical u32 varint")]
    BadVarint {
        /// Which index.
        position: usize,
    },
    /// An index not above the one before it (a zero gap).
    #[error("index {position} does not increase on the one before it")]
    IndexNotAscending {
        /// Which index.
        position: usize,
    },
    /// An index at or past n.
    #[error("index {position} is {index}, at or past n = {n}")]
    IndexOutOfRange {
        /// Which index.
        position: usize,
        /// Its value (saturated at `u32::MAX` when the gaps overflow).
        index: u64,
        /// The blob's n.
        n: u32,
    },
    /// A block scale that is NaN, negative (including `-0.0`) or above [`MAX_SCALE`].
    #[error("scale of block {block} is not a number in [0, {MAX_SCALE:e}] (bits {bits:#010x})")]
    BadScale {
        /// Which block.
        block: usize,
        /// Its bits.
        bits: u32,
    },
    /// A block whose scale is zero but whose codes are not all zero.
    #[error("block {block} has scale 0 but non-zero codes")]
    ZeroScaleNonZeroCode {
        /// Which block.
        block: usize,
    },
    /// A code of -128.
    #[error("code {position} is -128, outside [-127, 127]")]
    CodeOutOfRange {
        /// Which code.
        position: usize,
    },
    /// A top-k value that is NaN or infinite.
    #[error("value {position} is not finite (bits {bits:#010x})")]
    NonFiniteValue {
        /// Which value.
        position: usize,
        /// Its bits.
        bits: u32,
    },
}

/// Why updates could not be averaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AverageError {
    /// No updates given.
    #[error("no updates to average")]
    Empty,
    /// The sum overflowed at `index` (updates of extreme values, none a worker could send
    /// honestly).
    #[error("the sum of the updates overflows at index {index}")]
    NonFinite {
        /// The first entry that overflowed.
        index: usize,
    },
    /// An update of another length.
    #[error("update {position} has {n} entries; {expected} were expected")]
    WrongLength {
        /// Which update.
        position: usize,
        /// Its n.
        n: u32,
        /// The n asked for.
        expected: u32,
    },
}

/// Int8 codes and one scale per block of [`BLOCK`] codes. Code `i` stands for
/// `code[i] as f32 * scale[i / BLOCK]`.
#[derive(Clone, Debug, PartialEq)]
struct Quantised {
    scales: Vec<f32>,
    codes: Vec<i8>,
}

impl Quantised {
    fn new(values: &[f32]) -> Quantised {
        let mut scales = Vec::with_capacity(values.len().div_ceil(BLOCK));
        let mut codes = Vec::with_capacity(values.len());
        for block in values.chunks(BLOCK) {
            // Values are finite (checked by the caller), so the fold sees no NaN.
            let max = block.iter().fold(0.0f32, |m, x| {
                let a = x.abs();
                if a > m {
                    a
                } else {
                    m
                }
            });
            let scale = (max / 127.0).min(MAX_SCALE);
            if scale == 0.0 {
                // A zero block, or one so small its scale underflows: all codes zero, and error
                // feedback keeps the values for a later round.
                scales.push(0.0);
                codes.extend(std::iter::repeat_n(0i8, block.len()));
                continue;
            }
            scales.push(scale);
            for x in block {
                let q = (x / scale).round_ties_even().clamp(-127.0, 127.0);
                // q is an integer in [-127, 127], so the cast is exact.
                codes.push(q as i8);
            }
        }
        Quantised { scales, codes }
    }

    fn value(&self, i: usize) -> f32 {
        f32::from(self.codes[i]) * self.scales[i / BLOCK]
    }

    fn len(&self) -> usize {
        self.codes.len()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Payload {
    Int8(Quantised),
    TopK {
        per_mille: u16,
        indices: Vec<u32>,
        values: Vec<f32>,
    },
    TopKInt8 {
        per_mille: u16,
        indices: Vec<u32>,
        values: Quantised,
    },
}

/// A compressed pseudo-gradient of `n` entries. Built only by [`compress`] or a successful
/// [`Update::decode`], so its invariants hold: `n ≥ 1`, indices strictly ascending and below
/// `n`, `k` matching the method, scales finite and non-negative, values finite, codes in
/// `[-127, 127]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    n: u32,
    payload: Payload,
}

/// The update of `delta` with error-feedback buffer `ef` (zeros for a new worker), and the new
/// buffer `v − decompress(update)` where `v = delta + ef`.
pub fn compress(method: Method, delta: &[f32], ef: &[f32]) -> Result<(Update, Vec<f32>), CompressError> {
    if delta.len() != ef.len() {
        return Err(CompressError::LengthMismatch {
            delta: delta.len(),
            ef: ef.len(),
        });
    }
    if delta.is_empty() {
        return Err(CompressError::Empty);
    }
    let n = u32::try_from(delta.len()).map_err(|_| CompressError::TooLong { n: delta.len() })?;
    let k = method.kept(n).ok_or(CompressError::PerMille(method.per_mille()))?;
    let v: Vec<f32> = delta.iter().zip(ef).map(|(d, e)| d + e).collect();
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(CompressError::NonFinite { index });
    }
    let payload = match method {
        Method::Int8 => Payload::Int8(Quantised::new(&v)),
        Method::TopK { per_mille } => {
            let indices = top_k(&v, k as usize);
            let values = indices.iter().map(|&i| v[i as usize]).collect();
            Payload::TopK {
                per_mille,
                indices,
                values,
            }
        }
        Method::TopKInt8 { per_mille } => {
            let indices = top_k(&v, k as usize);
            let kept: Vec<f32> = indices.iter().map(|&i| v[i as usize]).collect();
            Payload::TopKInt8 {
                per_mille,
                indices,
                values: Quantised::new(&kept),
            }
        }
    };
    let update = Update { n, payload };
    let mut new_ef = v;
    update.for_each_value(|i, x| new_ef[i] -= x);
    debug_assert!(new_ef.iter().all(|x| x.is_finite()));
    Ok((update, new_ef))
}

/// The indices of the `k` entries of largest magnitude, ascending. The order "larger `|v|`
/// first, then lower index" is total, so the set chosen is unique. `v` is finite, so the bits of
/// `|v|` order as the values do.
fn top_k(v: &[f32], k: usize) -> Vec<u32> {
    debug_assert!(k >= 1 && k <= v.len());
    let mut order: Vec<u32> = (0..v.len())
        .map(|i| u32::try_from(i).expect("n is checked to fit u32"))
        .collect();
    let key = |i: &u32| (std::cmp::Reverse(v[*i as usize].abs().to_bits()), *i);
    if k < order.len() {
        order.select_nth_unstable_by_key(k - 1, key);
        order.truncate(k);
    }
    order.sort_unstable();
    order
}

impl Update {
    /// Entries in the dense vector this update stands for.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// Values carried: `n` for int8, the kept entries for top-k.
    pub fn k(&self) -> u32 {
        let k = match &self.payload {
            Payload::Int8(q) => q.len(),
            Payload::TopK { values, .. } => values.len(),
            Payload::TopKInt8 { values, .. } => values.len(),
        };
        u32::try_from(k).expect("k <= n fits u32")
    }

    /// The method that produced this update.
    pub fn method(&self) -> Method {
        match &self.payload {
            Payload::Int8(_) => Method::Int8,
            Payload::TopK { per_mille, .. } => Method::TopK { per_mille: *per_mille },
            Payload::TopKInt8 { per_mille, .. } => Method::TopKInt8 { per_mille: *per_mille },
        }
    }

    /// The kept indices, ascending (empty for int8, which keeps every index).
    pub fn indices(&self) -> &[u32] {
        match &self.payload {
            Payload::Int8(_) => &[],
            Payload::TopK { indices, .. } | Payload::TopKInt8 { indices, .. } => indices,
        }
    }

    /// Calls `f(index, value)` for every entry the update carries, in ascending index order.
    fn for_each_value(&self, mut f: impl FnMut(usize, f32)) {
        match &self.payload {
            Payload::Int8(q) => (0..q.len()).for_each(|i| f(i, q.value(i))),
            Payload::TopK { indices, values, .. } => indices.iter().zip(values).for_each(|(&i, &x)| f(i as usize, x)),
            Payload::TopKInt8 { indices, values, .. } => indices
                .iter()
                .enumerate()
                .for_each(|(j, &i)| f(i as usize, values.value(j))),
        }
    }

    /// The dense vector: `n` entries, `+0.0` where top-k kept nothing.
    pub fn decompress(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.n as usize];
        self.for_each_value(|i, x| out[i] = x);
        out
    }

    /// The canonical blob (see the module's documentation for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let method = self.method();
        let mut out = Vec::with_capacity(HEADER_BYTES + self.k() as usize * 5);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(method.code());
        out.extend_from_slice(&method.per_mille().to_le_bytes());
        out.extend_from_slice(&self.n.to_le_bytes());
        out.extend_from_slice(&self.k().to_le_bytes());
        let put_quantised = |out: &mut Vec<u8>, q: &Quantised| {
            for s in &q.scales {
                out.extend_from_slice(&s.to_bits().to_le_bytes());
            }
            out.extend(q.codes.iter().map(|&c| c.to_le_bytes()[0]));
        };
        match &self.payload {
            Payload::Int8(q) => put_quantised(&mut out, q),
            Payload::TopK { indices, values, .. } => {
                put_indices(&mut out, indices);
                for x in values {
                    out.extend_from_slice(&x.to_bits().to_le_bytes());
                }
            }
            Payload::TopKInt8 { indices, values, .. } => {
                put_indices(&mut out, indices);
                put_quantised(&mut out, values);
            }
        }
        out
    }

    /// Parses a blob, strictly: at most `max_bytes` long, for exactly `expected_n` entries, in
    /// the canonical form [`Update::encode`] writes, every field checked. Nothing is allocated
    /// beyond what the blob's own length pays for.
    pub fn decode(bytes: &[u8], expected_n: u32, max_bytes: usize) -> Result<Update, UpdateError> {
        if bytes.len() > max_bytes {
            return Err(UpdateError::TooLarge {
                len: bytes.len(),
                max: max_bytes,
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        let header = r.take(HEADER_BYTES, "header")?;
        if header[0..4] != MAGIC {
            return Err(UpdateError::BadMagic);
        }
        if header[4] != VERSION {
            return Err(UpdateError::UnsupportedVersion(header[4]));
        }
        let code = header[5];
        let per_mille = u16::from_le_bytes([header[6], header[7]]);
        let n = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let k = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let method = match code {
            METHOD_INT8 => Method::Int8,
            METHOD_TOPK => Method::TopK { per_mille },
            METHOD_TOPK_INT8 => Method::TopKInt8 { per_mille },
            other => return Err(UpdateError::UnknownMethod(other)),
        };
        let per_mille_ok = match method {
            Method::Int8 => per_mille == 0,
            Method::TopK { .. } | Method::TopKInt8 { .. } => (1..=1000).contains(&per_mille),
        };
        if !per_mille_ok {
            return Err(UpdateError::BadPerMille {
                method: code,
                per_mille,
            });
        }
        if n != expected_n {
            return Err(UpdateError::WrongLength {
                n,
                expected: expected_n,
            });
        }
        if n == 0 {
            return Err(UpdateError::Empty);
        }
        if k > n {
            return Err(UpdateError::KTooLarge { k, n });
        }
        let expected_k = method.kept(n).expect("per_mille was checked above");
        if k != expected_k {
            return Err(UpdateError::KMismatch {
                k,
                expected: expected_k,
                n,
            });
        }
        let k_len = k as usize;
        let payload = match method {
            Method::Int8 => Payload::Int8(r.quantised(k_len)?),
            Method::TopK { per_mille } => {
                // Every varint is at least one byte and every value four: refuse a short blob
                // before allocating for k.
                r.need(u64::from(k) * 5, "indices and values")?;
                let indices = r.indices(k_len, n)?;
                let raw = r.take(4 * k_len, "values")?;
                let mut values = Vec::with_capacity(k_len);
                for (position, b) in raw.chunks_exact(4).enumerate() {
                    let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let x = f32::from_bits(bits);
                    if !x.is_finite() {
                        return Err(UpdateError::NonFiniteValue { position, bits });
                    }
                    values.push(x);
                }
                Payload::TopK {
                    per_mille,
                    indices,
                    values,
                }
            }
            Method::TopKInt8 { per_mille } => {
                r.need(u64::from(k) * 2, "indices and codes")?;
                let indices = r.indices(k_len, n)?;
                Payload::TopKInt8 {
                    per_mille,
                    indices,
                    values: r.quantised(k_len)?,
                }
            }
        };
        let left = bytes.len() - r.pos;
        if left != 0 {
            return Err(UpdateError::TrailingBytes { count: left });
        }
        Ok(Update { n, payload })
    }
}

/// Writes strictly ascending indices as the first index and then the gaps, LEB128.
fn put_indices(out: &mut Vec<u8>, indices: &[u32]) {
    let mut prev = None;
    for &i in indices {
        let gap = match prev {
            None => i,
            Some(p) => i - p,
        };
        put_varint(out, gap);
        prev = Some(i);
    }
}

fn put_varint(out: &mut Vec<u8>, mut x: u32) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// A cursor over a blob that never reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Fails unless at least `needed` bytes are left.
    fn need(&self, needed: u64, section: &'static str) -> Result<(), UpdateError> {
        if needed > self.left() as u64 {
            return Err(UpdateError::Truncated {
                section,
                needed,
                have: self.left(),
            });
        }
        Ok(())
    }

    fn take(&mut self, len: usize, section: &'static str) -> Result<&'a [u8], UpdateError> {
        self.need(len as u64, section)?;
        let s = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    /// One canonical unsigned LEB128 `u32`: at most five bytes, no redundant zero final byte.
    fn varint(&mut self, position: usize) -> Result<u32, UpdateError> {
        let mut x: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let b = self.take(1, "indices")?[0];
            x |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(UpdateError::BadVarint { position });
                }
                return u32::try_from(x).map_err(|_| UpdateError::BadVarint { position });
            }
        }
        Err(UpdateError::BadVarint { position })
    }

    /// `k` strictly ascending indices below `n`.
    fn indices(&mut self, k: usize, n: u32) -> Result<Vec<u32>, UpdateError> {
        let mut indices = Vec::with_capacity(k);
        let mut prev: Option<u32> = None;
        for position in 0..k {
            let gap = self.varint(position)?;
            let index = match prev {
                None => u64::from(gap),
                Some(_) if gap == 0 => return Err(UpdateError::IndexNotAscending { position }),
                Some(p) => u64::from(p) + u64::from(gap),
            };
            if index >= u64::from(n) {
                return Err(UpdateError::IndexOutOfRange { position, index, n });
            }
            // index < n <= u32::MAX.
            let index = index as u32;
            indices.push(index);
            prev = Some(index);
        }
        Ok(indices)
    }

    /// `ceil(k / BLOCK)` scales then `k` codes, checked.
    fn quantised(&mut self, k: usize) -> Result<Quantised, UpdateError> {
        let blocks = k.div_ceil(BLOCK);
        self.need(4 * blocks as u64 + k as u64, "scales and codes")?;
        let raw_scales = self.take(4 * blocks, "scales")?;
        let mut scales = Vec::with_capacity(blocks);
        for (block, b) in raw_scales.chunks_exact(4).enumerate() {
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let s = f32::from_bits(bits);
            // The sign check also refuses -0.0.
            if s.is_nan() || s > MAX_SCALE || s.is_sign_negative() {
                return Err(UpdateError::BadScale { block, bits });
            }
            scales.push(s);
        }
        let raw_codes = self.take(k, "codes")?;
        let mut codes = Vec::with_capacity(k);
        for (position, &b) in raw_codes.iter().enumerate() {
            let c = i8::from_le_bytes([b]);
            if c < -MAX_CODE {
                return Err(UpdateError::CodeOutOfRange { position });
            }
            if c != 0 && scales[position / BLOCK] == 0.0 {
                return Err(UpdateError::ZeroScaleNonZeroCode {
                    block: position / BLOCK,
                });
            }
            codes.push(c);
        }
        Ok(Quantised { scales, codes })
    }
}

/// The update's identity, committed on the ledger: `sha256("pazar/train/update/v1\0" ‖ bytes)`.
pub fn update_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(UPDATE_DOMAIN)
        .chain_update(bytes)
        .finalize()
        .into()
}

/// The mean of `updates` as a dense vector of `n`: entry by entry, the decompressed values are
/// summed in the order given (starting from `+0.0`), then multiplied by `1 / len` computed in
/// `f32`; a sum that overflows is refused. The same bits as summing the [`Update::decompress`] vectors, without building them:
/// an entry an update does not carry is `+0.0`, and adding `+0.0` to a sum that started at
/// `+0.0` never changes it (such a sum is never `-0.0` under round-to-nearest).
pub fn average(updates: &[Update], n: u32) -> Result<Vec<f32>, AverageError> {
    if updates.is_empty() {
        return Err(AverageError::Empty);
    }
    if let Some((position, u)) = updates.iter().enumerate().find(|(_, u)| u.n != n) {
        return Err(AverageError::WrongLength {
            position,
            n: u.n,
            expected: n,
        });
    }
    let mut sum = vec![0.0f32; n as usize];
    for u in updates {
        u.for_each_value(|i, x| sum[i] += x);
    }
    if let Some(index) = sum.iter().position(|x| !x.is_finite()) {
        return Err(AverageError::NonFinite { index });
    }
    // A count of updates is far below 2^24, so it is exact in f32.
    let inv = 1.0f32 / updates.len() as f32;
    for x in &mut sum {
        *x *= inv;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_rounds_up_and_keeps_at_least_one() {
        let m = |per_mille| Method::TopK { per_mille };
        assert_eq!(m(10).kept(250_000), Some(2500));
        assert_eq!(m(30).kept(250_001), Some(7501));
        assert_eq!(m(1).kept(10), Some(1));
        assert_eq!(m(1000).kept(7), Some(7));
        assert_eq!(m(0).kept(7), None);
        assert_eq!(m(1001).kept(7), None);
        assert_eq!(Method::Int8.kept(9), Some(9));
    }

    #[test]
    fn quantisation_rounds_half_to_even_and_scales_by_max_over_127() {
        // max = 127 gives scale 1, so codes are the values rounded half to even.
        let q = Quantised::new(&[127.0, 0.5, 1.5, 2.5, -2.5, -0.4]);
        assert_eq!(q.scales, vec![1.0]);
        assert_eq!(q.codes, vec![127, 0, 2, 2, -2, 0]);
    }

    #[test]
    fn the_largest_scale_keeps_the_largest_code_finite() {
        assert!((127.0 * MAX_SCALE).is_finite());
        assert!((-127.0 * MAX_SCALE).is_finite());
        // One step up is what f32::MAX / 127 rounds to, and it overflows.
        let above = f32::from_bits(MAX_SCALE.to_bits() + 1);
        assert_eq!(above, f32::MAX / 127.0);
        assert!(!(127.0 * above).is_finite());
        let q = Quantised::new(&[f32::MAX, -f32::MAX, 1.0]);
        assert_eq!(q.scales, vec![MAX_SCALE]);
        assert_eq!(q.codes, vec![127, -127, 0]);
    }

    #[test]
    fn a_zero_block_has_scale_zero_and_zero_codes() {
        let mut v = vec![0.0f32; BLOCK];
        v.push(3.0);
        let q = Quantised::new(&v);
        assert_eq!(q.scales, vec![0.0, 3.0 / 127.0]);
        assert!(q.codes[..BLOCK].iter().all(|&c| c == 0));
        assert_eq!(q.codes[BLOCK], 127);
    }

    #[test]
    fn a_block_whose_scale_underflows_is_all_zero() {
        let tiny = f32::from_bits(1); // the smallest subnormal
        let q = Quantised::new(&[tiny, -tiny]);
        assert_eq!(q.scales, vec![0.0]);
        assert_eq!(q.codes, vec![0, 0]);
    }

    #[test]
    fn top_k_breaks_ties_by_the_lower_index() {
        let v = [1.0, -3.0, 3.0, 2.0, -3.0, 0.0];
        assert_eq!(top_k(&v, 1), vec![1]);
        assert_eq!(top_k(&v, 2), vec![1, 2]);
        assert_eq!(top_k(&v, 3), vec![1, 2, 4]);
        assert_eq!(top_k(&v, 6), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn varints_are_leb128() {
        let mut out = Vec::new();
        put_varint(&mut out, 0);
        put_varint(&mut out, 127);
        put_varint(&mut out, 128);
        put_varint(&mut out, u32::MAX);
        assert_eq!(out, vec![0x00, 0x7f, 0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        let mut r = Reader { bytes: &out, pos: 0 };
        for e in [0, 127, 128, u32::MAX] {
            assert_eq!(r.varint(0), Ok(e));
        }
    }

    #[test]
    fn overlong_and_oversized_varints_are_refused() {
        for bad in [
            &[0x80u8, 0x00][..],
            &[0xff, 0xff, 0xff, 0xff, 0x1f],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ] {
            let mut r = Reader { bytes: bad, pos: 0 };
            assert_eq!(r.varint(3), Err(UpdateError::BadVarint { position: 3 }));
        }
    }
}
