//! Verifiable distributed training: the vocabulary the ledger, the workers and clients share.
//!
//! The ledger keeps jobs, bonds and provenance records, never tensors. A job names a model
//! ([`ModelSpec`]), a registered dataset ([`DatasetSpec`], the Merkle root of its
//! content-addressed chunks), hyper-parameters ([`TrainParams`], integers only: the ledger
//! never does float math, the worker converts) and the blocks each phase of a round lasts
//! ([`PhaseBlocks`]). Rounds go train → commit → reveal → audit → aggregate.
//!
//! Four rules must be computed identically by the ledger and by every worker, so they live
//! here as pure functions:
//! - [`update_commitment`]: what a worker commits before revealing its update, and
//!   [`loss_seal`]: the seal of its loss digest that a passing audit must open;
//! - [`trace_root`]: the commitment to a round's segment boundaries that the update commits to;
//! - [`round_beacon`]: the randomness of a round, from every revealed update (workers are bound
//!   by their commitments before anyone knows it, and no block hash is involved, which a
//!   proposer could grind);
//! - [`draw_audits`] and [`draw_referees`]: who audits whom, and who referees a dispute.
//!
//! **What an audit checks.** An auditor replays its target's whole round: it rebuilds the
//! round's start from the checkpoint (which every worker has) and, when the target's `ef_in`
//! is not zero, the target's error-feedback residual (4 bytes per parameter), then checks every
//! segment boundary against the target's trace and the compression step against its update and
//! `ef_out`. A failing verdict carries the target's trace as fetched, so the ledger can check
//! that it is the committed one and that the claimed mismatch is real: an auditor cannot fail
//! a worker whose round it did not contradict. A passing verdict carries the digest of the
//! round's per-step losses, which only the replay yields and which opens the seal the worker
//! revealed: an auditor cannot pass a round it did not replay either. Fetching a mid-round state instead (weights, AdamW moments and residual: 16 bytes
//! per parameter) would cost more traffic than the compressed updates themselves. Audits are
//! drawn with a probability per worker ([`JobSpec::audit_per_mille`]) so that verification
//! stays a bounded share of training compute.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::coin::Coin;
use crate::market::{limits, validate_name, SpecError};
use crate::tx::{hex_array, Hash32};

/// Largest vocabulary of a model.
pub const MAX_VOCAB: u32 = 65_536;
/// Largest hidden dimension.
pub const MAX_DIM: u32 = 4_096;
/// Most attention heads.
pub const MAX_HEADS: u16 = 64;
/// Most transformer layers.
pub const MAX_LAYERS: u16 = 64;
/// Largest feed-forward dimension.
pub const MAX_FFN_DIM: u32 = 16_384;
/// Longest sequence.
pub const MAX_SEQ_LEN: u32 = 8_192;
/// Most parameters a model may have ([`ModelSpec::params`]).
pub const MAX_PARAMS: u64 = 2_000_000_000;
/// Most inner steps (H) per round.
pub const MAX_INNER_STEPS: u32 = 100_000;
/// Most sequences per inner step.
pub const MAX_BATCH: u32 = 4_096;
/// Largest learning rate or weight decay, in millionths (1000.0).
pub const MAX_MICRO: u32 = 1_000_000_000;
/// Largest outer learning rate, in thousandths (10.0).
pub const MAX_OUTER_LR_MILLI: u32 = 10_000;
/// Most workers one job takes.
pub const MAX_WORKERS: u16 = 256;
/// Most rounds of one job.
pub const MAX_ROUNDS: u32 = 1_000_000;
/// Most blocks all the phases of one round may last together.
pub const MAX_ROUND_BLOCKS: u64 = 1_000_000;
/// Most referees one dispute draws.
pub const MAX_REFEREES: u16 = 31;
/// Most contributors one dataset names.
pub const MAX_CONTRIBUTORS: usize = 64;
/// Most state hashes in an audit's failing verdict or a dispute: one per step of a segment
/// (a segment has at most every inner step). The transaction size (64 KiB) bounds it further,
/// to about 2,000.
pub const MAX_VERDICT_STEPS: usize = MAX_INNER_STEPS as usize;
/// State hashes a failing verdict on the compression step holds: the update's and `ef_out`'s.
pub const COMPRESSION_STEPS: usize = 2;
/// Most boundary hashes a round's trace holds: `K + 1` with `K` at most every inner step. As
/// for [`MAX_VERDICT_STEPS`], the transaction size bounds a failing verdict's trace further.
pub const MAX_TRACE_HASHES: usize = MAX_INNER_STEPS as usize + 1;
/// Top-k keeps at most this many per mille of the entries; audits are drawn with at most this
/// many per mille.
pub const PER_MILLE: u16 = 1_000;

/// Domain separator of [`update_commitment`].
pub const COMMIT_DOMAIN: &[u8] = b"pazar/train/commit/v1\0";
/// Domain separator of [`round_beacon`].
pub const BEACON_DOMAIN: &[u8] = b"pazar/train/beacon/v1\0";
/// Domain separator of [`trace_root`].
pub const TRACE_DOMAIN: &[u8] = b"pazar/train/trace/v1\0";
/// Domain of a checkpoint's name ([`checkpoint_hash`]).
pub const CHECKPOINT_DOMAIN: &[u8] = b"pazar/train/checkpoint/v2\0";
/// Tag of the hash of a checkpoint's weights ([`f32s_hash`]).
pub const WEIGHTS_TAG: &str = "pazar/train/weights/v1";
/// Tag of the hash of a checkpoint's outer momentum ([`f32s_hash`]).
pub const MOMENTUM_TAG: &str = "pazar/train/momentum/v1";
/// Domain of [`loss_seal`].
pub const SEAL_DOMAIN: &[u8] = b"pazar/train/seal/v1\0";

const _: () = assert!(MAX_REFEREES % 2 == 1);
const _: () = assert!(MAX_WORKERS as usize <= u16::MAX as usize);
// A trace's length is hashed as a u32.
const _: () = assert!(MAX_TRACE_HASHES <= u32::MAX as usize);

