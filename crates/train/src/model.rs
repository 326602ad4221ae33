//! A small llama-family transformer on the reproducible kernels of [`crate::ops`].
//!
//! Pre-norm decoder blocks: RMSNorm → causal multi-head attention with rotary position
//! embeddings (adjacent pairs rotated, base 10 000) → residual, RMSNorm → SwiGLU feed-forward →
//! residual; a final RMSNorm and an untied output head. Tokens are embedded by table lookup.
//!
//! All parameters live in one flat `f32` vector in a fixed layout ([`Layout`]): the optimizer,
//! the pseudo-gradient, compression and hashing all work on that one vector, and two machines
//! agree on it to the bit. The forward and backward passes are written out by hand (no autograd
//! tape) so that every reduction has one documented order.

use crate::ops::{self, Threads};

/// RMSNorm's epsilon.
pub const NORM_EPS: f32 = 1e-5;
/// Rotary embedding base.
pub const ROPE_BASE: f32 = 10_000.0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("model spec: {0}")]
    Spec(String),
    #[error("batch: {0}")]
    Batch(String),
    #[error("parameters: expected {expected} values, got {got}")]
    Params { expected: usize, got: usize },
}

/// The shape of a model. Sizes are `usize` here; the ledger's `ModelSpec` carries the same
/// numbers as fixed-width integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub vocab: usize,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub seq_len: usize,
}

impl Config {
    /// Checks the shape is one this code can run: head size even (rotary pairs), sizes
    /// bounded so that no buffer size overflows.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::Spec(m.to_string()));
        if !(2..=65_536).contains(&self.vocab) {
            return bad("vocab must be 2..=65536");
        }
        if !(1..=64).contains(&self.heads) || !(1..=64).contains(&self.layers) {
            return bad("heads and layers must be 1..=64");
        }
        if !(2..=4096).contains(&self.dim) || self.dim % self.heads != 0 || (self.dim / self.heads) % 2 != 0 {
            return bad("dim must be 2..=4096, a multiple of heads, with an even head size");
        }
        if !(1..=16_384).contains(&self.ffn) || !(2..=8192).contains(&self.seq_len) {
            return bad("ffn must be 1..=16384 and seq_len 2..=8192");
        }
        if self.param_count() > 2_000_000_000 {
            return bad("more than 2e9 parameters");
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    pub fn param_count(&self) -> usize {
        Layout::new(self).total
    }
}

/// Offsets of one block's tensors in the flat parameter vector.
#[derive(Debug, Clone, Copy)]
struct LayerOffsets {
    attn_norm: usize,
    wq: usize,
    wk: usize,
    wv: usize,
    wo: usize,
    ffn_norm: usize,
    w1: usize,
    w3: usize,
    w2: usize,
}

/// Where each tensor lives in the flat parameter vector, in this order: token embedding
/// `[vocab×dim]`; per block: attention norm `[dim]`, `wq`, `wk`, `wv`, `wo` `[dim×dim]`, FFN
/// norm `[dim]`, `w1` (gate) and `w3` (up) `[dim×ffn]`, `w2` (down) `[ffn×dim]`; final norm
/// `[dim]`; output head `[dim×vocab]`. Matrices are row-major `[in×out]`: `y = x · W`.
#[derive(Debug, Clone)]
pub struct Layout {
    emb: usize,
    layers: Vec<LayerOffsets>,
    final_norm: usize,
    head: usize,
    pub total: usize,
}

impl Layout {
    fn new(c: &Config) -> Layout {
        let (d, f, v) = (c.dim, c.ffn, c.vocab);
        let mut at = 0usize;
        let mut take = |n: usize| {
            let o = at;
            at = at.saturating_add(n);
            o
        };
        let emb = take(v * d);
        let layers = (0..c.layers)
            .map(|_| LayerOffsets {
                attn_norm: take(d),
                wq: take(d * d),
                wk: take(d * d),
                wv: take(d * d),
                wo: take(d * d),
                ffn_norm: take(d),
                w1: take(d * f),
                w3: take(d * f),
                w2: take(f * d),
            })
            .collect();
        let final_norm = take(d);
        let head = take(d * v);
        Layout {
            emb,
            layers,
            final_norm,
            head,
            total: at,
        }
    }

