//! The model as a GGUF v3 file in llama.cpp's `llama` layout, so that llama.cpp (and the tools
//! built on it: Ollama, LM Studio) load a checkpoint that left the network.
//!
//! **Weights.** [`write`] writes every tensor as `F32`, the parameters' own bits; [`write_as`]
//! can store the matrices and the embedding as `F16` or `Q8_0` instead ([`TensorType`]).
//! Training keeps its matrices row-major `[in×out]` (`y = x·W`); ggml multiplies by a weight
//! whose innermost dimension (`ne[0]`) is the input, i.e. row-major `[out×in]`, so every
//! matrix, the output head included, is written transposed. The token embedding `[vocab×dim]` is already one row
//! per token and is written as it is. Rotary embeddings need no permutation: training rotates
//! adjacent pairs `(2i, 2i+1)` of each head with angle `t·10000^(-2i/head_dim)`, which is
//! ggml's "normal" rope, the one llama.cpp uses for the `llama` architecture (the permutation
//! in llama.cpp's `convert_hf_to_gguf.py` undoes Hugging Face's half-split rotary, which we do
//! not have).
//!
//! **Tokenizer.** Our tokens are bytes (`token = byte`). The file describes a SentencePiece
//! vocabulary (`tokenizer.ggml.model = "llama"`) of the 256 byte pieces `<0x00>`..`<0xFF>`
//! (type `BYTE`), no merges, no BOS/EOS added and no space prefix: llama.cpp's SentencePiece
//! tokenizer finds no multi-byte piece and falls back to one byte token per byte, and decodes a
//! byte token to its byte. The exception is the space: llama.cpp's SentencePiece tokenizer
//! always rewrites a space as `▁` (U+2581, bytes `E2 96 81`) before looking pieces up, so token
//! 32 is the `NORMAL` piece `▁` (which decodes back to a space) rather than `<0x20>`. Every
//! valid UTF-8 text round-trips exactly except one holding `▁` itself, which tokenizes to token
//! 32 (a space); so does every byte string except that one, and except where a space follows
//! within three bytes an incomplete UTF-8 sequence whose lead byte swallows part of the `▁`
//! into one unknown character (`C3 20` gives tokens `C3 E2 96 81`). Both cases are pinned in
//! `tests/gguf.rs`. llama.cpp insists on BOS, EOS and UNK ids inside the vocabulary; they
//! are written as SentencePiece's usual 1, 2 and 0, i.e. the control bytes `0x01`, `0x02` and
//! `0x00`, which are never added to a prompt (`add_bos_token = false`), and a run stops if the
//! model ever generates byte `0x02`. A vocabulary larger than 256 gets `UNUSED` pieces
//! `<unused0>`.. for the ids no byte produces; one smaller than 256 cannot hold every byte and
//! is refused.

use std::io::Write;

use pazar_types::train::ModelSpec;

/// The GGUF version written.
pub const VERSION: u32 = 3;
/// Alignment of the tensor data section and of every tensor in it (ggml's default, written
/// explicitly as `general.alignment`).
pub const ALIGNMENT: u64 = 32;
/// RMSNorm's epsilon in training (`pazar_train::model::NORM_EPS`).
pub const NORM_EPS: f32 = 1e-5;
/// The rotary base in training (`pazar_train::model::ROPE_BASE`).
pub const ROPE_BASE: f32 = 10_000.0;
/// Byte tokens: every byte is one token, so a vocabulary needs at least this many entries.
pub const BYTE_TOKENS: u32 = 256;
/// Longest model name written as `general.name`.
pub const MAX_NAME_BYTES: usize = 256;

const MAGIC: &[u8; 4] = b"GGUF";

/// GGUF metadata value types (`enum gguf_type`).
mod ty {
    pub const UINT32: u32 = 4;
    pub const INT32: u32 = 5;
    pub const FLOAT32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
}

/// ggml's quantization format version (`GGML_QNT_VERSION`), written for quantized files.
const QUANTIZATION_VERSION: u32 = 2;

/// SentencePiece token types (`enum llama_token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The piece of the space token (see the module documentation).
const SPACE_PIECE: &str = "\u{2581}";

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("model spec: {0}")]
    Spec(String),
    #[error("parameters: the spec has {expected} parameters, got {got}")]
    Params { expected: u64, got: usize },
    #[error("model name: {0}")]
    Name(String),
    #[error("writing the GGUF file: {0}")]
    Io(#[from] std::io::Error),
}