fn invalid(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(field: &str, v: T, lo: T, hi: T) -> Result<(), SpecError> {
    if v < lo || v > hi {
        return Err(invalid(field, format!("must be {lo}..={hi}, got {v}")));
    }
    Ok(())
}

/// A llama-family transformer: token embedding, `layers` blocks of RMSNorm, multi-head
/// attention (q, k, v, o, each `dim × dim`), RMSNorm and a SwiGLU feed-forward (gate, up,
/// down), a final RMSNorm and an untied output head. The train crate defines the exact
/// parameter layout; the ledger only stores the spec and bounds its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelSpec {
    pub vocab: u32,
    pub dim: u32,
    pub layers: u16,
    pub heads: u16,
    pub ffn_dim: u32,
    pub seq_len: u32,
}

impl ModelSpec {
    /// The number of parameters of the architecture described above:
    /// `2·vocab·dim + layers·(4·dim² + 3·dim·ffn_dim + 2·dim) + dim`. Cannot overflow within the
    /// bounds of [`ModelSpec::validate`]; saturates outside them.
    pub fn params(&self) -> u64 {
        let (v, d, l, f) = (
            u64::from(self.vocab),
            u64::from(self.dim),
            u64::from(self.layers),
            u64::from(self.ffn_dim),
        );
        let per_layer = d
            .saturating_mul(d)
            .saturating_mul(4)
            .saturating_add(d.saturating_mul(f).saturating_mul(3))
            .saturating_add(d.saturating_mul(2));
        v.saturating_mul(d)
            .saturating_mul(2)
            .saturating_add(l.saturating_mul(per_layer))
            .saturating_add(d)
    }

    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        check_range(&format!("{field}.vocab"), self.vocab, 2, MAX_VOCAB)?;
        check_range(&format!("{field}.dim"), self.dim, 8, MAX_DIM)?;
        check_range(&format!("{field}.heads"), self.heads, 1, MAX_HEADS)?;
        check_range(&format!("{field}.layers"), self.layers, 1, MAX_LAYERS)?;
        check_range(&format!("{field}.ffn_dim"), self.ffn_dim, 8, MAX_FFN_DIM)?;
        check_range(&format!("{field}.seq_len"), self.seq_len, 2, MAX_SEQ_LEN)?;
        if self.dim % u32::from(self.heads) != 0 {
            return Err(invalid(
                &format!("{field}.dim"),
                format!("{} is not divisible by heads ({})", self.dim, self.heads),
            ));
        }
        let params = self.params();
        if params > MAX_PARAMS {
            return Err(invalid(field, format!("{params} parameters; at most {MAX_PARAMS}")));
        }
        Ok(())
    }
}

/// How a worker compresses its pseudo-gradient before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Compression {
    /// Every entry quantized to 8 bits.
    Int8,
    /// The `per_mille` ‰ largest entries, with error feedback.
    TopK { per_mille: u16 },
    /// Top-k, then the kept entries quantized to 8 bits.
    TopKInt8 { per_mille: u16 },
}

impl Compression {
    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        match self {
            Compression::Int8 => Ok(()),
            Compression::TopK { per_mille } | Compression::TopKInt8 { per_mille } => {
                check_range(&format!("{field}.per_mille"), *per_mille, 1, PER_MILLE)
            }
        }
    }
}

/// Hyper-parameters of a job, all integers (the worker converts to floats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainParams {
    /// H: inner (local AdamW) steps per round.
    pub inner_steps: u32,
    /// Steps per audited segment; divides `inner_steps`. A round has
    /// `inner_steps / segment_steps` segments plus the compression step.
    pub segment_steps: u32,
    /// Sequences per inner step.
    pub batch: u32,
    /// Inner learning rate × 10⁶.
    pub inner_lr_micro: u32,
    /// Inner weight decay × 10⁶.
    pub weight_decay_micro: u32,
    /// Outer (Nesterov) learning rate × 10³.
    pub outer_lr_milli: u32,
    /// Outer momentum × 10³, below 1000.
    pub outer_momentum_milli: u32,
    pub compression: Compression,
    pub seed: u64,
}

impl TrainParams {
    /// Segments of a round's training, `K = inner_steps / segment_steps`; segment index `K` is
    /// the compression step.
    pub fn segments(&self) -> u32 {
        self.inner_steps.checked_div(self.segment_steps).unwrap_or(0)
    }

    /// Boundary hashes of a round's trace, `K + 1`: the state before step 0, then after each
    /// training segment ([`trace_root`]).
    pub fn trace_len(&self) -> usize {
        self.segments() as usize + 1
    }

    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        check_range(&format!("{field}.inner_steps"), self.inner_steps, 1, MAX_INNER_STEPS)?;
        check_range(
            &format!("{field}.segment_steps"),
            self.segment_steps,
            1,
            self.inner_steps,
        )?;
        if self.inner_steps % self.segment_steps != 0 {
            return Err(invalid(
                &format!("{field}.segment_steps"),
                format!(
                    "{} does not divide inner_steps ({})",
                    self.segment_steps, self.inner_steps
                ),
            ));
        }
        check_range(&format!("{field}.batch"), self.batch, 1, MAX_BATCH)?;
        check_range(&format!("{field}.inner_lr_micro"), self.inner_lr_micro, 1, MAX_MICRO)?;
        check_range(
            &format!("{field}.weight_decay_micro"),
            self.weight_decay_micro,
            0,
            MAX_MICRO,
        )?;
        check_range(
            &format!("{field}.outer_lr_milli"),
            self.outer_lr_milli,
            1,
            MAX_OUTER_LR_MILLI,
        )?;
        check_range(
            &format!("{field}.outer_momentum_milli"),
            self.outer_momentum_milli,
            0,
            999,
        )?;
        self.compression.validate(&format!("{field}.compression"))
    }
}

/// Blocks each phase of a round lasts at most (a phase may end early: see the ledger's
/// training module). `dispute` is the window, after a failing audit, in which its target may
/// dispute it, and after a dispute opens, in which the referees answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseBlocks {
    pub train: u32,
    pub commit: u32,
    pub reveal: u32,
    pub audit: u32,
    pub dispute: u32,
    pub aggregate: u32,
}

