//! One round of DiLoCo, as pure functions that a worker, an auditor and an aggregator all run
//! the same way: train H inner steps from the checkpoint, cut into audit segments; turn the
//! move into a compressed pseudo-gradient; replay a segment; average updates and take the
//! outer step.
//!
//! Everything a round depends on is named by hashes the ledger holds (job, round, checkpoint,
//! worker), so any party can recompute a worker's batches and replay its steps bit for bit.

use sha2::{Digest, Sha256};

use crate::compress::{self, Method, Update};
use crate::data;
use crate::model::{Config, Model, ModelError};
use crate::optim::{adamw_step, nesterov_step, AdamW, Nesterov};
use crate::state::{ef_hash, Checkpoint, Hash32, WorkerState};

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Compress(#[from] compress::CompressError),
    #[error(transparent)]
    Average(#[from] compress::AverageError),
    #[error("round: {0}")]
    Invalid(String),
}

/// A job's training settings as the worker runs them (the ledger's integers converted once).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub model: Config,
    /// Sequences per inner step.
    pub batch: u32,
    /// H: inner steps per round.
    pub inner_steps: u32,
    /// Steps per audit segment (divides `inner_steps`).
    pub segment_steps: u32,
    pub adam: AdamW,
    pub outer: Nesterov,
    pub method: Method,
    /// Training chunks assigned to each worker per round.
    pub shard_chunks: u32,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), RoundError> {
        self.model.validate()?;
        if self.batch == 0 || self.inner_steps == 0 || self.segment_steps == 0 {
            return Err(RoundError::Invalid(
                "batch, inner steps and segment steps must be positive".into(),
            ));
        }
        if self.inner_steps % self.segment_steps != 0 {
            return Err(RoundError::Invalid(format!(
                "segment steps {} do not divide inner steps {}",
                self.segment_steps, self.inner_steps
            )));
        }
        Ok(())
    }

    /// K: training segments per round. Audit index `K` is the compression step.
    pub fn segments(&self) -> u32 {
        self.inner_steps / self.segment_steps
    }

    /// Tokens one worker trains on per round.
    pub fn tokens_per_round(&self) -> u64 {
        u64::from(self.inner_steps) * u64::from(self.batch) * self.model.seq_len as u64
    }
}

/// The seed of a round: `sha256("pazar/train/round/v1\0" ‖ job u64 LE ‖ round u32 LE ‖
/// checkpoint)`. Shards are drawn from it ([`data::assign_shards`]).
pub fn round_seed(job: u64, round: u32, checkpoint: &Hash32) -> Hash32 {
    Sha256::new()
        .chain_update(b"pazar/train/round/v1\0")
        .chain_update(job.to_le_bytes())
        .chain_update(round.to_le_bytes())
        .chain_update(checkpoint)
        .finalize()
        .into()
}

/// The seed of one worker's batches in a round: `sha256("pazar/train/batches/v1\0" ‖
/// round seed ‖ worker address bytes)`.
pub fn batch_seed(round_seed: &Hash32, worker: &[u8]) -> Hash32 {
    Sha256::new()
        .chain_update(b"pazar/train/batches/v1\0")
        .chain_update(round_seed)
        .chain_update(worker)
        .finalize()
        .into()
}

/// One worker's round: its shard's bytes and its batch seed.
pub struct Work<'a> {
    pub chunks: Vec<&'a [u8]>,
    pub seed: Hash32,
}

/// The commitment to a round's boundary hashes (what a worker reveals as `trace`); the ledger
/// checks a failing audit's claim against it. An auditor fetches the whole list (K + 1 hashes).
pub use pazar_types::train::trace_root;

/// `SHA-256("pazar/train/losses/v1\0" ‖ count (u32 LE) ‖ each loss's f32 bits (LE))`: the
/// digest of a round's per-step losses. The worker reveals only its seal
/// ([`pazar_types::train::loss_seal`]); an auditor gets the digest by replaying the whole
/// round, and its pass must carry it. The losses are the same bits on any machine (the
/// kernels are reproducible), so an honest replay always opens an honest seal.
pub fn loss_digest(losses: &[f32]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(b"pazar/train/losses/v1\0");
    // A round has at most MAX_INNER_STEPS (100 000) losses.
    h.update((losses.len() as u32).to_le_bytes());
    for l in losses {
        h.update(l.to_bits().to_le_bytes());
    }
    h.finalize().into()
}