/// How the weight matrices and the token embedding are stored. Norm weights are always `F32`
/// (as llama.cpp's own converter keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// The parameters' own bits: llama.cpp computes what training computes, up to summation
    /// order.
    F32,
    /// IEEE half precision, rounded to nearest even (values past ±65504 become ±∞).
    F16,
    /// ggml's `Q8_0`: blocks of 32 values sharing one `F16` scale `max|x|/127`, each value
    /// `round(x/scale)` in 8 bits, 34 bytes a block. A tensor whose rows (its input size) are
    /// not a multiple of 32 is written `F16` instead, as llama.cpp's quantizer does.
    Q8_0,
}

impl TensorType {
    /// ggml's type id (`enum ggml_type`).
    fn ggml(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
        }
    }

    /// `general.file_type` (`enum llama_ftype`).
    fn file_type(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 7,
        }
    }

    /// Bytes of one row of `n` values.
    fn row_bytes(self, n: usize) -> u64 {
        let n = n as u64;
        match self {
            TensorType::F32 => 4 * n,
            TensorType::F16 => 2 * n,
            TensorType::Q8_0 => n / Q8_0_BLOCK as u64 * Q8_0_BLOCK_BYTES,
        }
    }
}

/// Values per `Q8_0` block.
const Q8_0_BLOCK: usize = 32;
/// Bytes per `Q8_0` block: an `F16` scale and 32 signed bytes.
const Q8_0_BLOCK_BYTES: u64 = 34;

/// Writes the model of shape `spec` with the flat parameters `params` (training's layout) as a
/// GGUF v3 file of the `llama` architecture, named `name` (`general.name`), to `out`, every
/// tensor `F32`. Same as [`write_as`] with [`TensorType::F32`].
pub fn write(spec: &ModelSpec, params: &[f32], name: &str, out: &mut impl Write) -> Result<(), GgufError> {
    write_as(spec, params, name, TensorType::F32, out)
}

/// Writes the model of shape `spec` with the flat parameters `params` (training's layout) as a
/// GGUF v3 file of the `llama` architecture, named `name` (`general.name`), to `out`, the
/// matrices and the embedding stored as `ty`.
///
/// Tensors, in this order: `token_embd`; per block `blk.N.attn_norm`, `attn_q`, `attn_k`,
/// `attn_v`, `attn_output`, `ffn_norm`, `ffn_gate`, `ffn_up`, `ffn_down`; then `output_norm`
/// and `output`. The file is written front to back (header, metadata, tensor infos, data) with
/// no seek, so `out` may be a pipe: 4, 2 or 1.0625 bytes per parameter, each tensor padded to
/// [`ALIGNMENT`], after a few kilobytes of header. Pass a buffered writer.
///
/// Errors: a spec outside [`ModelSpec::validate`]'s bounds, an odd head size (rotary pairs), a
/// vocabulary under [`BYTE_TOKENS`]; `params` not `spec.params()` long; an empty name, or one
/// over [`MAX_NAME_BYTES`] or with control characters; and the writer's own errors. Nothing is
/// written before the inputs are checked.
pub fn write_as(
    spec: &ModelSpec,
    params: &[f32],
    name: &str,
    ty: TensorType,
    out: &mut impl Write,
) -> Result<(), GgufError> {
    check(spec, params, name)?;
    let shape = Shape::new(spec);
    let tensors = shape.tensors(ty);

    let mut head = Vec::new();
    head.extend_from_slice(MAGIC);
    put_u32(&mut head, VERSION);
    put_u64(&mut head, tensors.len() as u64);
    let meta = metadata(spec, &shape, name, ty);
    put_u64(&mut head, meta.count);
    head.extend_from_slice(&meta.bytes);

    let mut offset = 0u64;
    for t in &tensors {
        put_str(&mut head, &t.name);
        put_u32(&mut head, t.ne.len() as u32);
        for &n in &t.ne {
            put_u64(&mut head, n as u64);
        }
        put_u32(&mut head, t.ty.ggml());
        put_u64(&mut head, offset);
        offset += padded(t.bytes());
    }
    pad(&mut head);
    out.write_all(&head)?;

    let mut row = Vec::new();
    let mut bytes = Vec::new();
    for t in &tensors {
        let src = &params[t.at..t.at + t.len()];
        let width = t.ne[0];
        match t.order {
            Order::AsIs => {
                for r in src.chunks_exact(width) {
                    bytes.clear();
                    encode(t.ty, r, &mut bytes);
                    out.write_all(&bytes)?;
                }
            }
            Order::Transposed { rows, cols } => {
                // Source `[rows×cols]`, written as `cols` rows of `rows` values.
                for c in 0..cols {
                    row.clear();
                    row.extend((0..rows).map(|r| src[r * cols + c]));
                    bytes.clear();
                    encode(t.ty, &row, &mut bytes);
                    out.write_all(&bytes)?;
                }
            }
        }
        let rest = padded(t.bytes()) - t.bytes();
        out.write_all(&[0u8; ALIGNMENT as usize][..rest as usize])?;
    }
    Ok(())
}