impl PhaseBlocks {
    /// Σ of every phase (disputes counted twice: the target's window and the referees').
    pub fn round_blocks(&self) -> u64 {
        [
            self.train,
            self.commit,
            self.reveal,
            self.audit,
            self.dispute,
            self.dispute,
            self.aggregate,
        ]
        .iter()
        .map(|b| u64::from(*b))
        .sum()
    }

    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        for (name, v) in [
            ("train", self.train),
            ("commit", self.commit),
            ("reveal", self.reveal),
            ("audit", self.audit),
            ("dispute", self.dispute),
            ("aggregate", self.aggregate),
        ] {
            if v == 0 {
                return Err(invalid(&format!("{field}.{name}"), "must be at least 1 block"));
            }
        }
        if self.round_blocks() > MAX_ROUND_BLOCKS {
            return Err(invalid(
                field,
                format!(
                    "a round may last at most {MAX_ROUND_BLOCKS} blocks, these phases {}",
                    self.round_blocks()
                ),
            ));
        }
        Ok(())
    }
}

/// A training job as its owner opens it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSpec {
    pub name: String,
    pub model: ModelSpec,
    /// Root of a registered dataset.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub dataset: Hash32,
    /// Hash of the checkpoint round 0 trains from.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub init_checkpoint: Hash32,
    pub params: TrainParams,
    pub min_workers: u16,
    pub max_workers: u16,
    pub rounds: u32,
    pub phases: PhaseBlocks,
    /// Paid out over the rounds, in proportion to verified tokens.
    pub budget: Coin,
    /// What each worker locks to join, in the budget's denomination.
    pub bond: Coin,
    /// The chance, in per mille (0..=1000), that a revealed worker has its round replayed by
    /// an auditor ([`draw_audits`]). 0 means no random audits; workers revealing the same
    /// update as another are audited whatever this says, since the ledger sees the copy itself.
    pub audit_per_mille: u16,
    /// Referees a dispute draws (odd, so a full panel always has a majority).
    pub referees: u16,
}

impl JobSpec {
    /// Tokens a worker's round verifies: `inner_steps × batch × seq_len`. An upheld audit
    /// replays the whole round, so it verifies as many.
    pub fn round_tokens(&self) -> u128 {
        u128::from(self.params.inner_steps) * u128::from(self.params.batch) * u128::from(self.model.seq_len)
    }

    /// How many state hashes a failing verdict on `segment` holds: `segment_steps` for a
    /// training segment (`segment < K`), [`COMPRESSION_STEPS`] for the compression step
    /// (`segment == K`); `None` past it.
    pub fn verdict_steps(&self, segment: u32) -> Option<usize> {
        let k = self.params.segments();
        if segment < k {
            Some(self.params.segment_steps as usize)
        } else if segment == k {
            Some(COMPRESSION_STEPS)
        } else {
            None
        }
    }

    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        validate_name(&format!("{field}.name"), &self.name, limits::MAX_NAME_LEN)?;
        self.model.validate(&format!("{field}.model"))?;
        self.params.validate(&format!("{field}.params"))?;
        self.phases.validate(&format!("{field}.phases"))?;
        check_range(&format!("{field}.min_workers"), self.min_workers, 1, MAX_WORKERS)?;
        check_range(
            &format!("{field}.max_workers"),
            self.max_workers,
            self.min_workers,
            MAX_WORKERS,
        )?;
        check_range(&format!("{field}.rounds"), self.rounds, 1, MAX_ROUNDS)?;
        if self.budget.amount == 0 {
            return Err(invalid(&format!("{field}.budget"), "must be greater than zero"));
        }
        if self.bond.amount == 0 {
            return Err(invalid(&format!("{field}.bond"), "must be greater than zero"));
        }
        if self.bond.denom != self.budget.denom {
            return Err(invalid(
                &format!("{field}.bond"),
                format!("must be in the budget's denomination {}", self.budget.denom),
            ));
        }
        check_range(&format!("{field}.audit_per_mille"), self.audit_per_mille, 0, PER_MILLE)?;
        check_range(&format!("{field}.referees"), self.referees, 1, MAX_REFEREES)?;
        if self.referees % 2 == 0 {
            return Err(invalid(&format!("{field}.referees"), "must be odd"));
        }
        Ok(())
    }
}

/// Someone who contributed chunks to a dataset.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contributor {
    pub address: Address,
    pub chunks: u32,
}

/// A dataset: the Merkle root of its content-addressed chunks and who contributed them.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetSpec {
    pub name: String,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub root: Hash32,
    pub chunks: u32,
    pub bytes: u64,
    pub contributors: Vec<Contributor>,
}

impl DatasetSpec {
    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        validate_name(&format!("{field}.name"), &self.name, limits::MAX_NAME_LEN)?;
        if self.chunks == 0 {
            return Err(invalid(&format!("{field}.chunks"), "must be at least 1"));
        }
        if self.bytes < u64::from(self.chunks) {
            return Err(invalid(
                &format!("{field}.bytes"),
                "every chunk holds at least one byte",
            ));
        }
        if self.contributors.is_empty() || self.contributors.len() > MAX_CONTRIBUTORS {
            return Err(invalid(
                &format!("{field}.contributors"),
                format!("must name 1-{MAX_CONTRIBUTORS} contributors"),
            ));
        }
        let mut sum = 0u64;
        for (i, c) in self.contributors.iter().enumerate() {
            if c.chunks == 0 {
                return Err(invalid(
                    &format!("{field}.contributors[{i}].chunks"),
                    "must be at least 1",
                ));
            }
            if self.contributors[..i].iter().any(|o| o.address == c.address) {
                return Err(invalid(&format!("{field}.contributors[{i}]"), "duplicate address"));
            }
            sum += u64::from(c.chunks);
        }
        if sum != u64::from(self.chunks) {
            return Err(invalid(
                &format!("{field}.contributors"),
                format!("contributed chunks sum to {sum}, the dataset has {}", self.chunks),
            ));
        }
        Ok(())
    }
}