    /// Named tensors with their offsets and shapes `(rows, cols)`, in layout order (the
    /// inference bundle exports by these names).
    pub fn tensors(&self, c: &Config) -> Vec<(String, usize, (usize, usize))> {
        let (d, f, v) = (c.dim, c.ffn, c.vocab);
        let mut out = vec![("tok_embeddings".to_string(), self.emb, (v, d))];
        for (i, l) in self.layers.iter().enumerate() {
            out.push((format!("layers.{i}.attention_norm"), l.attn_norm, (1, d)));
            out.push((format!("layers.{i}.attention.wq"), l.wq, (d, d)));
            out.push((format!("layers.{i}.attention.wk"), l.wk, (d, d)));
            out.push((format!("layers.{i}.attention.wv"), l.wv, (d, d)));
            out.push((format!("layers.{i}.attention.wo"), l.wo, (d, d)));
            out.push((format!("layers.{i}.ffn_norm"), l.ffn_norm, (1, d)));
            out.push((format!("layers.{i}.feed_forward.w1"), l.w1, (d, f)));
            out.push((format!("layers.{i}.feed_forward.w3"), l.w3, (d, f)));
            out.push((format!("layers.{i}.feed_forward.w2"), l.w2, (f, d)));
        }
        out.push(("norm".to_string(), self.final_norm, (1, d)));
        out.push(("output".to_string(), self.head, (d, v)));
        out
    }
}

/// A model: its shape, layout and rotary tables. Parameters are passed in, not owned, so one
/// `Model` serves the worker's weights, the auditor's replay and the aggregator's checkpoint.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: Config,
    pub layout: Layout,
    /// `cos`/`sin` of position `t` and pair `i` at `t * head_dim/2 + i`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    pub threads: Threads,
}

/// What the forward pass keeps of one block for the backward pass.
struct BlockCache {
    x_in: Vec<f32>,
    a: Vec<f32>,
    inv1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention probabilities, `[batch][head][t][s]` (zero for `s > t`).
    p: Vec<f32>,
    att: Vec<f32>,
    x_mid: Vec<f32>,
    f: Vec<f32>,
    inv2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    h: Vec<f32>,
}

/// A deterministic generator for initial weights (splitmix64), so that `init_params(seed)` is
/// the same bits everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), from the top 24 bits (exact in f32).
    fn uniform(&mut self) -> f32 {
        let m = (self.next() >> 40) as u32; // 24 bits
        (m as f32) * (2.0 / 16_777_216.0) - 1.0
    }
}

impl Model {
    pub fn new(config: Config, threads: Threads) -> Result<Model, ModelError> {
        config.validate()?;
        let layout = Layout::new(&config);
        let half = config.head_dim() / 2;
        let mut rope_cos = Vec::with_capacity(config.seq_len * half);
        let mut rope_sin = Vec::with_capacity(config.seq_len * half);
        for t in 0..config.seq_len {
            for i in 0..half {
                let freq = libm::powf(ROPE_BASE, -((2 * i) as f32) / config.head_dim() as f32);
                let angle = t as f32 * freq;
                rope_cos.push(libm::cosf(angle));
                rope_sin.push(libm::sinf(angle));
            }
        }
        Ok(Model {
            config,
            layout,
            rope_cos,
            rope_sin,
            threads,
        })
    }

    pub fn param_count(&self) -> usize {
        self.layout.total
    }

