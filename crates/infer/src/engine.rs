//! Generation with the training model ([`pazar_train`'s `model`], the same architecture and
//! the same flat parameter layout): one token at a time with a KV cache, f32 or int8 weights,
//! greedy or sampled decoding, a streaming callback, and the numbers a user asks about
//! (first-token latency, tokens per second).
//!
//! **Context.** A model is trained on `seq_len` positions and its rotary angles beyond them
//! were never seen, so the engine never goes past them: a prompt longer than `seq_len` is
//! refused ([`EngineError::PromptTooLong`]), and generation stops with
//! [`FinishReason::Context`] when the next token would need position `seq_len` (the last token
//! sampled is still returned: it is predicted from positions `0..seq_len`, all in range). No
//! sliding window: dropping the oldest positions would change what every cached key means.
//!
//! **Weights.** The layout is training's (`Layout`: embedding; per block attention norm, `wq`,
//! `wk`, `wv`, `wo`, FFN norm, `w1`, `w3`, `w2`; final norm; output head; matrices `[in×out]`).
//! At load, every matrix is transposed to one row per output, padded, and `wq|wk|wv` and
//! `w1|w3` are stacked so that a block costs four products. With [`Precision::Int8`] the
//! matrices (not the embedding or the norms) are quantized per output row, and each product's
//! input is quantized per vector: 8-bit products summed in 32-bit integers, scaled once per row.
//!
//! **Threads.** Products of at least [`PARALLEL_MIN_WORK`] multiply-adds are split by rows over
//! a pool of threads that lives as long as the engine; smaller ones (all of a tiny model's) run
//! on the calling thread, where the two channel messages a split costs would outweigh the work.

mod kernels;
mod pool;
mod sample;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use pazar_types::train::ModelSpec;

pub use kernels::{padded, Gemm, PAD};
pub use sample::{argmax, Sampling};

use kernels::{Attention, Input, Mat, Matvec, Quantize, Swiglu};
use pool::{Pool, SharedInput};

/// RMSNorm's epsilon, as in training.
pub const NORM_EPS: f32 = 1e-5;
/// Rotary embedding base, as in training.
pub const ROPE_BASE: f64 = 10_000.0;
/// Most threads an engine runs on.
pub const MAX_THREADS: usize = 256;
/// A product with fewer multiply-adds runs on the calling thread (about 4 µs of work with AVX2,
/// the cost of handing rows to a worker and collecting them).
pub const PARALLEL_MIN_WORK: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("model spec: {0}")]
    Spec(String),
    #[error("weights: the spec needs {expected} values, got {got}")]
    WeightCount { expected: usize, got: usize },
    #[error("weights: value {index} is not a finite number")]
    NonFinite { index: usize },
    #[error("empty prompt: generation needs at least one token")]
    EmptyPrompt,
    #[error("token {token} at position {position} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfVocab { token: u32, position: usize, vocab: usize },
    #[error("the prompt has {len} tokens; the model's context is {context} tokens")]
    PromptTooLong { len: usize, context: usize },
    #[error("the context of {context} tokens is full")]
    ContextFull { context: usize },
    #[error("sampling: {0}")]
    Sampling(String),
    #[error("threads must be 1..={MAX_THREADS}, got {0}")]
    Threads(usize),
    #[error("starting worker threads: {0}")]
    Spawn(String),
}

/// Number format of the weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    Int8,
}

/// Which instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// The widest the CPU has (AVX2 with FMA where present), detected at run time.
    Best,
    /// No vector instructions beyond the target's baseline: for measuring what the detection
    /// buys.
    Scalar,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub precision: Precision,
    /// Threads for the large products, the caller's included.
    pub threads: usize,
    pub simd: SimdLevel,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            precision: Precision::F32,
            threads: default_threads(),
            simd: SimdLevel::Best,
        }
    }
}