/// An auditor's verdict on a worker's round, which it replayed whole.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Verdict {
    /// Every segment boundary and the compression step matched the worker's trace, update and
    /// `ef_out`. `digest` is the digest of the losses of every inner step of the round, which
    /// only a replay of the whole round yields (the worker publishes only its
    /// [`loss_seal`]): the ledger accepts the pass only if it opens the target's seal, so an
    /// auditor cannot pass a round it did not replay.
    Pass {
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        digest: Hash32,
    },
    /// The replay did not match. `segment` is the first segment whose end differs from the
    /// target's trace (`0..K` a training segment, `K = inner_steps / segment_steps` the
    /// compression step); `steps` the auditor's hash of the state after each step of that
    /// segment: exactly `segment_steps` of them for a training segment, and for the compression
    /// step exactly two, `[update hash, ef_out hash]` ([`JobSpec::verdict_steps`]); `trace` the
    /// target's `K + 1` boundary hashes as the auditor fetched them.
    ///
    /// The ledger accepts it only as proof of a real mismatch with what the target committed:
    /// `trace` must hash ([`trace_root`]) to the target's revealed `trace`, and the auditor's
    /// segment must end elsewhere than the committed boundary (`steps.last() != trace[s + 1]`),
    /// or for the compression step `steps != [update, ef_out]` as revealed. So an honest
    /// target can always dispute a failing verdict: its own hashes of the same steps differ
    /// from the auditor's. Referees replay the segment from its start state (which the target
    /// serves) up to the first step where they differ.
    Fail {
        segment: u32,
        #[serde(with = "hex_hashes")]
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::openapi::Hash>))]
        steps: Vec<Hash32>,
        #[serde(with = "hex_hashes")]
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::openapi::Hash>))]
        trace: Vec<Hash32>,
    },
    /// The auditor could not obtain what the target committed to (its trace, or the residual
    /// blob its round starts from), or its replay matched every boundary but not the target's
    /// loss seal (which the target alone chose), so it can neither pass nor prove a failure. The target is
    /// left out of the round; nobody is slashed and the auditor is not paid for the audit.
    /// Whether data was served cannot be judged by the ledger, so this costs a lying auditor
    /// nothing but earns it nothing either, while an honest worker loses one round's pay.
    Unavailable,
}

/// Checks a list of state hashes of a verdict or a dispute.
pub fn validate_steps(field: &str, steps: &[Hash32]) -> Result<(), SpecError> {
    if steps.is_empty() || steps.len() > MAX_VERDICT_STEPS {
        return Err(invalid(field, format!("must hold 1-{MAX_VERDICT_STEPS} state hashes")));
    }
    Ok(())
}

/// Checks a vote's `left_out`: at most [`MAX_WORKERS`] addresses, strictly ascending (one
/// canonical form per set, so equal sets are equal votes).
pub fn validate_left_out(field: &str, left_out: &[Address]) -> Result<(), SpecError> {
    if left_out.len() > usize::from(MAX_WORKERS) {
        return Err(invalid(field, format!("must name at most {MAX_WORKERS} workers")));
    }
    if left_out.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(field, "must be in strictly ascending address order"));
    }
    Ok(())
}

/// Checks the boundary hashes of a failing verdict's trace: at least two (a round has at least
/// one training segment), at most [`MAX_TRACE_HASHES`].
pub fn validate_trace(field: &str, trace: &[Hash32]) -> Result<(), SpecError> {
    if trace.len() < 2 || trace.len() > MAX_TRACE_HASHES {
        return Err(invalid(
            field,
            format!("must hold 2-{MAX_TRACE_HASHES} boundary hashes"),
        ));
    }
    Ok(())
}

impl Verdict {
    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        match self {
            Verdict::Pass { .. } | Verdict::Unavailable => Ok(()),
            Verdict::Fail { segment, steps, trace } => {
                // A segment index past every job's last segment is malformed whatever the job.
                check_range(&format!("{field}.segment"), *segment, 0, MAX_INNER_STEPS)?;
                validate_steps(&format!("{field}.steps"), steps)?;
                validate_trace(&format!("{field}.trace"), trace)
            }
        }
    }
}

/// `SHA-256("pazar/train/trace/v1\0" ‖ count (u32 LE) ‖ hashes)`: the commitment to a round's
/// boundary hashes that a worker reveals as its `trace`. The list holds `K + 1` hashes
/// ([`TrainParams::trace_len`]): the state before step 0, then after each training segment.
/// An auditor fetches the list from the worker and checks it against this root.
pub fn trace_root(trace: &[Hash32]) -> Hash32 {
    // Lists reaching the ledger hold at most MAX_TRACE_HASHES (a compile-time assert keeps it
    // below u32::MAX); a longer one could not be held in memory.
    debug_assert!(trace.len() <= u32::MAX as usize);
    let mut h = Sha256::new();
    h.update(TRACE_DOMAIN);
    h.update((trace.len() as u32).to_le_bytes());
    for t in trace {
        h.update(t);
    }
    h.finalize().into()
}

/// A hasher fed `domain ‖ job (u64 LE) ‖ round (u32 LE) ‖ Borsh(worker)`: the start of every
/// hash that binds one worker's round.
fn worker_hasher(domain: &[u8], job: u64, round: u32, worker: &Address) -> Sha256 {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(job.to_le_bytes());
    h.update(round.to_le_bytes());
    h.update(borsh::to_vec(worker).expect("encoding into a Vec cannot fail"));
    h
}

/// `SHA-256("pazar/train/commit/v1\0" ‖ job (u64 LE) ‖ round (u32 LE) ‖ Borsh(worker) ‖ update ‖
/// trace ‖ ef_in ‖ ef_out ‖ seal)`: what a worker commits in its round's train or commit phase
/// and must open with `RevealUpdate`. `update` is the hash of the compressed pseudo-gradient
/// blob, `trace` the [`trace_root`] of its segment boundary hashes, `ef_in`/`ef_out` the hashes
/// of the compression residual carried in and out (error feedback), `seal` the [`loss_seal`] of
/// its loss digest.
pub fn update_commitment(job: u64, round: u32, worker: &Address, r: &Reveal) -> Hash32 {
    let mut h = worker_hasher(COMMIT_DOMAIN, job, round, worker);
    h.update(r.update);
    h.update(r.trace);
    h.update(r.ef_in);
    h.update(r.ef_out);
    h.update(r.seal);
    h.finalize().into()
}

/// `SHA-256("pazar/train/seal/v1\0" ‖ job (u64 LE) ‖ round (u32 LE) ‖ Borsh(worker) ‖ digest)`:
/// what a worker reveals of the digest of its round's per-step losses. It names the worker, so
/// a digest made public by one pass opens no other worker's seal (a copier that copies another's
/// whole reveal, seal included, cannot be passed with the digest of the original's pass). The
/// digest stays with the worker; an auditor that replays the round computes it and opens the seal with [`Verdict::Pass`]. A pre-image of a hash of 32 unknown
/// bytes cannot be guessed, so a pass that opens the seal proves the replay was done (or that
/// the target told the auditor, which collusion can always do).
pub fn loss_seal(job: u64, round: u32, worker: &Address, digest: &Hash32) -> Hash32 {
    let mut h = worker_hasher(SEAL_DOMAIN, job, round, worker);
    h.update(digest);
    h.finalize().into()
}