    /// Initial weights from `seed`: norms at 1, matrices uniform with standard deviation 0.02
    /// (the residual outputs `wo` and `w2` scaled by `1/sqrt(2·layers)`, as GPT-2 does).
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let c = &self.config;
        let mut rng = SplitMix(seed ^ 0x7061_7a61_725f_7472); // "pazar_tr"
        let mut p = vec![0.0f32; self.layout.total];
        let std = 0.02f32;
        let amp = std * 3.0f32.sqrt();
        let resid = amp / (2.0 * c.layers as f32).sqrt();
        let mut fill = |p: &mut [f32], a: f32| {
            for x in p.iter_mut() {
                *x = rng.uniform() * a;
            }
        };
        let (d, f, v) = (c.dim, c.ffn, c.vocab);
        fill(&mut p[self.layout.emb..self.layout.emb + v * d], amp);
        for l in &self.layout.layers {
            p[l.attn_norm..l.attn_norm + d].fill(1.0);
            p[l.ffn_norm..l.ffn_norm + d].fill(1.0);
            fill(&mut p[l.wq..l.wq + d * d], amp);
            fill(&mut p[l.wk..l.wk + d * d], amp);
            fill(&mut p[l.wv..l.wv + d * d], amp);
            fill(&mut p[l.wo..l.wo + d * d], resid);
            fill(&mut p[l.w1..l.w1 + d * f], amp);
            fill(&mut p[l.w3..l.w3 + d * f], amp);
            fill(&mut p[l.w2..l.w2 + f * d], resid);
        }
        p[self.layout.final_norm..self.layout.final_norm + d].fill(1.0);
        fill(&mut p[self.layout.head..self.layout.head + d * v], amp);
        p
    }

    fn check(&self, params: &[f32], tokens: &[u32], targets: Option<&[u32]>, batch: usize) -> Result<(), ModelError> {
        if params.len() != self.layout.total {
            return Err(ModelError::Params {
                expected: self.layout.total,
                got: params.len(),
            });
        }
        let t = self.config.seq_len;
        if batch == 0 || tokens.len() != batch * t {
            return Err(ModelError::Batch(format!(
                "expected {batch} sequences of {t} tokens, got {} tokens",
                tokens.len()
            )));
        }
        if let Some(tg) = targets {
            if tg.len() != tokens.len() {
                return Err(ModelError::Batch("targets and tokens differ in length".into()));
            }
        }
        let v = self.config.vocab as u32;
        if tokens.iter().chain(targets.unwrap_or(&[])).any(|&x| x >= v) {
            return Err(ModelError::Batch(format!("a token is outside the vocabulary of {v}")));
        }
        Ok(())
    }

    /// Rotates pairs `(2i, 2i+1)` of every head of `x[rows×dim]` by the position's angle
    /// (`inverse`: by minus the angle, the backward pass).
    fn rope(&self, x: &mut [f32], inverse: bool) {
        let c = &self.config;
        let (hd, half) = (c.head_dim(), c.head_dim() / 2);
        for (row, xr) in x.chunks_exact_mut(c.dim).enumerate() {
            let t = row % c.seq_len;
            let cos = &self.rope_cos[t * half..(t + 1) * half];
            let sin = &self.rope_sin[t * half..(t + 1) * half];
            for head in xr.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                    let (co, si) = (cos[i], if inverse { -sin[i] } else { sin[i] });
                    head[2 * i] = x0 * co - x1 * si;
                    head[2 * i + 1] = x0 * si + x1 * co;
                }
            }
        }
    }

    /// Causal attention of one block: writes the probabilities and the output.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], batch: usize, p: &mut [f32], out: &mut [f32]) {
        let c = &self.config;
        let (t_len, d, hd, nh) = (c.seq_len, c.dim, c.head_dim(), c.heads);
        let scale = 1.0 / (hd as f32).sqrt();
        out.fill(0.0);
        let mut scores = vec![0.0f32; t_len];
        for b in 0..batch {
            for h in 0..nh {
                let col = h * hd;
                for t in 0..t_len {
                    let qt = &q[(b * t_len + t) * d + col..][..hd];
                    let mut m = f32::NEG_INFINITY;
                    for (s, sc) in scores.iter_mut().enumerate().take(t + 1) {
                        let ks = &k[(b * t_len + s) * d + col..][..hd];
                        *sc = ops::dot(qt, ks) * scale;
                        if *sc > m {
                            m = *sc;
                        }
                    }
                    let mut z = 0.0f32;
                    for sc in scores.iter_mut().take(t + 1) {
                        *sc = ops::exp(*sc - m);
                        z += *sc;
                    }
                    let inv_z = 1.0 / z;
                    let prow = &mut p[((b * nh + h) * t_len + t) * t_len..][..t_len];
                    prow.fill(0.0);
                    let orow = &mut out[(b * t_len + t) * d + col..][..hd];
                    for s in 0..=t {
                        let pv = scores[s] * inv_z;
                        prow[s] = pv;
                        let vs = &v[(b * t_len + s) * d + col..][..hd];
                        for (o, &x) in orow.iter_mut().zip(vs) {
                            *o += pv * x;
                        }
                    }
                }
            }
        }
    }

    /// The forward pass through the blocks: the final hidden states before the last norm,
    /// and (when `keep`) each block's cache.
    fn blocks_forward(&self, params: &[f32], tokens: &[u32], batch: usize, keep: bool) -> (Vec<f32>, Vec<BlockCache>) {
        let c = &self.config;
        let (d, f) = (c.dim, c.ffn);
        let n = batch * c.seq_len;
        let th = self.threads;
        let mut x = vec![0.0f32; n * d];
        for (row, &tok) in x.chunks_exact_mut(d).zip(tokens) {
            let e = self.layout.emb + tok as usize * d;
            row.copy_from_slice(&params[e..e + d]);
        }
        let mut caches = Vec::new();
        for l in &self.layout.layers {
            let w = |o: usize, len: usize| &params[o..o + len];
            let mut a = vec![0.0f32; n * d];
            let mut inv1 = vec![0.0f32; n];
            ops::rmsnorm(&x, w(l.attn_norm, d), NORM_EPS, &mut a, &mut inv1);
            let mut q = vec![0.0f32; n * d];
            let mut k = vec![0.0f32; n * d];
            let mut v = vec![0.0f32; n * d];
            ops::matmul(&a, w(l.wq, d * d), &mut q, n, d, d, th);
            ops::matmul(&a, w(l.wk, d * d), &mut k, n, d, d, th);
            ops::matmul(&a, w(l.wv, d * d), &mut v, n, d, d, th);
            self.rope(&mut q, false);
            self.rope(&mut k, false);
            let mut p = vec![0.0f32; batch * c.heads * c.seq_len * c.seq_len];
            let mut att = vec![0.0f32; n * d];
            self.attention(&q, &k, &v, batch, &mut p, &mut att);
            let mut proj = vec![0.0f32; n * d];
            ops::matmul(&att, w(l.wo, d * d), &mut proj, n, d, d, th);
            let mut x_mid = x.clone();
            for (xm, pr) in x_mid.iter_mut().zip(&proj) {
                *xm += *pr;
            }
            let mut fa = vec![0.0f32; n * d];
            let mut inv2 = vec![0.0f32; n];
            ops::rmsnorm(&x_mid, w(l.ffn_norm, d), NORM_EPS, &mut fa, &mut inv2);
            let mut g = vec![0.0f32; n * f];
            let mut u = vec![0.0f32; n * f];
            ops::matmul(&fa, w(l.w1, d * f), &mut g, n, d, f, th);
            ops::matmul(&fa, w(l.w3, d * f), &mut u, n, d, f, th);
            let h: Vec<f32> = g.iter().zip(&u).map(|(&gv, &uv)| gv * ops::sigmoid(gv) * uv).collect();
            let mut down = vec![0.0f32; n * d];
            ops::matmul(&h, w(l.w2, f * d), &mut down, n, f, d, th);
            let mut x_out = x_mid.clone();
            for (xo, dn) in x_out.iter_mut().zip(&down) {
                *xo += *dn;
            }
            let x_in = std::mem::replace(&mut x, x_out);
            if keep {
                caches.push(BlockCache {
                    x_in,
                    a,
                    inv1,
                    q,
                    k,
                    v,
                    p,
                    att,
                    x_mid,
                    f: fa,
                    inv2,
                    g,
                    u,
                    h,
                });
            }
        }
        (x, caches)
    }

    /// Logits `[rows×vocab]` of the final hidden states `x`, with the normalised states and
    /// their inverse RMS.
    fn head_forward(&self, params: &[f32], x: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let c = &self.config;
        let (d, v) = (c.dim, c.vocab);
        let n = x.len() / d;
        let mut xf = vec![0.0f32; n * d];
        let mut inv = vec![0.0f32; n];
        let fnorm = &params[self.layout.final_norm..self.layout.final_norm + d];
        ops::rmsnorm(x, fnorm, NORM_EPS, &mut xf, &mut inv);
        let mut logits = vec![0.0f32; n * v];
        let head = &params[self.layout.head..self.layout.head + d * v];
        ops::matmul(&xf, head, &mut logits, n, d, v, self.threads);
        (logits, xf, inv)
    }

    /// Logits `[batch·seq_len × vocab]` for `batch` sequences of `seq_len` tokens.
    pub fn logits(&self, params: &[f32], tokens: &[u32], batch: usize) -> Result<Vec<f32>, ModelError> {
        self.check(params, tokens, None, batch)?;
        let (x, _) = self.blocks_forward(params, tokens, batch, false);
        Ok(self.head_forward(params, &x).0)
    }

    /// Mean cross-entropy of predicting `targets` (evaluation: no gradient).
    pub fn loss(&self, params: &[f32], tokens: &[u32], targets: &[u32], batch: usize) -> Result<f32, ModelError> {
        self.check(params, tokens, Some(targets), batch)?;
        let logits = self.logits(params, tokens, batch)?;
        Ok(ops::cross_entropy_loss(&logits, targets, self.config.vocab))
    }

    /// Mean cross-entropy and its gradient with respect to every parameter, written over
    /// `grad` (same layout as `params`).
    pub fn loss_and_grad(
        &self,
        params: &[f32],
        tokens: &[u32],
        targets: &[u32],
        batch: usize,
        grad: &mut [f32],
    ) -> Result<f32, ModelError> {
        self.check(params, tokens, Some(targets), batch)?;
        if grad.len() != params.len() {
            return Err(ModelError::Params {
                expected: params.len(),
                got: grad.len(),
            });
        }
        let c = &self.config;
        let (d, f, v, t_len, nh) = (c.dim, c.ffn, c.vocab, c.seq_len, c.heads);
        let hd = c.head_dim();
        let n = batch * t_len;
        let th = self.threads;
        grad.fill(0.0);

        let (x, caches) = self.blocks_forward(params, tokens, batch, true);
        let (logits, xf, inv_f) = self.head_forward(params, &x);
        let mut dlogits = vec![0.0f32; n * v];
        let loss = ops::cross_entropy(&logits, targets, v, &mut dlogits);
        drop(logits);

        // Output head and final norm.
        let lo = &self.layout;
        ops::matmul_at_b_acc(&xf, &dlogits, &mut grad[lo.head..lo.head + d * v], n, d, v, th);
        let mut dxf = vec![0.0f32; n * d];
        ops::matmul_a_bt(&dlogits, &params[lo.head..lo.head + d * v], &mut dxf, n, v, d, th);
        drop(dlogits);
        let mut dx = vec![0.0f32; n * d];
        ops::rmsnorm_backward(
            &x,
            &params[lo.final_norm..lo.final_norm + d],
            &inv_f,
            &dxf,
            &mut dx,
            &mut grad[lo.final_norm..lo.final_norm + d],
        );

        let scale = 1.0 / (hd as f32).sqrt();
        for (l, cache) in lo.layers.iter().zip(&caches).rev() {
            let w = |o: usize, len: usize| &params[o..o + len];
            // Feed-forward: x_out = x_mid + (silu(f·w1) ⊙ (f·w3))·w2.
            ops::matmul_at_b_acc(&cache.h, &dx, &mut grad[l.w2..l.w2 + f * d], n, f, d, th);
            let mut dh = vec![0.0f32; n * f];
            ops::matmul_a_bt(&dx, w(l.w2, f * d), &mut dh, n, d, f, th);
            let mut dg = vec![0.0f32; n * f];
            let mut du = vec![0.0f32; n * f];
            for i in 0..n * f {
                let g = cache.g[i];
                let s = ops::sigmoid(g);
                du[i] = dh[i] * g * s;
                dg[i] = dh[i] * cache.u[i] * s * (1.0 + g * (1.0 - s));
            }
            drop(dh);
            ops::matmul_at_b_acc(&cache.f, &dg, &mut grad[l.w1..l.w1 + d * f], n, d, f, th);
            ops::matmul_at_b_acc(&cache.f, &du, &mut grad[l.w3..l.w3 + d * f], n, d, f, th);
            let mut df = vec![0.0f32; n * d];
            let mut df3 = vec![0.0f32; n * d];
            ops::matmul_a_bt(&dg, w(l.w1, d * f), &mut df, n, f, d, th);
            ops::matmul_a_bt(&du, w(l.w3, d * f), &mut df3, n, f, d, th);
            for (a, b) in df.iter_mut().zip(&df3) {
                *a += *b;
            }
            // dx now holds d(x_mid) from the residual; add the norm's path.
            ops::rmsnorm_backward(
                &cache.x_mid,
                w(l.ffn_norm, d),
                &cache.inv2,
                &df,
                &mut dx,
                &mut grad[l.ffn_norm..l.ffn_norm + d],
            );

            // Attention: x_mid = x_in + att·wo.
            ops::matmul_at_b_acc(&cache.att, &dx, &mut grad[l.wo..l.wo + d * d], n, d, d, th);
            let mut datt = vec![0.0f32; n * d];
            ops::matmul_a_bt(&dx, w(l.wo, d * d), &mut datt, n, d, d, th);
            let mut dq = vec![0.0f32; n * d];
            let mut dk = vec![0.0f32; n * d];
            let mut dv = vec![0.0f32; n * d];
            let mut dp = vec![0.0f32; t_len];
            for b in 0..batch {
                for h in 0..nh {
                    let col = h * hd;
                    for t in 0..t_len {
                        let row_t = (b * t_len + t) * d + col;
                        let prow = &cache.p[((b * nh + h) * t_len + t) * t_len..][..t_len];
                        let dot_t = &datt[row_t..row_t + hd];
                        let mut sum_pdp = 0.0f32;
                        for s in 0..=t {
                            let row_s = (b * t_len + s) * d + col;
                            dp[s] = ops::dot(dot_t, &cache.v[row_s..row_s + hd]);
                            sum_pdp += prow[s] * dp[s];
                            let pv = prow[s];
                            for (dvx, &o) in dv[row_s..row_s + hd].iter_mut().zip(dot_t) {
                                *dvx += pv * o;
                            }
                        }
                        for s in 0..=t {
                            let row_s = (b * t_len + s) * d + col;
                            let ds = prow[s] * (dp[s] - sum_pdp) * scale;
                            for (dqx, &kx) in dq[row_t..row_t + hd].iter_mut().zip(&cache.k[row_s..row_s + hd]) {
                                *dqx += ds * kx;
                            }
                            for (dkx, &qx) in dk[row_s..row_s + hd].iter_mut().zip(&cache.q[row_t..row_t + hd]) {
                                *dkx += ds * qx;
                            }
                        }
                    }
                }
            }
            drop(datt);
            self.rope(&mut dq, true);
            self.rope(&mut dk, true);
            ops::matmul_at_b_acc(&cache.a, &dq, &mut grad[l.wq..l.wq + d * d], n, d, d, th);
            ops::matmul_at_b_acc(&cache.a, &dk, &mut grad[l.wk..l.wk + d * d], n, d, d, th);
            ops::matmul_at_b_acc(&cache.a, &dv, &mut grad[l.wv..l.wv + d * d], n, d, d, th);
            let mut da = vec![0.0f32; n * d];
            let mut tmp = vec![0.0f32; n * d];
            ops::matmul_a_bt(&dq, w(l.wq, d * d), &mut da, n, d, d, th);
            ops::matmul_a_bt(&dk, w(l.wk, d * d), &mut tmp, n, d, d, th);
            for (a, b) in da.iter_mut().zip(&tmp) {
                *a += *b;
            }
            ops::matmul_a_bt(&dv, w(l.wv, d * d), &mut tmp, n, d, d, th);
            for (a, b) in da.iter_mut().zip(&tmp) {
                *a += *b;
            }
            // dx holds d(x_in) from the residual; add the norm's path.
            ops::rmsnorm_backward(
                &cache.x_in,
                w(l.attn_norm, d),
                &cache.inv1,
                &da,
                &mut dx,
                &mut grad[l.attn_norm..l.attn_norm + d],
            );
        }

        // Embedding: rows in order.
        for (row, &tok) in dx.chunks_exact(d).zip(tokens) {
            let e = lo.emb + tok as usize * d;
            for (g, &x) in grad[e..e + d].iter_mut().zip(row) {
                *g += x;
            }
        }
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        Config {
            vocab: 11,
            dim: 8,
            layers: 2,
            heads: 2,
            ffn: 12,
            seq_len: 5,
        }
    }

    fn batch(c: &Config, b: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
        let mut r = SplitMix(seed);
        let n = b * c.seq_len;
        let toks: Vec<u32> = (0..n).map(|_| (r.next() % c.vocab as u64) as u32).collect();
        let tg: Vec<u32> = (0..n).map(|_| (r.next() % c.vocab as u64) as u32).collect();
        (toks, tg)
    }

    /// Every parameter's analytic gradient agrees with a central finite difference computed
    /// in double-checked single precision (the tolerance covers f32 rounding of the loss).
    #[test]
    fn gradient_matches_finite_differences_for_every_parameter() {
        let c = tiny();
        let m = Model::new(c, Threads::ONE).expect("valid");
        let mut p = m.init_params(3);
        // Larger weights than the init so every path carries signal.
        for (i, x) in p.iter_mut().enumerate() {
            *x *= 3.0 + (i % 5) as f32 * 0.5;
        }
        let (toks, tg) = batch(&c, 2, 9);
        let mut g = vec![0.0; p.len()];
        m.loss_and_grad(&p, &toks, &tg, 2, &mut g).expect("runs");
        let h = 3e-3f32;
        let mut worst = 0.0f32;
        for i in 0..p.len() {
            let mut a = p.clone();
            a[i] += h;
            let mut b = p.clone();
            b[i] -= h;
            let la = m.loss(&a, &toks, &tg, 2).expect("runs");
            let lb = m.loss(&b, &toks, &tg, 2).expect("runs");
            let num = (la - lb) / (2.0 * h);
            let err = (num - g[i]).abs() / (1e-2 + num.abs().max(g[i].abs()));
            worst = worst.max(err);
            assert!(err < 0.05, "parameter {i}: numeric {num} vs analytic {}", g[i]);
        }
        eprintln!("worst relative error {worst}");
        assert!(worst < 0.03);
    }

    #[test]
    fn loss_and_gradient_are_the_same_bits_for_every_thread_count() {
        let c = Config {
            vocab: 64,
            dim: 64,
            layers: 2,
            heads: 4,
            ffn: 160,
            seq_len: 32,
        };
        let run = |t: usize| {
            let m = Model::new(c, Threads(t)).expect("valid");
            let p = m.init_params(1);
            let (toks, tg) = batch(&c, 16, 2);
            let mut g = vec![0.0; p.len()];
            let l = m.loss_and_grad(&p, &toks, &tg, 16, &mut g).expect("runs");
            (l.to_bits(), g.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(5));
    }

    #[test]
    fn initial_loss_is_near_uniform_prediction() {
        let c = Config {
            vocab: 256,
            dim: 32,
            layers: 2,
            heads: 4,
            ffn: 64,
            seq_len: 16,
        };
        let m = Model::new(c, Threads::ONE).expect("valid");
        let p = m.init_params(7);
        let (toks, tg) = batch(&c, 4, 5);
        let l = m.loss(&p, &toks, &tg, 4).expect("runs");
        assert!((l - (256f32).ln()).abs() < 0.1, "{l}");
    }

    #[test]
    fn bad_shapes_and_tokens_are_refused_with_their_reason() {
        assert!(Config { dim: 9, ..tiny() }.validate().is_err());
        assert!(Config {
            dim: 6,
            heads: 2,
            ..tiny()
        }
        .validate()
        .is_err()); // head size 3 is odd
        let c = tiny();
        let m = Model::new(c, Threads::ONE).expect("valid");
        let p = m.init_params(1);
        let toks = vec![0u32; 2 * c.seq_len];
        let mut tg = toks.clone();
        tg[3] = 11;
        assert!(matches!(m.loss(&p, &toks, &tg, 2), Err(ModelError::Batch(_))));
        assert!(matches!(
            m.loss(&p[1..], &toks, &toks, 2),
            Err(ModelError::Params { .. })
        ));
        assert!(matches!(
            m.loss(&p, &toks[1..], &toks[1..], 2),
            Err(ModelError::Batch(_))
        ));
    }
}