/// The machine's cores, at most 8: beyond that a product of a model this engine serves is too
/// small to split further (measured with `pazar bench infer`).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// The instruction set [`SimdLevel::Best`] picks on this machine, as `pulp` names it (`V3`:
/// AVX2 with FMA; `Scalar`: the target's baseline).
pub fn simd_name() -> String {
    let name = format!("{:?}", pulp::Arch::new());
    name.split(['(', ' ', '{']).next().unwrap_or_default().to_string()
}

/// The sizes of a model, as `usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub vocab: usize,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub seq_len: usize,
}

impl Shape {
    /// Checks `spec` against the ledger's bounds and what the architecture needs (an even head
    /// size for rotary pairs).
    pub fn of(spec: &ModelSpec) -> Result<Shape, EngineError> {
        spec.validate("model").map_err(|e| EngineError::Spec(e.to_string()))?;
        let s = Shape {
            vocab: spec.vocab as usize,
            dim: spec.dim as usize,
            layers: usize::from(spec.layers),
            heads: usize::from(spec.heads),
            ffn: spec.ffn_dim as usize,
            seq_len: spec.seq_len as usize,
        };
        if s.head_dim() % 2 != 0 {
            return Err(EngineError::Spec(format!(
                "head size {} (dim {} / heads {}) must be even for rotary pairs",
                s.head_dim(),
                s.dim,
                s.heads
            )));
        }
        Ok(s)
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Parameters in training's flat layout.
    pub fn params(&self) -> usize {
        let (v, d, f) = (self.vocab, self.dim, self.ffn);
        2 * v * d + self.layers * (4 * d * d + 3 * d * f + 2 * d) + d
    }
}

#[derive(Debug)]
struct Block {
    attn_norm: Vec<f32>,
    /// `wq | wk | wv` stacked: `3·dim` rows.
    qkv: Arc<Mat>,
    wo: Arc<Mat>,
    ffn_norm: Vec<f32>,
    /// `w1 | w3` stacked: `2·ffn` rows (gate, then up).
    w13: Arc<Mat>,
    w2: Arc<Mat>,
}

/// A model ready to generate: weights in the kernels' layout, rotary tables, worker threads.
/// One engine serves many [`Session`]s; products from sessions on different threads take turns
/// on the pool.
pub struct Engine {
    shape: Shape,
    precision: Precision,
    emb: Vec<f32>,
    blocks: Vec<Block>,
    final_norm: Vec<f32>,
    head: Arc<Mat>,
    /// `cos`/`sin` of position `t` and pair `i` at `t·hd/2 + i`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    arch: pulp::Arch,
    threads: usize,
    pool: Option<Mutex<Pool>>,
}

/// The shape and settings, not the weights (megabytes of numbers help no one in a log).
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shape", &self.shape)
            .field("precision", &self.precision)
            .field("threads", &self.threads)
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads `params` (training's flat layout for `spec`).
    pub fn new(spec: &ModelSpec, params: &[f32], opts: EngineOptions) -> Result<Engine, EngineError> {
        let s = Shape::of(spec)?;
        if !(1..=MAX_THREADS).contains(&opts.threads) {
            return Err(EngineError::Threads(opts.threads));
        }
        if params.len() != s.params() {
            return Err(EngineError::WeightCount {
                expected: s.params(),
                got: params.len(),
            });
        }
        if let Some(index) = params.iter().position(|v| !v.is_finite()) {
            return Err(EngineError::NonFinite { index });
        }
        let int8 = opts.precision == Precision::Int8;
        let (v, d, f) = (s.vocab, s.dim, s.ffn);
        let mut at = 0usize;
        let mut take = |n: usize| {
            let t = &params[at..at + n];
            at += n;
            t
        };
        let emb = take(v * d).to_vec();
        let mut blocks = Vec::with_capacity(s.layers);
        for _ in 0..s.layers {
            let attn_norm = take(d).to_vec();
            let (wq, wk, wv, wo) = (take(d * d), take(d * d), take(d * d), take(d * d));
            let ffn_norm = take(d).to_vec();
            let (w1, w3, w2) = (take(d * f), take(d * f), take(f * d));
            blocks.push(Block {
                attn_norm,
                qkv: Arc::new(Mat::stack(&[(wq, d), (wk, d), (wv, d)], d, int8)),
                wo: Arc::new(Mat::stack(&[(wo, d)], d, int8)),
                ffn_norm,
                w13: Arc::new(Mat::stack(&[(w1, f), (w3, f)], d, int8)),
                w2: Arc::new(Mat::stack(&[(w2, d)], f, int8)),
            });
        }
        let final_norm = take(d).to_vec();
        let head = Arc::new(Mat::stack(&[(take(d * v), v)], d, int8));
        assert_eq!(at, params.len(), "the layout covers every parameter");

        let (hd, half) = (s.head_dim(), s.head_dim() / 2);
        let mut rope_cos = Vec::with_capacity(s.seq_len * half);
        let mut rope_sin = Vec::with_capacity(s.seq_len * half);
        for t in 0..s.seq_len {
            for i in 0..half {
                let freq = ROPE_BASE.powf(-((2 * i) as f64) / hd as f64);
                let angle = t as f64 * freq;
                rope_cos.push(angle.cos() as f32);
                rope_sin.push(angle.sin() as f32);
            }
        }
        let arch = match opts.simd {
            SimdLevel::Best => pulp::Arch::new(),
            SimdLevel::Scalar => pulp::Arch::Scalar,
        };
        let pool = if opts.threads > 1 {
            let p = Pool::new(opts.threads - 1, arch).map_err(|e| EngineError::Spawn(e.to_string()))?;
            Some(Mutex::new(p))
        } else {
            None
        };
        Ok(Engine {
            shape: s,
            precision: opts.precision,
            emb,
            blocks,
            final_norm,
            head,
            rope_cos,
            rope_sin,
            arch,
            threads: opts.threads,
            pool,
        })
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Threads a token's products actually run on: 1 when every matrix is under
    /// [`PARALLEL_MIN_WORK`] (a tiny model never wakes the pool).
    pub fn decode_threads(&self) -> usize {
        let mats = self.blocks.iter().flat_map(|b| [&b.qkv, &b.wo, &b.w13, &b.w2]);
        if mats.chain([&self.head]).any(|m| m.work() >= PARALLEL_MIN_WORK) {
            self.threads
        } else {
            1
        }
    }

    /// A fresh KV cache for one sequence.
    pub fn session(&self) -> Session<'_> {
        Session::new(self)
    }

    /// `out = mat · x` (`x` padded to the row stride; `xq` is scratch for int8).
    fn matvec(&self, mat: &Arc<Mat>, x: &[f32], xq: &mut [i8], out: &mut [f32]) {
        let int8 = self.precision == Precision::Int8;
        if let Some(pool) = self.pool.as_ref().filter(|_| mat.work() >= PARALLEL_MIN_WORK) {
            let input = if int8 {
                let mut q = vec![0i8; x.len()];
                let s = self.arch.dispatch(Quantize { x, q: &mut q });
                SharedInput::I8(q, s)
            } else {
                SharedInput::F32(x.to_vec())
            };
            // A poisoned lock only means another session's product panicked; the pool's
            // channels are still sound.
            let pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.matvec(mat, input, out);
            return;
        }
        let input = if int8 {
            let xq = &mut xq[..x.len()];
            let s = self.arch.dispatch(Quantize { x, q: &mut *xq });
            Input::I8(xq, s)
        } else {
            Input::F32(x)
        };
        self.arch.dispatch(Matvec {
            mat,
            first: 0,
            x: input,
            out,
        });
    }

    /// Generates after `prompt`: see [`GenerateOptions`]. `on_token` sees each token as it is
    /// decided (tokens that may begin a stop sequence are held back until they cannot) and may
    /// stop generation.
    pub fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> Flow,
    ) -> Result<Generation, EngineError> {
        opts.sampling.validate()?;
        self.check_prompt(prompt)?;
        let t0 = Instant::now();
        let mut session = self.session();
        let mut rng = sample::Rng::new(opts.sampling.seed);
        let mut scratch = Vec::new();
        for (i, &t) in prompt.iter().enumerate() {
            session.feed(t, i + 1 == prompt.len())?;
        }
        let prompt_s = t0.elapsed().as_secs_f64();
        let mut out: Vec<u32> = Vec::new();
        let mut emitted = 0usize;
        let mut first_s = None;
        let finish;
        loop {
            if out.len() == opts.max_tokens {
                finish = FinishReason::Length;
                break;
            }
            let next = sample::sample(session.logits(), &opts.sampling, &mut rng, &mut scratch);
            first_s.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            out.push(next);
            if let Some(stop) = opts.stop.iter().find(|s| !s.is_empty() && out.ends_with(s)) {
                out.truncate(out.len() - stop.len());
                emitted = emitted.min(out.len());
                let stopped = emit(&out, &mut emitted, out.len(), &mut on_token);
                finish = if stopped {
                    FinishReason::Callback
                } else {
                    FinishReason::Stop
                };
                break;
            }
            let hold = held_back(&out, &opts.stop);
            if emit(&out, &mut emitted, out.len() - hold, &mut on_token) {
                out.truncate(emitted);
                finish = FinishReason::Callback;
                break;
            }
            if out.len() == opts.max_tokens {
                continue;
            }
            if session.pos() == self.shape.seq_len {
                finish = FinishReason::Context;
                break;
            }
            session.feed(next, true)?;
        }
        if finish != FinishReason::Callback && emit(&out, &mut emitted, out.len(), &mut on_token) {
            out.truncate(emitted);
        }
        let total_s = t0.elapsed().as_secs_f64();
        let first = first_s.unwrap_or(total_s);
        let tokens_per_s = if out.len() >= 2 && total_s > first {
            (out.len() - 1) as f64 / (total_s - first)
        } else {
            0.0
        };
        Ok(Generation {
            stats: Stats {
                prompt_tokens: prompt.len(),
                generated_tokens: out.len(),
                prompt_ms: prompt_s * 1e3,
                first_token_ms: first * 1e3,
                tokens_per_s,
                total_ms: total_s * 1e3,
            },
            tokens: out,
            finish,
        })
    }