/// Appends one row of values stored as `ty`.
fn encode(ty: TensorType, row: &[f32], out: &mut Vec<u8>) {
    match ty {
        TensorType::F32 => out.extend(row.iter().flat_map(|x| x.to_le_bytes())),
        TensorType::F16 => out.extend(row.iter().flat_map(|&x| f16_bits(x).to_le_bytes())),
        TensorType::Q8_0 => {
            debug_assert_eq!(row.len() % Q8_0_BLOCK, 0);
            for block in row.chunks_exact(Q8_0_BLOCK) {
                // ggml's reference quantizer (`quantize_row_q8_0_ref`): the scale from the
                // block's largest magnitude, each value rounded half away from zero.
                let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16_bits(d).to_le_bytes());
                out.extend(block.iter().map(|&x| ((x * id).round() as i8) as u8));
            }
        }
    }
}

/// The IEEE half-precision bits of `x`, rounded to nearest even; overflow gives ±∞, NaN stays
/// NaN.
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x007f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x0200 } else { 0 };
    }
    // The exponent re-biased for half precision (bias 15 instead of 127).
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |v: u32, shift: u32| -> u32 {
        let half = 1u32 << (shift - 1);
        let rest = v & ((1u32 << shift) - 1);
        let r = v >> shift;
        if rest > half || (rest == half && r & 1 == 1) {
            r + 1
        } else {
            r
        }
    };
    if e <= 0 {
        // A subnormal half (or zero): the value is `m · 2^(exp−150)`, a half subnormal counts
        // units of 2^−24, so the count is `m >> (126 − exp)` = `m >> (14 − e)`.
        if e < -10 {
            return sign;
        }
        let m = man | 0x0080_0000;
        return sign | round(m, (14 - e) as u32) as u16;
    }
    // A carry out of the mantissa moves into the exponent, up to ∞: both are right.
    sign | round(((e as u32) << 23) | man, 13) as u16
}

fn check(spec: &ModelSpec, params: &[f32], name: &str) -> Result<(), GgufError> {
    spec.validate("spec").map_err(|e| GgufError::Spec(e.to_string()))?;
    let head_dim = spec.dim / u32::from(spec.heads);
    if head_dim % 2 != 0 {
        return Err(GgufError::Spec(format!(
            "head size {head_dim} (dim {} / heads {}) is odd; rotary embeddings rotate pairs",
            spec.dim, spec.heads
        )));
    }
    if spec.vocab < BYTE_TOKENS {
        return Err(GgufError::Spec(format!(
            "vocab {} is under {BYTE_TOKENS}: the byte tokenizer needs a token for every byte",
            spec.vocab
        )));
    }
    if params.len() as u64 != spec.params() {
        return Err(GgufError::Params {
            expected: spec.params(),
            got: params.len(),
        });
    }
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(GgufError::Name(format!(
            "must be 1..={MAX_NAME_BYTES} bytes without control characters, got {name:?}"
        )));
    }
    Ok(())
}

/// The sizes, as `usize` (bounded by [`ModelSpec::validate`]).
struct Shape {
    vocab: usize,
    dim: usize,
    layers: usize,
    ffn: usize,
}

impl Shape {
    fn new(spec: &ModelSpec) -> Shape {
        Shape {
            vocab: spec.vocab as usize,
            dim: spec.dim as usize,
            layers: usize::from(spec.layers),
            ffn: spec.ffn_dim as usize,
        }
    }