/// One AdamW step on the batch of `step`; returns the batch's loss.
pub fn train_step(
    model: &Model,
    cfg: &TrainConfig,
    state: &mut WorkerState,
    work: &Work,
    step: u32,
) -> Result<f32, RoundError> {
    let b = data::sample_batch(&work.chunks, &work.seed, step, cfg.batch, cfg.model.seq_len as u32)?;
    let tokens: Vec<u32> = b.tokens.iter().map(|&t| u32::from(t)).collect();
    let targets: Vec<u32> = b.targets.iter().map(|&t| u32::from(t)).collect();
    let mut grad = vec![0.0f32; state.params.len()];
    let loss = model.loss_and_grad(&state.params, &tokens, &targets, cfg.batch as usize, &mut grad)?;
    adamw_step(&cfg.adam, &mut state.adam, &mut state.params, &mut grad);
    Ok(loss)
}

/// What a worker produces in a round.
pub struct RoundOutput {
    /// The states at each segment boundary, `K + 1` of them: after 0, S, 2S, …, H steps.
    /// The worker serves them to auditors.
    pub boundaries: Vec<WorkerState>,
    /// Their hashes (the trace's leaves).
    pub trace: Vec<Hash32>,
    /// [`trace_root`] of `trace`: what the worker reveals.
    pub trace_root: Hash32,
    pub update: Update,
    pub update_bytes: Vec<u8>,
    pub update_hash: Hash32,
    /// The hash of the residual the round started with.
    pub ef_in: Hash32,
    /// The residual for the worker's next round, and its hash.
    pub ef_out: Vec<f32>,
    pub ef_out_hash: Hash32,
    /// The loss of each inner step.
    pub losses: Vec<f32>,
    /// [`loss_digest`] of `losses`: kept secret, opened only by an auditor's replay.
    pub loss_digest: Hash32,
}

/// Trains one round from `checkpoint` with the worker's residual `ef` (zeros at first): H inner
/// steps from a fresh AdamW, then the pseudo-gradient `θ_0 − θ_H` compressed with error
/// feedback.
pub fn run_round(
    model: &Model,
    cfg: &TrainConfig,
    checkpoint: &Checkpoint,
    ef: Vec<f32>,
    work: &Work,
) -> Result<RoundOutput, RoundError> {
    cfg.validate()?;
    if ef.len() != checkpoint.params.len() {
        return Err(RoundError::Invalid("residual and checkpoint differ in size".into()));
    }
    let mut state = WorkerState::start(checkpoint.params.clone(), ef);
    let ef_in = ef_hash(&state.ef);
    let mut boundaries = vec![state.clone()];
    let mut losses = Vec::with_capacity(cfg.inner_steps as usize);
    for s in 0..cfg.segments() {
        for step in s * cfg.segment_steps..(s + 1) * cfg.segment_steps {
            losses.push(train_step(model, cfg, &mut state, work, step)?);
        }
        boundaries.push(state.clone());
    }
    let trace: Vec<Hash32> = boundaries.iter().map(WorkerState::hash).collect();
    let (update, ef_out) = finish(cfg, &checkpoint.params, &state)?;
    let update_bytes = update.encode();
    Ok(RoundOutput {
        boundaries,
        trace_root: trace_root(&trace),
        trace,
        update_hash: compress::update_hash(&update_bytes),
        update,
        update_bytes,
        ef_in,
        ef_out_hash: ef_hash(&ef_out),
        ef_out,
        loss_digest: loss_digest(&losses),
        losses,
    })
}

/// Whether a method carries its compression error into the next round. Top-k drops most of
/// each update, so what it drops must come back later (error feedback); int8 rounds every entry
/// to within half a step of its block's scale, unbiased enough to go without, and then a worker
/// carries nothing between rounds: an auditor needs no blob but the checkpoint to replay it.
pub fn error_feedback(method: Method) -> bool {
    !matches!(method, Method::Int8)
}

/// The compression step: from the round's start weights and the state after H steps, the
/// update and the residual for the next round.
pub fn finish(cfg: &TrainConfig, start: &[f32], end: &WorkerState) -> Result<(Update, Vec<f32>), RoundError> {
    if start.len() != end.params.len() {
        return Err(RoundError::Invalid("start and end weights differ in size".into()));
    }
    let delta: Vec<f32> = start.iter().zip(&end.params).map(|(a, b)| a - b).collect();
    if !error_feedback(cfg.method) {
        let zeros = vec![0.0f32; delta.len()];
        let (update, _) = compress::compress(cfg.method, &delta, &zeros)?;
        return Ok((update, zeros));
    }
    Ok(compress::compress(cfg.method, &delta, &end.ef)?)
}

/// Replays segment `segment` (< K) from `start` (the state at its first step): the hash of the
/// state after each of its steps. The last one is the segment's end boundary.
pub fn replay_segment(
    model: &Model,
    cfg: &TrainConfig,
    start: &WorkerState,
    work: &Work,
    segment: u32,
) -> Result<Vec<Hash32>, RoundError> {
    let mut state = start.clone();
    advance_segment(model, cfg, &mut state, work, segment)
}

