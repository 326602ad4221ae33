//! The states that cross machines, with their hashes and blobs: a worker's state during a
//! round (what an auditor replays from) and a checkpoint (what the aggregate produces).
//!
//! A blob is `magic ‖ version ‖ n (u64 LE) ‖ vectors of n little-endian f32 ‖ scalars`. Decoding
//! knows `n` from the job's model spec before it reads a byte, so a blob of any other size is
//! refused before anything is allocated, and every value must be finite.

use crate::optim::{hash_f32s, AdamState};

pub type Hash32 = [u8; 32];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    #[error("{kind} blob: expected {expected} bytes for {n} parameters, got {got}")]
    Size {
        kind: &'static str,
        n: usize,
        expected: usize,
        got: usize,
    },
    #[error("{kind} blob: wrong magic or version")]
    Magic { kind: &'static str },
    #[error("{kind} blob: declares {declared} parameters, the model has {n}")]
    Count {
        kind: &'static str,
        declared: u64,
        n: usize,
    },
    #[error("{kind} blob: value {index} is not finite")]
    NotFinite { kind: &'static str, index: usize },
    #[error("{kind} blob: inconsistent optimizer step ({0})", kind = "state")]
    Step(String),
}

/// The hash of a worker's error-feedback residual, the one thing it carries from one round to
/// its next (AdamW starts afresh each round, so an auditor can rebuild the start of any round
/// from the checkpoint and this residual alone). The ledger chains it (`ef_in`/`ef_out`) and
/// writes all zeros for "none": a residual of zeros hashes to `[0; 32]`.
pub fn ef_hash(ef: &[f32]) -> Hash32 {
    if ef.iter().all(|x| x.to_bits() == 0) {
        return [0; 32];
    }
    hash_f32s("pazar/train/ef/v1", &[ef])
}

/// A worker's state at a step of a round: the weights, AdamW's moments and the residual the
/// round started with.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerState {
    pub params: Vec<f32>,
    pub adam: AdamState,
    pub ef: Vec<f32>,
}

const STATE_MAGIC: &[u8; 8] = b"PZSTATE1";
const CKPT_MAGIC: &[u8; 8] = b"PZCKPT01";
const EF_MAGIC: &[u8; 8] = b"PZEFRES1";
const TRACE_MAGIC: &[u8; 8] = b"PZTRACE1";

/// A residual's blob (an auditor rebuilds a round's start from it and the checkpoint).
pub fn encode_ef(ef: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 4 * ef.len());
    out.extend_from_slice(EF_MAGIC);
    out.extend_from_slice(&(ef.len() as u64).to_le_bytes());
    push_f32s(&mut out, ef);
    out
}

pub fn decode_ef(bytes: &[u8], n: usize) -> Result<Vec<f32>, BlobError> {
    let expected = 16usize.saturating_add(n.saturating_mul(4));
    Reader::new("residual", bytes, n, expected, EF_MAGIC)?.f32s(n)
}

/// A round's boundary hashes (K + 1 of them), addressed by their `trace_root`.
pub fn encode_trace(trace: &[Hash32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 32 * trace.len());
    out.extend_from_slice(TRACE_MAGIC);
    out.extend_from_slice(&(trace.len() as u64).to_le_bytes());
    for h in trace {
        out.extend_from_slice(h);
    }
    out
}