    /// Every tensor with its place in training's flat layout: embedding; per block attention
    /// norm, `wq`, `wk`, `wv`, `wo`, FFN norm, `w1` (gate), `w3` (up), `w2` (down); final norm;
    /// output head.
    fn tensors(&self, ty: TensorType) -> Vec<Tensor> {
        let (v, d, f) = (self.vocab, self.dim, self.ffn);
        let mut at = 0usize;
        let mut out = Vec::with_capacity(3 + 9 * self.layers);
        let mut push = |name: String, ne: Vec<usize>, order: Order| {
            // Norms stay F32; a matrix whose rows do not fill Q8_0 blocks falls back to F16.
            let ty = match ty {
                _ if ne.len() == 1 => TensorType::F32,
                TensorType::Q8_0 if ne[0] % Q8_0_BLOCK != 0 => TensorType::F16,
                ty => ty,
            };
            let t = Tensor {
                name,
                ne,
                ty,
                order,
                at,
            };
            at += t.len();
            out.push(t);
        };
        // The embedding `[vocab×dim]` is already one row of `dim` per token: ne = [dim, vocab].
        push("token_embd.weight".into(), vec![d, v], Order::AsIs);
        let matrix = |rows: usize, cols: usize| (vec![rows, cols], Order::Transposed { rows, cols });
        for i in 0..self.layers {
            push(format!("blk.{i}.attn_norm.weight"), vec![d], Order::AsIs);
            for part in ["attn_q", "attn_k", "attn_v", "attn_output"] {
                let (ne, order) = matrix(d, d);
                push(format!("blk.{i}.{part}.weight"), ne, order);
            }
            push(format!("blk.{i}.ffn_norm.weight"), vec![d], Order::AsIs);
            for part in ["ffn_gate", "ffn_up"] {
                let (ne, order) = matrix(d, f);
                push(format!("blk.{i}.{part}.weight"), ne, order);
            }
            let (ne, order) = matrix(f, d);
            push(format!("blk.{i}.ffn_down.weight"), ne, order);
        }
        push("output_norm.weight".into(), vec![d], Order::AsIs);
        let (ne, order) = matrix(d, v);
        push("output.weight".into(), ne, order);
        debug_assert_eq!(at as u64, self.param_count());
        out
    }

    fn param_count(&self) -> u64 {
        let (v, d, f, l) = (self.vocab as u64, self.dim as u64, self.ffn as u64, self.layers as u64);
        2 * v * d + l * (4 * d * d + 3 * d * f + 2 * d) + d
    }
}

/// How a tensor's values are read from the flat parameters.
#[derive(Debug, Clone, Copy)]
enum Order {
    AsIs,
    /// A training matrix `[rows×cols]` (`[in×out]`), written as `cols` rows of `rows`.
    Transposed {
        rows: usize,
        cols: usize,
    },
}

struct Tensor {
    name: String,
    /// ggml's dimensions, innermost first.
    ne: Vec<usize>,
    ty: TensorType,
    order: Order,
    /// Offset in the flat parameter vector.
    at: usize,
}

impl Tensor {
    fn len(&self) -> usize {
        self.ne.iter().product()
    }

    fn bytes(&self) -> u64 {
        self.ty.row_bytes(self.ne[0]) * (self.len() / self.ne[0]) as u64
    }
}

struct Metadata {
    count: u64,
    bytes: Vec<u8>,
}

impl Metadata {
    fn key(&mut self, key: &str, ty: u32) -> &mut Vec<u8> {
        self.count += 1;
        put_str(&mut self.bytes, key);
        put_u32(&mut self.bytes, ty);
        &mut self.bytes
    }

    fn u32(&mut self, key: &str, v: u32) {
        put_u32(self.key(key, ty::UINT32), v);
    }

    fn f32(&mut self, key: &str, v: f32) {
        self.key(key, ty::FLOAT32).extend_from_slice(&v.to_le_bytes());
    }

    fn bool(&mut self, key: &str, v: bool) {
        self.key(key, ty::BOOL).push(u8::from(v));
    }

    fn str(&mut self, key: &str, v: &str) {
        put_str(self.key(key, ty::STRING), v);
    }