/// Trains `state` through segment `segment` (< K) in place, as an audit does before it knows
/// whether the segment ends where the trace says (no state hash per step: only a failing
/// segment is replayed again with them): the loss of each step.
pub fn train_segment(
    model: &Model,
    cfg: &TrainConfig,
    state: &mut WorkerState,
    work: &Work,
    segment: u32,
) -> Result<Vec<f32>, RoundError> {
    segment_range(cfg, segment)?
        .map(|step| train_step(model, cfg, state, work, step))
        .collect()
}

/// The steps of training segment `segment` (< K).
fn segment_range(cfg: &TrainConfig, segment: u32) -> Result<std::ops::Range<u32>, RoundError> {
    if segment >= cfg.segments() {
        return Err(RoundError::Invalid(format!(
            "segment {segment} is not a training segment"
        )));
    }
    let first = segment * cfg.segment_steps;
    Ok(first..first + cfg.segment_steps)
}

/// Trains `state` through segment `segment` (< K) in place: the hash after each step.
pub fn advance_segment(
    model: &Model,
    cfg: &TrainConfig,
    state: &mut WorkerState,
    work: &Work,
    segment: u32,
) -> Result<Vec<Hash32>, RoundError> {
    segment_range(cfg, segment)?
        .map(|step| {
            train_step(model, cfg, state, work, step)?;
            Ok(state.hash())
        })
        .collect()
}

/// Replays the compression step: `[update hash, residual hash]` from the state after H steps.
pub fn replay_finish(cfg: &TrainConfig, start: &[f32], end: &WorkerState) -> Result<[Hash32; 2], RoundError> {
    let (update, ef) = finish(cfg, start, end)?;
    Ok([compress::update_hash(&update.encode()), ef_hash(&ef)])
}

/// The most one coordinate can honestly move in a round. With β1 = 0.9 and β2 = 0.95,
/// (1 − β1) < √(1 − β2), so AdamW's bias-corrected step moves a weight by at most `lr` (Kingma
/// and Ba, §2.1) plus the decay term: H steps move it by at most `H·lr·(1 + wd·(max|θ| + H·lr))`.
/// Twice that leaves room for quantisation error. With error feedback (top-k), a coordinate
/// left out keeps growing in the residual until it is sent, for about `1000 / per_mille` rounds
/// on average: the bound grows by that factor. An update beyond it is not a training result.
pub fn update_bound(cfg: &TrainConfig, checkpoint: &[f32]) -> f32 {
    let max_w = checkpoint.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let h_lr = cfg.inner_steps as f32 * cfg.adam.lr;
    let carried = match cfg.method {
        Method::TopK { per_mille } | Method::TopKInt8 { per_mille } => 1000.0 / f32::from(per_mille.max(1)),
        Method::Int8 => 1.0,
    };
    2.0 * carried * h_lr * (1.0 + cfg.adam.weight_decay * (max_w + h_lr))
}

/// The aggregate: the included updates (in the order given: the ledger's order of workers),
/// each clamped coordinate-wise to [`update_bound`] (so an update no audit checked moves the
/// model no further than honest training could), averaged, then the outer Nesterov step.
pub fn aggregate(cfg: &TrainConfig, checkpoint: &Checkpoint, updates: &[Update]) -> Result<Checkpoint, RoundError> {
    let n = checkpoint.params.len();
    if updates.is_empty() {
        return Err(compress::AverageError::Empty.into());
    }
    let bound = update_bound(cfg, &checkpoint.params);
    let mut sum = vec![0.0f32; n];
    for u in updates {
        if u.n() as usize != n {
            return Err(RoundError::Invalid(format!(
                "an update of {} values for {n} parameters",
                u.n()
            )));
        }
        for (s, x) in sum.iter_mut().zip(u.decompress()) {
            *s += x.clamp(-bound, bound);
        }
    }
    let inv = 1.0f32 / updates.len() as f32;
    for x in &mut sum {
        *x *= inv;
    }
    let mut next = checkpoint.clone();
    nesterov_step(&cfg.outer, &mut next.params, &mut next.momentum, &sum);
    Ok(next)
}

/// Mean loss of `params` on evaluation batches.
pub fn evaluate(model: &Model, params: &[f32], batches: &[data::Batch]) -> Result<f32, RoundError> {
    let mut total = 0.0f32;
    let mut count = 0u32;
    for b in batches {
        let tokens: Vec<u32> = b.tokens.iter().map(|&t| u32::from(t)).collect();
        let targets: Vec<u32> = b.targets.iter().map(|&t| u32::from(t)).collect();
        total += model.loss(params, &tokens, &targets, b.batch as usize)? * b.batch as f32;
        count += b.batch;
    }
    if count == 0 {
        return Err(RoundError::Invalid("no evaluation batches".into()));
    }
    Ok(total / count as f32)
}