/// One revealed update of a round, as the beacon and the audit draw read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RevealedUpdate {
    pub worker: Address,
    #[serde(with = "hex_array")]
    pub update: Hash32,
    #[serde(with = "hex_array")]
    pub trace: Hash32,
}

/// `SHA-256("pazar/train/beacon/v1\0" ‖ job (u64 LE) ‖ round (u32 LE) ‖ for each revealed update
/// in address order: Borsh(worker) ‖ update ‖ trace)`. Known only once reveal closes; every
/// input was committed before, so nobody can steer it but by withholding a reveal (which costs
/// its whole bond). `revealed` may come in any order.
pub fn round_beacon(job: u64, round: u32, revealed: &[RevealedUpdate]) -> Hash32 {
    let mut sorted: Vec<&RevealedUpdate> = revealed.iter().collect();
    sorted.sort_by_key(|r| r.worker);
    let mut h = Sha256::new();
    h.update(BEACON_DOMAIN);
    h.update(job.to_le_bytes());
    h.update(round.to_le_bytes());
    for r in sorted {
        h.update(borsh::to_vec(&r.worker).expect("encoding into a Vec cannot fail"));
        h.update(r.update);
        h.update(r.trace);
    }
    h.finalize().into()
}

/// One audit of a round: `auditor` replays `target`'s whole round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditAssignment {
    pub target: Address,
    pub auditor: Address,
}

/// The `i`-th draw of a stream seeded by `seed`: a number below `n` (`n > 0`). The modulo's bias
/// is below `n / 2⁶⁴`, nothing against a 256-worker job.
fn pick(seed: &Hash32, label: &[u8], i: u32, n: usize) -> usize {
    debug_assert!(n > 0);
    let mut h = Sha256::new();
    h.update(seed);
    h.update(label);
    h.update(i.to_le_bytes());
    let d: Hash32 = h.finalize().into();
    let mut x = [0u8; 8];
    x.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(x) % n as u64) as usize
}

/// Who audits whom in a round, from its beacon. Pure and deterministic. Workers are taken in
/// address order; the `i`-th (from 0) is a target when
/// - its `update` equals another worker's (a copy: always audited), or
/// - `pick(beacon, "target", i, 1000) < audit_per_mille` (`SHA-256(beacon ‖ "target" ‖ i
///   (u32 LE))`, its first 8 bytes as a little-endian u64, modulo 1000): each worker
///   independently with probability `audit_per_mille / 1000`.
///
/// The auditor of the `i`-th worker is drawn (`SHA-256(beacon ‖ "auditor" ‖ i)`) from the other
/// workers that did not reveal the same update; a target nobody can audit (one worker, or only
/// its copies) gets no assignment. `revealed` may come in any order; the result is in address
/// order of the targets.
pub fn draw_audits(beacon: &Hash32, revealed: &[RevealedUpdate], audit_per_mille: u16) -> Vec<AuditAssignment> {
    let mut workers: Vec<RevealedUpdate> = revealed.to_vec();
    workers.sort_by_key(|r| r.worker);
    workers.dedup_by(|a, b| a.worker == b.worker);
    let copied = |w: &RevealedUpdate| workers.iter().filter(|o| o.update == w.update).nth(1).is_some();
    let mut out = Vec::new();
    for (i, t) in workers.iter().enumerate() {
        let i = i as u32;
        let drawn = pick(beacon, b"target", i, usize::from(PER_MILLE)) < usize::from(audit_per_mille);
        if !(copied(t) || drawn) {
            continue;
        }
        let candidates: Vec<&RevealedUpdate> = workers
            .iter()
            .filter(|w| w.worker != t.worker && w.update != t.update)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let auditor = candidates[pick(beacon, b"auditor", i, candidates.len())].worker;
        out.push(AuditAssignment {
            target: t.worker,
            auditor,
        });
    }
    out
}

/// The referees of a dispute about `target`'s audit: up to `count` distinct addresses drawn
/// from `candidates` (the round's other revealed workers, neither the target nor its auditor;
/// any order) by the stream seeded with `SHA-256(beacon ‖ "referee" ‖ Borsh(target))`. Fewer
/// candidates than `count`: all of them. The result is in draw order.
pub fn draw_referees(beacon: &Hash32, target: &Address, candidates: &[Address], count: u16) -> Vec<Address> {
    let mut seed = Sha256::new();
    seed.update(beacon);
    seed.update(b"referee");
    seed.update(borsh::to_vec(target).expect("encoding into a Vec cannot fail"));
    let seed: Hash32 = seed.finalize().into();
    let mut pool: Vec<Address> = candidates.to_vec();
    pool.sort();
    pool.dedup();
    let mut out = Vec::new();
    for i in 0..u32::from(count) {
        if pool.is_empty() {
            break;
        }
        let j = pick(&seed, b"draw", i, pool.len());
        out.push(pool.remove(j));
    }
    out
}

/// The first index where two lists of state hashes differ (`None`: they agree where both have
/// entries and have the same length).
pub fn first_divergence(a: &[Hash32], b: &[Hash32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

// ---------------------------------------------------------------------------------------------
// Records the ledger keeps (served to workers and clients).

/// A registered dataset.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetRecord {
    pub spec: DatasetSpec,
    pub registrant: Address,
    pub height: u64,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `min_workers` members (before round 0, or when too few remain).
    Recruiting,
    /// A round is in progress.
    Running,
    /// Every round ran (or the escrow is empty): paid out and refunded.
    Finished,
    /// Cancelled by its owner while recruiting: refunded.
    Cancelled,
}

/// The phase of a running job's current round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Train,
    Commit,
    Reveal,
    Audit,
    Aggregate,
}