/// Decodes a trace of exactly `count` hashes.
pub fn decode_trace(bytes: &[u8], count: usize) -> Result<Vec<Hash32>, BlobError> {
    let expected = 16usize.saturating_add(count.saturating_mul(32));
    Reader::new("trace", bytes, count, expected, TRACE_MAGIC)?;
    Ok(bytes[16..]
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

impl WorkerState {
    /// The start of a round: the checkpoint's weights, a fresh AdamW, the carried residual.
    pub fn start(params: Vec<f32>, ef: Vec<f32>) -> WorkerState {
        let n = params.len();
        WorkerState {
            params,
            adam: AdamState::new(n),
            ef,
        }
    }

    pub fn hash(&self) -> Hash32 {
        let a = &self.adam;
        hash_f32s(
            "pazar/train/state/v1",
            &[&self.params, &a.m, &a.v, &self.ef, &[a.b1t, a.b2t, a.step as f32]],
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let a = &self.adam;
        let mut out = Vec::with_capacity(16 + 16 * self.params.len() + 12);
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&(self.params.len() as u64).to_le_bytes());
        for v in [&self.params, &a.m, &a.v, &self.ef] {
            push_f32s(&mut out, v);
        }
        push_f32s(&mut out, &[a.b1t, a.b2t]);
        out.extend_from_slice(&a.step.to_le_bytes());
        out
    }

    /// Decodes a state blob for a model of `n` parameters (strict: size, magic, finiteness,
    /// and β powers that match the step count for the job's betas).
    pub fn decode(bytes: &[u8], n: usize, beta1: f32, beta2: f32) -> Result<WorkerState, BlobError> {
        const KIND: &str = "state";
        let expected = 16usize.saturating_add(n.saturating_mul(16)).saturating_add(12);
        let mut r = Reader::new(KIND, bytes, n, expected, STATE_MAGIC)?;
        let params = r.f32s(n)?;
        let m = r.f32s(n)?;
        let v = r.f32s(n)?;
        let ef = r.f32s(n)?;
        let b = r.f32s(2)?;
        let step = r.u32();
        // The β powers are a function of the step: recompute them the way the optimizer does
        // and refuse anything else, so a state cannot smuggle in a different bias correction.
        let (mut b1t, mut b2t) = (1.0f32, 1.0f32);
        for _ in 0..step.min(1_000_000) {
            b1t *= beta1;
            b2t *= beta2;
        }
        if step > 1_000_000 || b1t.to_bits() != b[0].to_bits() || b2t.to_bits() != b[1].to_bits() {
            return Err(BlobError::Step(format!(
                "step {step} does not match its bias-correction powers"
            )));
        }
        Ok(WorkerState {
            params,
            adam: AdamState { m, v, step, b1t, b2t },
            ef,
        })
    }
}

/// The job's model after a round: the weights and the outer optimizer's momentum.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub params: Vec<f32>,
    pub momentum: Vec<f32>,
}

impl Checkpoint {
    /// A starting checkpoint: these weights, no momentum.
    pub fn initial(params: Vec<f32>) -> Checkpoint {
        let n = params.len();
        Checkpoint {
            params,
            momentum: vec![0.0; n],
        }
    }

    pub fn hash(&self) -> Hash32 {
        use pazar_types::train::{checkpoint_hash, MOMENTUM_TAG, WEIGHTS_TAG};
        checkpoint_hash(
            &hash_f32s(WEIGHTS_TAG, &[&self.params]),
            &hash_f32s(MOMENTUM_TAG, &[&self.momentum]),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * self.params.len());
        out.extend_from_slice(CKPT_MAGIC);
        out.extend_from_slice(&(self.params.len() as u64).to_le_bytes());
        push_f32s(&mut out, &self.params);
        push_f32s(&mut out, &self.momentum);
        out
    }

    pub fn decode(bytes: &[u8], n: usize) -> Result<Checkpoint, BlobError> {
        let expected = 16usize.saturating_add(n.saturating_mul(8));
        let mut r = Reader::new("checkpoint", bytes, n, expected, CKPT_MAGIC)?;
        let params = r.f32s(n)?;
        let momentum = r.f32s(n)?;
        Ok(Checkpoint { params, momentum })
    }
}

fn push_f32s(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

struct Reader<'a> {
    kind: &'static str,
    bytes: &'a [u8],
    at: usize,
    read: usize,
}

impl<'a> Reader<'a> {
    /// Checks the whole size first (so nothing is allocated for a blob of the wrong size),
    /// then the magic and the declared count.
    fn new(kind: &'static str, bytes: &'a [u8], n: usize, expected: usize, magic: &[u8; 8]) -> Result<Self, BlobError> {
        if bytes.len() != expected {
            return Err(BlobError::Size {
                kind,
                n,
                expected,
                got: bytes.len(),
            });
        }
        if &bytes[..8] != magic {
            return Err(BlobError::Magic { kind });
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[8..16]);
        let declared = u64::from_le_bytes(count);
        if declared != n as u64 {
            return Err(BlobError::Count { kind, declared, n });
        }
        Ok(Reader {
            kind,
            bytes,
            at: 16,
            read: 0,
        })
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, BlobError> {
        let mut out = Vec::with_capacity(n);
        for c in self.bytes[self.at..self.at + 4 * n].chunks_exact(4) {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if !x.is_finite() {
                return Err(BlobError::NotFinite {
                    kind: self.kind,
                    index: self.read + out.len(),
                });
            }
            out.push(x);
        }
        self.at += 4 * n;
        self.read += n;
        Ok(out)
    }

    fn u32(&mut self) -> u32 {
        let c = &self.bytes[self.at..self.at + 4];
        self.at += 4;
        u32::from_le_bytes([c[0], c[1], c[2], c[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{adamw_step, AdamW};

    fn state(n: usize, steps: usize) -> WorkerState {
        let mut s = WorkerState::start((0..n).map(|i| i as f32 * 0.25 - 1.0).collect(), vec![0.0; n]);
        let opt = AdamW::new(0.01, 0.0);
        for k in 0..steps {
            let mut g: Vec<f32> = (0..n).map(|i| ((i + k) % 5) as f32 - 2.0).collect();
            adamw_step(&opt, &mut s.adam, &mut s.params, &mut g);
        }
        s.ef[0] = 0.125;
        s
    }

    #[test]
    fn state_blob_round_trips_and_keeps_its_hash() {
        let s = state(7, 3);
        let back = WorkerState::decode(&s.encode(), 7, 0.9, 0.95).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.hash(), s.hash());
        assert_eq!(back.encode(), s.encode());
    }

    #[test]
    fn state_blobs_of_another_size_magic_count_or_step_are_refused() {
        let s = state(5, 2);
        let b = s.encode();
        assert!(matches!(
            WorkerState::decode(&b, 6, 0.9, 0.95),
            Err(BlobError::Size { .. })
        ));
        assert!(matches!(
            WorkerState::decode(&b[1..], 5, 0.9, 0.95),
            Err(BlobError::Size { .. })
        ));
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert!(matches!(
            WorkerState::decode(&bad, 5, 0.9, 0.95),
            Err(BlobError::Magic { .. })
        ));
        let mut nan = b.clone();
        nan[16..20].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            WorkerState::decode(&nan, 5, 0.9, 0.95),
            Err(BlobError::NotFinite { index: 0, .. })
        ));
        let mut step = b.clone();
        let l = step.len();
        step[l - 4] = 9;
        assert!(matches!(
            WorkerState::decode(&step, 5, 0.9, 0.95),
            Err(BlobError::Step(_))
        ));
        assert!(matches!(WorkerState::decode(&b, 5, 0.8, 0.95), Err(BlobError::Step(_))));
    }

    #[test]
    fn checkpoint_blob_round_trips_and_its_hash_covers_the_momentum() {
        let mut c = Checkpoint::initial(vec![1.0, -2.0, 3.5]);
        let h = c.hash();
        assert_eq!(Checkpoint::decode(&c.encode(), 3).expect("decodes"), c);
        c.momentum[1] = 1e-7;
        assert_ne!(c.hash(), h);
        assert!(matches!(
            Checkpoint::decode(&c.encode(), 4),
            Err(BlobError::Size { .. })
        ));
    }

    #[test]
    fn residual_and_trace_blobs_round_trip_and_refuse_other_sizes() {
        let ef = vec![0.5f32, -1.25, 3.0];
        assert_eq!(decode_ef(&encode_ef(&ef), 3).expect("decodes"), ef);
        assert!(matches!(decode_ef(&encode_ef(&ef), 2), Err(BlobError::Size { .. })));
        let t = vec![[1u8; 32], [2u8; 32]];
        assert_eq!(decode_trace(&encode_trace(&t), 2).expect("decodes"), t);
        assert!(matches!(
            decode_trace(&encode_trace(&t), 3),
            Err(BlobError::Size { .. })
        ));
        let mut bad = encode_trace(&t);
        bad[3] ^= 1;
        assert!(matches!(decode_trace(&bad, 2), Err(BlobError::Magic { .. })));
    }

    #[test]
    fn a_zero_residual_hashes_to_the_ledgers_none() {
        assert_eq!(ef_hash(&[0.0; 4]), [0; 32]);
        assert_ne!(ef_hash(&state(4, 1).ef), [0; 32]);
        // -0.0 is not zero bits: it is a residual like any other.
        assert_ne!(ef_hash(&[0.0, -0.0]), [0; 32]);
    }
}