    fn array(&mut self, key: &str, elem: u32, n: usize) -> &mut Vec<u8> {
        let b = self.key(key, ty::ARRAY);
        put_u32(b, elem);
        put_u64(b, n as u64);
        b
    }
}

fn metadata(spec: &ModelSpec, shape: &Shape, name: &str, ty: TensorType) -> Metadata {
    let mut m = Metadata {
        count: 0,
        bytes: Vec::new(),
    };
    let head_dim = spec.dim / u32::from(spec.heads);
    m.str("general.architecture", "llama");
    m.str("general.name", name);
    m.u32("general.alignment", ALIGNMENT as u32);
    m.u32("general.file_type", ty.file_type());
    if ty == TensorType::Q8_0 {
        m.u32("general.quantization_version", QUANTIZATION_VERSION);
    }
    m.u32("llama.vocab_size", spec.vocab);
    m.u32("llama.context_length", spec.seq_len);
    m.u32("llama.embedding_length", spec.dim);
    m.u32("llama.block_count", u32::from(spec.layers));
    m.u32("llama.feed_forward_length", spec.ffn_dim);
    m.u32("llama.attention.head_count", u32::from(spec.heads));
    m.u32("llama.attention.head_count_kv", u32::from(spec.heads));
    m.f32("llama.attention.layer_norm_rms_epsilon", NORM_EPS);
    m.f32("llama.rope.freq_base", ROPE_BASE);
    m.u32("llama.rope.dimension_count", head_dim);

    m.str("tokenizer.ggml.model", "llama");
    let pieces = token_pieces(shape.vocab);
    let b = m.array("tokenizer.ggml.tokens", ty::STRING, pieces.len());
    for (p, _) in &pieces {
        put_str(b, p);
    }
    // No merges: every score is 0.
    let b = m.array("tokenizer.ggml.scores", ty::FLOAT32, pieces.len());
    b.extend(pieces.iter().flat_map(|_| 0f32.to_le_bytes()));
    let b = m.array("tokenizer.ggml.token_type", ty::INT32, pieces.len());
    b.extend(pieces.iter().flat_map(|(_, t)| t.to_le_bytes()));
    m.u32("tokenizer.ggml.bos_token_id", 1);
    m.u32("tokenizer.ggml.eos_token_id", 2);
    m.u32("tokenizer.ggml.unknown_token_id", 0);
    m.bool("tokenizer.ggml.add_bos_token", false);
    m.bool("tokenizer.ggml.add_eos_token", false);
    m.bool("tokenizer.ggml.add_space_prefix", false);
    m
}