/// A training job as the ledger keeps it. `budget = escrow + paid + take + refunded` always;
/// the training escrow module holds `escrow + bonds` for every job.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainJob {
    pub owner: Address,
    pub spec: JobSpec,
    pub state: JobState,
    pub opened_at: u64,
    /// The current round (Running), or the round that starts next (Recruiting).
    pub round: u32,
    pub phase: Phase,
    /// First height of the current round.
    pub round_start: u64,
    /// Height at whose end the current phase ends (indexed while Running).
    pub deadline: u64,
    /// Last height at which audits of the current round may be posted.
    pub audit_deadline: u64,
    /// The current round's beacon, once reveal closed.
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::Hash>))]
    pub beacon: Option<Hash32>,
    /// The latest checkpoint (`init_checkpoint` until a round succeeds).
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub checkpoint: Hash32,
    /// The round that produced `checkpoint` (`None`: the initial one).
    pub checkpoint_round: Option<u32>,
    /// Budget not yet paid out.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub escrow: u128,
    /// Σ of the members' bonds.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub bonds: u128,
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub paid: u128,
    /// Take fees of the payouts (to the fee pool).
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub take: u128,
    /// Budget returned to the owner.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub refunded: u128,
    /// Members, leaving ones included.
    pub members: u16,
    /// Workers of the current round, and how many committed, revealed, and are included.
    pub round_workers: u16,
    pub committed: u16,
    pub revealed: u16,
    pub included: u16,
    /// Rounds that ended with a checkpoint, and without.
    pub rounds_ok: u32,
    pub rounds_failed: u32,
}

/// A worker of a job.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// Bond held (less after a withheld reveal's slash).
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub bond: u128,
    pub blob_uri: String,
    pub joined_at: u64,
    /// The first round the member takes part in (a member joining mid-round waits for the next).
    pub active_from: u32,
    /// Hash of the compression residual it carried out of the last round it was included in
    /// (zero before): the next reveal's `ef_in` must equal it.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub ef_out: Hash32,
    /// Consecutive rounds without a commitment; at [`MAX_MISSES`] the member is removed.
    pub missed: u32,
    /// Audits assigned to it that it never posted.
    pub audits_missed: u32,
    /// Asked to leave: bond returned when its round settles.
    pub leaving: bool,
}

/// Consecutive rounds without a commitment after which a member is removed (bond returned).
pub const MAX_MISSES: u32 = 3;

/// One worker's part in one round.
#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoundWork {
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::Hash>))]
    pub commitment: Option<Hash32>,
    pub reveal: Option<Reveal>,
    /// Left out of the round's checkpoint (withheld, caught, or undecided).
    pub excluded: bool,
    #[serde(with = "hex_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::Hash>))]
    pub vote: Option<Hash32>,
    /// The included workers whose updates the vote left out (unfetchable), in address order.
    #[serde(default)]
    pub left_out: Vec<Address>,
}

/// An opened commitment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reveal {
    /// Hash of the compressed pseudo-gradient blob.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub update: Hash32,
    /// [`trace_root`] of the round's `K + 1` segment boundary hashes, which the worker serves.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub trace: Hash32,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub ef_in: Hash32,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub ef_out: Hash32,
    /// [`loss_seal`] of the worker's loss digest for the round; a passing audit opens it.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub seal: Hash32,
}

/// An open dispute of a failing audit.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dispute {
    /// The target's state hashes.
    #[serde(with = "hex_hashes")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::openapi::Hash>))]
    pub steps: Vec<Hash32>,
    /// The first index where they differ from the auditor's.
    pub index: u32,
    pub opened_at: u64,
    pub referees: Vec<Address>,
    /// What each referee posted, in posting order.
    pub answers: Vec<RefereeAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefereeAnswer {
    pub referee: Address,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub hash: Hash32,
}

/// How an audit settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The auditor posted nothing: not paid, counted in its record.
    Missing,
    Pass,
    /// Fail undisputed, or the referees sided with the auditor: the target was slashed.
    Caught,
    /// The referees sided with the target: the auditor was slashed.
    Overturned,
    /// Disputed without a majority (or without referees): the target is excluded, nobody is
    /// slashed and the auditor is not paid.
    Undecided,
    /// The auditor posted [`Verdict::Unavailable`]: the target is excluded, nobody is slashed
    /// and the auditor is not paid. An auditor can cost an honest worker one round's pay this
    /// way but gains nothing by it; the ledger cannot judge whether data was served.
    Unavailable,
}

/// One audit of a round.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    pub auditor: Address,
    pub verdict: Option<Verdict>,
    pub posted_at: Option<u64>,
    pub dispute: Option<Dispute>,
    /// Set when the audit phase settles.
    pub outcome: Option<AuditOutcome>,
}

/// An included update of a round's provenance record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncludedUpdate {
    pub worker: Address,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub update: Hash32,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub trace: Hash32,
}

/// An audit as the provenance record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditSummary {
    pub target: Address,
    pub auditor: Address,
    pub outcome: AuditOutcome,
}

/// The provenance of one checkpoint: the round that made it, from what, with whose updates,
/// checked by which audits. Walk `previous_round` back to `None` (then `previous` is the job's
/// `init_checkpoint`) to reach the start; `dataset` names the data.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoundRecord {
    pub job: u64,
    pub round: u32,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub checkpoint: Hash32,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub previous: Hash32,
    pub previous_round: Option<u32>,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub dataset: Hash32,
    pub included: Vec<IncludedUpdate>,
    /// Workers that passed their audits (or were not drawn) but whose update the majority's
    /// vote left out, because its voters could not fetch it: unpaid for it, in address order.
    #[serde(default)]
    pub unserved: Vec<Address>,
    pub audits: Vec<AuditSummary>,
    pub height: u64,
}

/// Why a bond was slashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SlashReason {
    /// Committed and did not reveal: the whole bond (withholding must cost what being caught
    /// costs: the last revealer can compute the audit draw with and without its reveal).
    WithheldReveal,
    /// Its audited segment failed (undisputed, or the referees agreed): the whole bond.
    FailedAudit,
    /// Its failing verdict was overturned by the referees: the whole bond.
    FalseAudit,
}

/// Why a member left a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It asked to (`LeaveJob`).
    Left,
    /// [`MAX_MISSES`] rounds in a row without a commitment.
    Missed,
    /// Its whole bond was slashed.
    Slashed,
    /// The job finished or was cancelled.
    JobEnded,
}

/// Serde helper: a list of 32-byte hashes as hex strings.
pub mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::tx::Hash32;

    pub fn serialize<S: Serializer>(v: &[Hash32], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(hex::encode).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash32>, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        raw.iter()
            .map(|s| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim_start_matches("0x"), &mut out).map_err(serde::de::Error::custom)?;
                Ok(out)
            })
            .collect()
    }
}