    /// A prompt the model can take: at least one token, all in the vocabulary, no more than
    /// the context.
    pub fn check_prompt(&self, prompt: &[u32]) -> Result<(), EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() > self.shape.seq_len {
            return Err(EngineError::PromptTooLong {
                len: prompt.len(),
                context: self.shape.seq_len,
            });
        }
        self.check_tokens(prompt, 0)
    }

    fn check_tokens(&self, tokens: &[u32], first_position: usize) -> Result<(), EngineError> {
        match tokens.iter().position(|&t| t as usize >= self.shape.vocab) {
            Some(i) => Err(EngineError::TokenOutOfVocab {
                token: tokens[i],
                position: first_position + i,
                vocab: self.shape.vocab,
            }),
            None => Ok(()),
        }
    }
}

/// Hands `out[*emitted..upto]` to the callback; true when it asked to stop (then `*emitted` is
/// the number of tokens it saw).
fn emit(out: &[u32], emitted: &mut usize, upto: usize, on_token: &mut impl FnMut(u32) -> Flow) -> bool {
    while *emitted < upto {
        let t = out[*emitted];
        *emitted += 1;
        if on_token(t) == Flow::Stop {
            return true;
        }
    }
    false
}

/// How many tokens at the end of `out` might be the start of a stop sequence.
fn held_back(out: &[u32], stops: &[Vec<u32>]) -> usize {
    let mut hold = 0;
    for s in stops {
        for n in (1..s.len().min(out.len() + 1)).rev() {
            if n > hold && out.ends_with(&s[..n]) {
                hold = n;
                break;
            }
        }
    }
    hold
}