/// The piece and SentencePiece type of every token id (see the module documentation).
fn token_pieces(vocab: usize) -> Vec<(String, i32)> {
    (0..vocab)
        .map(|id| match id {
            0x20 => (SPACE_PIECE.to_string(), token_type::NORMAL),
            0..=0xFF => (format!("<0x{id:02X}>"), token_type::BYTE),
            _ => (format!("<unused{}>", id - 0x100), token_type::UNUSED),
        })
        .collect()
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u64(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

fn padded(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn pad(b: &mut Vec<u8>) {
    b.resize(padded(b.len() as u64) as usize, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metadata value as the file holds it.
    #[derive(Debug, Clone, PartialEq)]
    enum Value {
        U32(u32),
        F32(f32),
        Bool(bool),
        Str(String),
        Strs(Vec<String>),
        F32s(Vec<f32>),
        I32s(Vec<i32>),
    }

    struct TensorInfo {
        name: String,
        ne: Vec<u64>,
        ty: u32,
        offset: u64,
    }

    struct Parsed {
        version: u32,
        kv: Vec<(String, Value)>,
        tensors: Vec<TensorInfo>,
        data_start: usize,
    }

    impl Parsed {
        fn get(&self, key: &str) -> &Value {
            &self
                .kv
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no key {key}"))
                .1
        }

        fn tensor(&self, name: &str) -> &TensorInfo {
            self.tensors
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("no tensor {name}"))
        }
    }

    /// A reader of the subset of GGUF that [`write`] produces, independent of the writer's code.
    struct Reader<'a>(&'a [u8], usize);

    impl Reader<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let s = &self.0[self.1..self.1 + n];
            self.1 += n;
            s
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
        }
        fn f32(&mut self) -> f32 {
            f32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
        }
        fn str(&mut self) -> String {
            let n = self.u64() as usize;
            String::from_utf8(self.take(n).to_vec()).expect("utf-8")
        }
        fn value(&mut self, ty: u32) -> Value {
            match ty {
                4 => Value::U32(self.u32()),
                6 => Value::F32(self.f32()),
                7 => Value::Bool(match self.take(1)[0] {
                    0 => false,
                    1 => true,
                    b => panic!("bool {b}"),
                }),
                8 => Value::Str(self.str()),
                9 => {
                    let elem = self.u32();
                    let n = self.u64() as usize;
                    match elem {
                        8 => Value::Strs((0..n).map(|_| self.str()).collect()),
                        6 => Value::F32s((0..n).map(|_| self.f32()).collect()),
                        5 => Value::I32s((0..n).map(|_| self.u32() as i32).collect()),
                        t => panic!("array of type {t}"),
                    }
                }
                t => panic!("value type {t}"),
            }
        }
    }

    fn parse(b: &[u8]) -> Parsed {
        let mut r = Reader(b, 0);
        assert_eq!(r.take(4), b"GGUF");
        let version = r.u32();
        let n_tensors = r.u64();
        let n_kv = r.u64();
        let kv = (0..n_kv)
            .map(|_| {
                let k = r.str();
                let ty = r.u32();
                (k, r.value(ty))
            })
            .collect();
        let tensors = (0..n_tensors)
            .map(|_| {
                let name = r.str();
                let nd = r.u32();
                let ne = (0..nd).map(|_| r.u64()).collect();
                TensorInfo {
                    name,
                    ne,
                    ty: r.u32(),
                    offset: r.u64(),
                }
            })
            .collect();
        let data_start = r.1.div_ceil(32) * 32;
        assert!(b[r.1..data_start].iter().all(|&x| x == 0), "padding is zeros");
        Parsed {
            version,
            kv,
            tensors,
            data_start,
        }
    }

    fn spec() -> ModelSpec {
        ModelSpec {
            vocab: 256,
            dim: 8,
            layers: 2,
            heads: 2,
            ffn_dim: 12,
            seq_len: 16,
        }
    }

    /// Parameters whose value is their index, so a position in the file names its source.
    fn counting(spec: &ModelSpec) -> Vec<f32> {
        (0..spec.params()).map(|i| i as f32).collect()
    }

    fn written(spec: &ModelSpec, params: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        write(spec, params, "tiny", &mut out).expect("writes");
        out
    }

    fn tensor_values(file: &[u8], p: &Parsed, name: &str) -> Vec<f32> {
        let t = p.tensor(name);
        let n: u64 = t.ne.iter().product();
        let at = p.data_start + t.offset as usize;
        file[at..at + 4 * n as usize]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }

    #[test]
    fn the_header_is_gguf_v3_with_one_tensor_per_weight() {
        let s = spec();
        let p = parse(&written(&s, &counting(&s)));
        assert_eq!(p.version, 3);
        assert_eq!(p.tensors.len(), 3 + 9 * 2);
        let names: Vec<&str> = p.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            &names[..4],
            [
                "token_embd.weight",
                "blk.0.attn_norm.weight",
                "blk.0.attn_q.weight",
                "blk.0.attn_k.weight"
            ]
        );
        assert_eq!(
            &names[names.len() - 3..],
            ["blk.1.ffn_down.weight", "output_norm.weight", "output.weight"]
        );
        assert!(p.tensors.iter().all(|t| t.ty == 0), "all F32");
    }

    #[test]
    fn metadata_has_the_keys_and_types_llama_cpp_reads() {
        let s = spec();
        let p = parse(&written(&s, &counting(&s)));
        let cases = [
            ("general.architecture", Value::Str("llama".into())),
            ("general.name", Value::Str("tiny".into())),
            ("general.alignment", Value::U32(32)),
            ("llama.context_length", Value::U32(16)),
            ("llama.embedding_length", Value::U32(8)),
            ("llama.block_count", Value::U32(2)),
            ("llama.feed_forward_length", Value::U32(12)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(2)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("llama.rope.dimension_count", Value::U32(4)),
            ("llama.vocab_size", Value::U32(256)),
            ("tokenizer.ggml.model", Value::Str("llama".into())),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ];
        for (key, want) in cases {
            assert_eq!(p.get(key), &want, "{key}");
        }
        assert_eq!(p.kv[0].0, "general.architecture", "the architecture comes first");
    }

    #[test]
    fn the_vocabulary_is_one_byte_piece_per_byte_with_the_space_as_sentencepiece_writes_it() {
        let s = ModelSpec { vocab: 258, ..spec() };
        let p = parse(&written(&s, &counting(&s)));
        let Value::Strs(pieces) = p.get("tokenizer.ggml.tokens") else {
            panic!("tokens are strings")
        };
        let Value::I32s(types) = p.get("tokenizer.ggml.token_type") else {
            panic!("types are int32")
        };
        assert_eq!(pieces.len(), 258);
        assert_eq!(types.len(), 258);
        assert_eq!((pieces[0].as_str(), types[0]), ("<0x00>", 6));
        assert_eq!((pieces[0x0A].as_str(), types[0x0A]), ("<0x0A>", 6));
        assert_eq!((pieces[0x20].as_str(), types[0x20]), ("\u{2581}", 1));
        assert_eq!((pieces[0xFF].as_str(), types[0xFF]), ("<0xFF>", 6));
        assert_eq!((pieces[257].as_str(), types[257]), ("<unused1>", 5));
        assert_eq!(p.get("tokenizer.ggml.scores"), &Value::F32s(vec![0.0; 258]));
    }

    /// Bytes of `n` values of ggml type `ty` (F32, F16, Q8_0).
    fn type_bytes(ty: u32, n: u64) -> u64 {
        match ty {
            0 => 4 * n,
            1 => 2 * n,
            8 => n / 32 * 34,
            t => panic!("type {t}"),
        }
    }

    #[test]
    fn tensor_data_is_aligned_and_packed_in_order_for_every_type() {
        let s = ModelSpec {
            dim: 32,
            ffn_dim: 48,
            ..spec()
        };
        for ty in [TensorType::F32, TensorType::F16, TensorType::Q8_0] {
            let mut file = Vec::new();
            write_as(&s, &counting(&s), "tiny", ty, &mut file).expect("writes");
            let p = parse(&file);
            assert_eq!(p.data_start % 32, 0);
            let mut expect = 0u64;
            for t in &p.tensors {
                assert_eq!(t.offset, expect, "{ty:?} {}", t.name);
                assert_eq!(t.offset % 32, 0);
                expect += type_bytes(t.ty, t.ne.iter().product()).div_ceil(32) * 32;
            }
            assert_eq!(file.len() as u64, p.data_start as u64 + expect, "{ty:?}");
        }
    }

    #[test]
    fn norms_stay_f32_and_q8_0_falls_back_to_f16_for_rows_that_do_not_fill_blocks() {
        let s = ModelSpec {
            dim: 32,
            ffn_dim: 48,
            ..spec()
        };
        let mut file = Vec::new();
        write_as(&s, &counting(&s), "tiny", TensorType::Q8_0, &mut file).expect("writes");
        let p = parse(&file);
        let cases = [
            ("token_embd.weight", 8),
            ("blk.0.attn_norm.weight", 0),
            ("blk.0.attn_q.weight", 8),
            ("blk.1.ffn_gate.weight", 8),
            // ffn_down's rows are ffn_dim = 48 values: not whole blocks of 32.
            ("blk.1.ffn_down.weight", 1),
            ("output_norm.weight", 0),
            ("output.weight", 8),
        ];
        for (name, ty) in cases {
            assert_eq!(p.tensor(name).ty, ty, "{name}");
        }
        assert_eq!(p.get("general.file_type"), &Value::U32(7));
        assert_eq!(p.get("general.quantization_version"), &Value::U32(2));
    }

    #[test]
    fn f16_rounds_to_nearest_even_and_saturates_to_infinity() {
        let cases: [(f32, u16); 14] = [
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.1, 0x2e66),
            (1.0 / 3.0, 0x3555),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00),
            (f32::INFINITY, 0x7c00),
            (6.103_515_6e-5, 0x0400),
            (5.960_464_5e-8, 0x0001),
            (2.980_232_2e-8, 0x0000),
            // 1 + 2^-11 is halfway between 1 and the next half: ties go to even (1).
            (1.000_488_3, 0x3c00),
            (1.001_464_8, 0x3c02),
        ];
        for (x, want) in cases {
            assert_eq!(f16_bits(x), want, "{x}");
        }
        assert_eq!(f16_bits(f32::NAN) & 0x7c00, 0x7c00);
        assert_ne!(f16_bits(f32::NAN) & 0x03ff, 0);
    }

    #[test]
    fn q8_0_blocks_hold_the_scale_and_values_rounded_half_away_from_zero() {
        let mut row = vec![0.0f32; 32];
        row[0] = 127.0;
        row[1] = -63.5;
        row[2] = 2.5;
        row[3] = -127.0;
        let mut out = Vec::new();
        encode(TensorType::Q8_0, &row, &mut out);
        assert_eq!(out.len(), 34);
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), 0x3c00, "scale 127/127 = 1");
        assert_eq!(out[2..6], [127u8, (-64i8) as u8, 3, (-127i8) as u8]);
        let mut zeros = Vec::new();
        encode(TensorType::Q8_0, &[0.0; 32], &mut zeros);
        assert_eq!(zeros, [0u8; 34], "an all-zero block has scale 0");
    }

    #[test]
    fn matrices_are_written_one_row_per_output_and_the_embedding_as_it_is() {
        let s = spec();
        let params = counting(&s);
        let file = written(&s, &params);
        let p = parse(&file);
        let (v, d, f) = (256usize, 8usize, 12usize);
        assert_eq!(p.tensor("token_embd.weight").ne, [8, 256]);
        assert_eq!(tensor_values(&file, &p, "token_embd.weight"), params[..v * d]);
        // Training's block 0 starts after the embedding: attention norm, then wq `[in×out]`.
        let wq = v * d + d;
        assert_eq!(p.tensor("blk.0.attn_q.weight").ne, [8, 8]);
        let q = tensor_values(&file, &p, "blk.0.attn_q.weight");
        for (i, o) in [(0, 1), (3, 5), (7, 2)] {
            assert_eq!(q[o * d + i], params[wq + i * d + o], "in {i}, out {o}");
        }
        // w2 (down) is `[ffn×dim]`: ggml's ne = [ffn, dim].
        let w2 = v * d + d + 4 * d * d + d + 2 * d * f;
        assert_eq!(p.tensor("blk.0.ffn_down.weight").ne, [12, 8]);
        let down = tensor_values(&file, &p, "blk.0.ffn_down.weight");
        assert_eq!(down[3 * f + 11], params[w2 + 11 * d + 3]);
        // The head `[dim×vocab]` is the last tensor: ne = [dim, vocab].
        let head = params.len() - d * v;
        assert_eq!(p.tensor("output.weight").ne, [8, 256]);
        let out = tensor_values(&file, &p, "output.weight");
        assert_eq!(out[200 * d + 7], params[head + 7 * v + 200]);
        assert_eq!(tensor_values(&file, &p, "output_norm.weight"), params[head - d..head]);
    }

    #[test]
    fn bad_specs_parameters_and_names_are_refused_before_anything_is_written() {
        let s = spec();
        let params = counting(&s);
        let cases: [(ModelSpec, usize, &str, &str); 6] = [
            (ModelSpec { dim: 12, heads: 4, ..s }, 0, "tiny", "head size 3"),
            (
                ModelSpec { dim: 10, heads: 4, ..s },
                0,
                "tiny",
                "not divisible by heads",
            ),
            (ModelSpec { vocab: 100, ..s }, 0, "tiny", "vocab 100 is under 256"),
            (ModelSpec { layers: 0, ..s }, 0, "tiny", "spec.layers"),
            (s, 1, "tiny", "the spec has"),
            (s, 0, "", "model name"),
        ];
        for (spec, short, name, want) in cases {
            let p = if spec == s {
                params[..params.len() - short].to_vec()
            } else {
                counting(&spec)
            };
            let mut out = Vec::new();
            let err = write(&spec, &p, name, &mut out).expect_err("refused").to_string();
            assert!(err.contains(want), "{err} should say {want}");
            assert!(out.is_empty());
        }
        let mut out = Vec::new();
        assert!(
            write(&s, &params, "a\nb", &mut out).is_err(),
            "control characters in the name"
        );
    }
}