/// Serde helper: an optional 32-byte hash as a hex string or null.
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::tx::Hash32;

    pub fn serialize<S: Serializer>(v: &Option<Hash32>, s: S) -> Result<S::Ok, S::Error> {
        v.map(hex::encode).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Hash32>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        raw.map(|s| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(s.trim_start_matches("0x"), &mut out).map_err(serde::de::Error::custom)?;
            Ok(out)
        })
        .transpose()
    }
}

/// SHA-256 of a tag and f32 vectors' little-endian bytes, each prefixed by its length as a
/// little-endian u64 (so that moving a value from one vector to the next changes the hash):
/// `sha256(tag ‖ 0x00 ‖ len₀ ‖ bytes₀ ‖ len₁ ‖ bytes₁ …)`. Hashing only: nothing here does
/// float arithmetic.
pub fn f32s_hash(tag: &str, parts: &[&[f32]]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update([0u8]);
    let mut buf = Vec::with_capacity(4096);
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        for chunk in p.chunks(1024) {
            buf.clear();
            for x in chunk {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            h.update(&buf);
        }
    }
    h.finalize().into()
}

/// The name of a checkpoint, as the ledger records it: `sha256(CHECKPOINT_DOMAIN ‖ weights ‖
/// momentum)` where `weights = f32s_hash(WEIGHTS_TAG, [params])` and `momentum =
/// f32s_hash(MOMENTUM_TAG, [momentum])`. Two hashes rather than one over both vectors, so that a
/// model bundle proves its weights against the ledger's name with the momentum's hash alone,
/// without carrying the momentum (as many bytes again as the weights).
pub fn checkpoint_hash(weights: &Hash32, momentum: &Hash32) -> Hash32 {
    Sha256::new()
        .chain_update(CHECKPOINT_DOMAIN)
        .chain_update(weights)
        .chain_update(momentum)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> Address {
        Address::Native([n; 20])
    }

    fn rev(n: u8, update: u8) -> RevealedUpdate {
        RevealedUpdate {
            worker: a(n),
            update: [update; 32],
            trace: [n; 32],
        }
    }

    #[test]
    fn the_beacon_ignores_the_order_of_reveals_but_not_their_content() {
        let x = [rev(1, 1), rev(2, 2), rev(3, 3)];
        let y = [rev(3, 3), rev(1, 1), rev(2, 2)];
        assert_eq!(round_beacon(7, 1, &x), round_beacon(7, 1, &y));
        assert_ne!(round_beacon(7, 1, &x), round_beacon(7, 2, &x));
        assert_ne!(
            round_beacon(7, 1, &x),
            round_beacon(7, 1, &[rev(1, 1), rev(2, 2), rev(3, 4)])
        );
    }

    #[test]
    fn every_copy_is_audited_by_a_worker_without_the_same_update() {
        let revealed = [rev(1, 9), rev(2, 2), rev(3, 9), rev(4, 4)];
        let beacon = round_beacon(1, 0, &revealed);
        let drawn = draw_audits(&beacon, &revealed, 0);
        let targets: Vec<Address> = drawn.iter().map(|d| d.target).collect();
        assert_eq!(targets, vec![a(1), a(3)]);
        for d in &drawn {
            assert!(d.auditor == a(2) || d.auditor == a(4), "{d:?}");
        }
    }

    #[test]
    fn audits_are_drawn_per_worker_with_the_job_s_chance() {
        let revealed: Vec<RevealedUpdate> = (1..=10).map(|n| rev(n, n)).collect();
        // Copies only at 0, every worker at 1000, in address order, never auditing itself.
        for round in 0..20 {
            let beacon = round_beacon(3, round, &revealed);
            assert!(draw_audits(&beacon, &revealed, 0).is_empty());
            let all = draw_audits(&beacon, &revealed, PER_MILLE);
            let targets: Vec<Address> = all.iter().map(|d| d.target).collect();
            assert_eq!(targets, (1..=10).map(a).collect::<Vec<_>>());
            assert!(all.iter().all(|d| d.target != d.auditor));
        }
        // At 150 ‰, over 2,000 beacons of 10 workers each, about 15 % are audited. The draw is
        // deterministic, so this cannot flake; the band is wide so that it proves the rate, not
        // these beacons.
        let mut audited = 0usize;
        for round in 0..2_000u32 {
            let beacon = round_beacon(5, round, &revealed);
            let drawn = draw_audits(&beacon, &revealed, 150);
            assert!(drawn.iter().all(|d| d.target != d.auditor));
            audited += drawn.len();
        }
        let per_mille = audited * 1_000 / (2_000 * revealed.len());
        assert!((100..=200).contains(&per_mille), "{per_mille} ‰ audited");
        // One worker: nobody can audit it.
        assert!(draw_audits(&[0; 32], &revealed[..1], PER_MILLE).is_empty());
    }

    #[test]
    fn referees_are_distinct_candidates_and_as_many_as_there_are() {
        let c = [a(5), a(6), a(7)];
        let r = draw_referees(&[1; 32], &a(1), &c, 5);
        assert_eq!(r.len(), 3);
        let r1 = draw_referees(&[1; 32], &a(1), &c, 1);
        assert_eq!(r1.len(), 1);
        assert!(c.contains(&r1[0]));
        assert!(draw_referees(&[1; 32], &a(1), &[], 3).is_empty());
    }

    #[test]
    fn the_commitment_binds_every_field() {
        let r = Reveal {
            update: [4; 32],
            trace: [5; 32],
            ef_in: [6; 32],
            ef_out: [7; 32],
            seal: [8; 32],
        };
        let base = update_commitment(1, 2, &a(3), &r);
        let mut changed = Vec::new();
        for field in 0..5 {
            let mut o = r;
            let h = match field {
                0 => &mut o.update,
                1 => &mut o.trace,
                2 => &mut o.ef_in,
                3 => &mut o.ef_out,
                _ => &mut o.seal,
            };
            h[0] ^= 1;
            changed.push(update_commitment(1, 2, &a(3), &o));
        }
        changed.push(update_commitment(1, 2, &Address::Eth([3; 20]), &r));
        changed.push(update_commitment(2, 2, &a(3), &r));
        changed.push(update_commitment(1, 3, &a(3), &r));
        for (i, c) in changed.iter().enumerate() {
            assert_ne!(base, *c, "change {i} left the commitment as it was");
        }
    }

    #[test]
    fn a_votes_left_out_set_has_one_canonical_form() {
        let (x, y) = (a(1), a(2));
        assert!(validate_left_out("v", &[]).is_ok());
        assert!(validate_left_out("v", &[x, y]).is_ok());
        for bad in [vec![y, x], vec![x, x]] {
            let err = validate_left_out("v", &bad).expect_err("not strictly ascending");
            assert!(err.to_string().contains("ascending"), "{err}");
        }
        // Ascending, but one more than a job can have workers.
        let many: Vec<Address> = (0..=MAX_WORKERS)
            .map(|i| {
                let mut b = [0u8; 20];
                b[..2].copy_from_slice(&i.to_be_bytes());
                Address::Native(b)
            })
            .collect();
        let err = validate_left_out("v", &many).expect_err("too many");
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn a_seal_is_opened_only_by_its_digest() {
        let d = [9u8; 32];
        let seal = |job: u64, round: u32, w: u8, d: &[u8; 32]| loss_seal(job, round, &a(w), d);
        assert_eq!(seal(1, 2, 3, &d), seal(1, 2, 3, &[9u8; 32]));
        assert_ne!(seal(1, 2, 3, &d), seal(1, 2, 3, &[10u8; 32]));
        // The same digest seals differently for another worker, job or round.
        assert_ne!(seal(1, 2, 3, &d), seal(1, 2, 4, &d));
        assert_ne!(seal(1, 2, 3, &d), seal(2, 2, 3, &d));
        assert_ne!(seal(1, 2, 3, &d), seal(1, 3, 3, &d));
        // The seal is not the digest itself, so revealing it does not give the digest away.
        assert_ne!(seal(1, 2, 3, &d), d);
    }

    #[test]
    fn model_bounds_and_parameter_count() {
        let m = ModelSpec {
            vocab: 256,
            dim: 64,
            layers: 2,
            heads: 4,
            ffn_dim: 256,
            seq_len: 64,
        };
        // 2·256·64 + 2·(4·64² + 3·64·256 + 2·64) + 64
        assert_eq!(m.params(), 32_768 + 2 * (16_384 + 49_152 + 128) + 64);
        assert!(m.validate("m").is_ok());
        assert!(ModelSpec { heads: 3, ..m }.validate("m").is_err());
        let huge = ModelSpec {
            vocab: MAX_VOCAB,
            dim: MAX_DIM,
            layers: MAX_LAYERS,
            heads: 64,
            ffn_dim: MAX_FFN_DIM,
            seq_len: 2,
        };
        assert!(huge.validate("m").is_err());
    }

    #[test]
    fn the_trace_root_is_frozen_and_binds_count_order_and_content() {
        let trace = [[1u8; 32], [2; 32], [3; 32]];
        let mut bytes = b"pazar/train/trace/v1\0".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        for t in &trace {
            bytes.extend_from_slice(t);
        }
        let root = trace_root(&trace);
        assert_eq!(root, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(
            hex::encode(root),
            "492843fd66a64847d2448eb881b7aba5e0fb7677b80fe607593318d1f1fe76d2"
        );
        assert_ne!(root, trace_root(&[[1; 32], [3; 32], [2; 32]]));
        assert_ne!(root, trace_root(&trace[..2]));
        assert_ne!(trace_root(&[]), trace_root(&[[0; 32]]));
    }

    #[test]
    fn a_failing_verdict_bounds_its_trace_and_unavailable_has_a_stable_encoding() {
        let fail = |trace: usize| Verdict::Fail {
            segment: 0,
            steps: vec![[1; 32]],
            trace: vec![[2; 32]; trace],
        };
        assert!(fail(2).validate("v").is_ok());
        assert!(fail(MAX_TRACE_HASHES).validate("v").is_ok());
        for bad in [0, 1, MAX_TRACE_HASHES + 1] {
            let err = fail(bad).validate("v").expect_err("out of bounds");
            assert!(err.to_string().contains("v.trace"), "{err}");
        }
        assert!(Verdict::Unavailable.validate("v").is_ok());
        // Appended variants: Pass 0, Fail 1, Unavailable 2.
        assert_eq!(borsh::to_vec(&Verdict::Unavailable).expect("encodes"), vec![2]);
        let json = serde_json::to_string(&Verdict::Unavailable).expect("encodes");
        assert_eq!(json, r#"{"type":"unavailable"}"#);
        let pass = Verdict::Pass { digest: [0xab; 32] };
        let json = serde_json::to_string(&pass).expect("encodes");
        assert_eq!(json, format!(r#"{{"type":"pass","digest":"{}"}}"#, "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Verdict>(&json).expect("decodes"), pass);
        let back: Verdict = serde_json::from_str(&serde_json::to_string(&fail(3)).expect("encodes")).expect("decodes");
        assert_eq!(back, fail(3));
        let params = TrainParams {
            inner_steps: 8,
            segment_steps: 4,
            batch: 1,
            inner_lr_micro: 1,
            weight_decay_micro: 0,
            outer_lr_milli: 1,
            outer_momentum_milli: 0,
            compression: Compression::Int8,
            seed: 0,
        };
        assert_eq!(params.trace_len(), 3);
    }

    #[test]
    fn first_divergence_finds_the_first_differing_step() {
        assert_eq!(first_divergence(&[[1; 32], [2; 32]], &[[1; 32], [3; 32]]), Some(1));
        assert_eq!(first_divergence(&[[1; 32]], &[[1; 32]]), None);
        assert_eq!(first_divergence(&[[1; 32]], &[[1; 32], [2; 32]]), Some(1));
    }

    #[test]
    fn dataset_contributions_must_add_up() {
        let mut d = DatasetSpec {
            name: "tiny".into(),
            root: [1; 32],
            chunks: 3,
            bytes: 300,
            contributors: vec![
                Contributor {
                    address: a(1),
                    chunks: 2,
                },
                Contributor {
                    address: a(2),
                    chunks: 1,
                },
            ],
        };
        assert!(d.validate("d").is_ok());
        d.contributors[1].chunks = 2;
        assert!(d.validate("d").is_err());
        d.contributors[1] = Contributor {
            address: a(1),
            chunks: 1,
        };
        assert!(d.validate("d").is_err());
    }
}