/// What the streaming callback answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Token sequences that end generation; a match is not part of the output.
    pub stop: Vec<Vec<u32>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 64,
            sampling: Sampling::GREEDY,
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_tokens` were generated.
    Length,
    /// A stop sequence was generated.
    Stop,
    /// The model's context is full.
    Context,
    /// The callback asked to stop.
    Callback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub stats: Stats,
}

/// Timings of one generation, from the call (prompt processing included).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Running the prompt through the model.
    pub prompt_ms: f64,
    /// From the call until the first generated token was decided.
    pub first_token_ms: f64,
    /// Generated tokens after the first ÷ the seconds since the first (0 with fewer than 2).
    pub tokens_per_s: f64,
    pub total_ms: f64,
}

/// One sequence's KV cache and scratch buffers.
pub struct Session<'e> {
    engine: &'e Engine,
    pos: usize,
    /// Keys per layer and head, transposed: `[layer][dim][seq_len]`.
    kt: Vec<f32>,
    /// Values per layer: `[layer][seq_len][dim]`.
    v: Vec<f32>,
    x: Vec<f32>,
    /// Normed input of a product, padded to its stride.
    xn: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    h13: Vec<f32>,
    h: Vec<f32>,
    scores: Vec<f32>,
    xq: Vec<i8>,
    logits: Vec<f32>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("engine", self.engine)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<'e> Session<'e> {
    fn new(engine: &'e Engine) -> Session<'e> {
        let s = engine.shape;
        let (d, f) = (s.dim, s.ffn);
        Session {
            engine,
            pos: 0,
            kt: vec![0.0; s.layers * d * s.seq_len],
            v: vec![0.0; s.layers * s.seq_len * d],
            x: vec![0.0; d],
            xn: vec![0.0; padded(d)],
            qkv: vec![0.0; 3 * d],
            att: vec![0.0; padded(d)],
            proj: vec![0.0; d],
            h13: vec![0.0; 2 * f],
            h: vec![0.0; padded(f)],
            scores: vec![0.0; s.seq_len],
            xq: vec![0; padded(d).max(padded(f))],
            logits: vec![0.0; s.vocab],
        }
    }

    /// Positions filled so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The logits after the last token fed with `want_logits`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Runs `token` at the next position and returns the logits for the one after it.
    pub fn step(&mut self, token: u32) -> Result<&[f32], EngineError> {
        self.feed(token, true)?;
        Ok(&self.logits)
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Runs `token` at the next position; computes the logits only when asked (a prompt's
    /// tokens but the last need only their keys and values).
    pub fn feed(&mut self, token: u32, want_logits: bool) -> Result<(), EngineError> {
        let e = self.engine;
        let s = e.shape;
        if self.pos >= s.seq_len {
            return Err(EngineError::ContextFull { context: s.seq_len });
        }
        e.check_tokens(&[token], self.pos)?;
        let (d, f, seq) = (s.dim, s.ffn, s.seq_len);
        let (hd, half) = (s.head_dim(), s.head_dim() / 2);
        let p = self.pos;
        self.x
            .copy_from_slice(&e.emb[token as usize * d..(token as usize + 1) * d]);
        let cos = &e.rope_cos[p * half..(p + 1) * half];
        let sin = &e.rope_sin[p * half..(p + 1) * half];
        for (l, b) in e.blocks.iter().enumerate() {
            rmsnorm(&self.x, &b.attn_norm, &mut self.xn[..d]);
            e.matvec(&b.qkv, &self.xn, &mut self.xq, &mut self.qkv);
            let (q, kv) = self.qkv.split_at_mut(d);
            let (k, v) = kv.split_at_mut(d);
            rope(q, hd, cos, sin);
            rope(k, hd, cos, sin);
            let kt = &mut self.kt[l * d * seq..(l + 1) * d * seq];
            for (i, &kv) in k.iter().enumerate() {
                kt[i * seq + p] = kv;
            }
            let vc = &mut self.v[l * seq * d..(l + 1) * seq * d];
            vc[p * d..(p + 1) * d].copy_from_slice(v);
            e.arch.dispatch(Attention {
                q,
                kt,
                v: vc,
                pos: p,
                heads: s.heads,
                seq,
                scores: &mut self.scores,
                out: &mut self.att[..d],
            });
            e.matvec(&b.wo, &self.att, &mut self.xq, &mut self.proj);
            for (x, &a) in self.x.iter_mut().zip(&self.proj) {
                *x += a;
            }
            rmsnorm(&self.x, &b.ffn_norm, &mut self.xn[..d]);
            e.matvec(&b.w13, &self.xn, &mut self.xq, &mut self.h13);
            e.arch.dispatch(Swiglu {
                gate_up: &self.h13,
                h: &mut self.h[..f],
            });
            e.matvec(&b.w2, &self.h, &mut self.xq, &mut self.proj);
            for (x, &a) in self.x.iter_mut().zip(&self.proj) {
                *x += a;
            }
        }
        self.pos += 1;
        if want_logits {
            rmsnorm(&self.x, &e.final_norm, &mut self.xn[..d]);
            e.matvec(&e.head, &self.xn, &mut self.xq, &mut self.logits);
        }
        Ok(())
    }
}

/// `y = x / sqrt(mean(x²) + eps) · w`.
fn rmsnorm(x: &[f32], w: &[f32], y: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + NORM_EPS).sqrt();
    for ((yv, &xv), &wv) in y.iter_mut().zip(x).zip(w) {
        *yv = xv * r * wv;
    }
}

/// Rotates the adjacent pairs `(2i, 2i+1)` of every head by the position's angles.
fn rope(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(hd) {
        for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0 * c - x1 * s;
            pair[1] = x0 * s + x1 * c;
        }
    }
}

/// Matrix-multiply throughput on `threads` threads: `c = a·b` for square `n×n` matrices with
/// the crate's blocked SIMD kernel ([`Gemm`]), repeated for at least `seconds`, rows of `c`
/// split between scoped threads. FLOP/s counts `2·n³` per product.
pub fn matmul_flops(n: usize, threads: usize, seconds: f64, simd: SimdLevel) -> f64 {
    let arch = match simd {
        SimdLevel::Best => pulp::Arch::new(),
        SimdLevel::Scalar => pulp::Arch::Scalar,
    };
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let mut c = vec![0.0f32; n * n];
    let threads = threads.clamp(1, n / 4);
    let rows_per = n.div_ceil(threads).div_ceil(4) * 4;
    let run = |c: &mut [f32]| {
        std::thread::scope(|s| {
            for (i, block) in c.chunks_mut(rows_per * n).enumerate() {
                let a = &a[i * rows_per * n..];
                let b = &b;
                s.spawn(move || {
                    arch.dispatch(Gemm {
                        a,
                        b,
                        c: block,
                        k: n,
                        n,
                    })
                });
            }
        });
    };
    run(&mut c);
    let t0 = Instant::now();
    let mut reps = 0u64;
    while reps == 0 || t0.elapsed().as_secs_f64() < seconds {
        run(&mut c);
        reps += 1;
    }
    std::hint::black_box(&c);
    2.0 * (n as f64).powi(3) * reps as f64 / t0.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_stop_sequence_is_held_back_until_it_cannot_match() {
        let stops = vec![vec![5, 6, 7]];
        assert_eq!(held_back(&[1, 5], &stops), 1);
        assert_eq!(held_back(&[1, 5, 6], &stops), 2);
        assert_eq!(held_back(&[5, 6, 8], &stops), 0);
        assert_eq!(held_back(&[], &stops), 0);
    }
}
