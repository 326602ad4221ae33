//! Random sequences of training messages from a few actors, with random stretches of empty
//! heights: tokens are never created or destroyed (the supply is constant and the training
//! escrow holds exactly what the jobs account for, checked by the invariants after every
//! block), nothing panics, and the same sequence gives the same state hash.

use crate::common;

use common::{coin, create_provider, key, upzr, uusd, Chain};
use pazar_ledger::invariants;
use pazar_types::train::{
    loss_seal, trace_root, update_commitment, Compression, Contributor, DatasetSpec, JobSpec, ModelSpec, PhaseBlocks,
    Reveal, TrainParams, Verdict,
};
use pazar_types::{Address, Hash32, KeyScheme, Msg, SigningKey};
use proptest::prelude::*;

const ACTORS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    Open {
        by: usize,
        audits: u16,
        rounds: u32,
    },
    Join {
        by: usize,
        job: u64,
    },
    Leave {
        by: usize,
        job: u64,
    },
    /// kind 0: own update, 1: a shared (copied) update, 2: a reveal that will not match.
    Commit {
        by: usize,
        job: u64,
        kind: u8,
    },
    Reveal {
        by: usize,
        job: u64,
        kind: u8,
    },
    /// verdict 0: pass, 1: a fail proving a mismatch, 2: unavailable; refused fails: 3 ending
    /// at the committed boundary, 4 equal to the revealed update and ef_out, 5 with a trace
    /// other than the committed one; 6 a pass whose digest does not open the target's seal.
    Audit {
        by: usize,
        job: u64,
        target: usize,
        verdict: u8,
    },
    Dispute {
        by: usize,
        job: u64,
        diverge: bool,
    },
    Referee {
        by: usize,
        job: u64,
        target: usize,
        hash: u8,
    },
    Vote {
        by: usize,
        job: u64,
        checkpoint: u8,
    },
    Cancel {
        by: usize,
        job: u64,
    },
    Skip {
        blocks: u64,
    },
    /// The next honest move of every worker of `job`'s round whose bit is set in `mask`
    /// (commit, reveal, post its audits or vote, as the phase asks), so rounds get through.
    /// Its audits post `verdict` (as in [`Op::Audit`]; 0 passes).
    Step {
        job: u64,
        mask: u8,
        verdict: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let by = 0..ACTORS;
    let job = 0..3u64;
    prop_oneof![
        1 => (by.clone(), 0..4u16, 1..4u32).prop_map(|(by, audits, rounds)| Op::Open { by, audits, rounds }),
        1 => (by.clone(), job.clone()).prop_map(|(by, job)| Op::Join { by, job }),
        1 => (by.clone(), job.clone()).prop_map(|(by, job)| Op::Leave { by, job }),
        1 => (by.clone(), job.clone(), 0..3u8).prop_map(|(by, job, kind)| Op::Commit { by, job, kind }),
        1 => (by.clone(), job.clone(), 0..3u8).prop_map(|(by, job, kind)| Op::Reveal { by, job, kind }),
        1 => (by.clone(), job.clone(), 0..ACTORS, 0..7u8).prop_map(|(by, job, target, verdict)| Op::Audit {
            by,
            job,
            target,
            verdict
        }),
        1 => (by.clone(), job.clone(), any::<bool>()).prop_map(|(by, job, diverge)| Op::Dispute { by, job, diverge }),
        1 => (by.clone(), job.clone(), 0..ACTORS, 0..3u8).prop_map(|(by, job, target, hash)| Op::Referee {
            by,
            job,
            target,
            hash
        }),
        1 => (by.clone(), job.clone(), 0..2u8).prop_map(|(by, job, checkpoint)| Op::Vote { by, job, checkpoint }),
        1 => (by, job).prop_map(|(by, job)| Op::Cancel { by, job }),
        1 => (0..8u64).prop_map(|blocks| Op::Skip { blocks }),
        3 => (0..2u64, any::<u8>(), 0..6u8).prop_map(|(job, mask, verdict)| Op::Step { job, mask, verdict }),
        8 => (0..2u64, Just(0xffu8), prop_oneof![3 => Just(0u8), 1 => 0..6u8])
            .prop_map(|(job, mask, verdict)| Op::Step { job, mask, verdict }),
    ]
}

fn spec(audits: u16, rounds: u32) -> JobSpec {
    JobSpec {
        name: "prop".into(),
        model: ModelSpec {
            vocab: 64,
            dim: 16,
            layers: 1,
            heads: 2,
            ffn_dim: 32,
            seq_len: 8,
        },
        dataset: [1; 32],
        init_checkpoint: [2; 32],
        params: TrainParams {
            inner_steps: 4,
            segment_steps: 2,
            batch: 2,
            inner_lr_micro: 1_000,
            weight_decay_micro: 10,
            outer_lr_milli: 700,
            outer_momentum_milli: 900,
            compression: Compression::TopK { per_mille: 10 },
            seed: 3,
        },
        min_workers: 2,
        max_workers: 4,
        rounds,
        phases: PhaseBlocks {
            train: 3,
            commit: 2,
            reveal: 3,
            audit: 3,
            dispute: 2,
            aggregate: 3,
        },
        // Odd amounts, so every division leaves dust.
        budget: coin(1_000_003, &upzr()),
        bond: coin(9_999, &upzr()),
        // None, some, most or every worker audited each round.
        audit_per_mille: [0, 300, 700, 1_000][usize::from(audits % 4)],
        referees: 1,
    }
}

/// The `K + 1` (three) boundary hashes of `by`'s round `round`.
fn trace_of(by: &Address, round: u32) -> Vec<Hash32> {
    (0..3u8)
        .map(|b| {
            [by.bytes()[0], round as u8, b, 0]
                .repeat(8)
                .try_into()
                .expect("32 bytes")
        })
        .collect()
}

/// The reveal `by` would make in `job`'s current round.
fn reveal_of(c: &Chain, by: &Address, job: u64, kind: u8) -> Option<(u32, Reveal)> {
    let j = c.state.train_job(job)?;
    let ef_in = c.state.train_member(job, by).map_or([0; 32], |m| m.ef_out);
    let mut update: Hash32 = [by.bytes()[0]; 32];
    update[1] = j.round as u8;
    if kind == 1 {
        update = [7; 32];
    }
    Some((
        j.round,
        Reveal {
            update,
            trace: trace_root(&trace_of(by, j.round)),
            ef_in,
            ef_out: [by.bytes()[1]; 32],
            seal: loss_seal(job, j.round, by, &digest_of(by, j.round)),
        },
    ))
}

/// What a replay of `by`'s round gives as its loss digest.
fn digest_of(by: &Address, round: u32) -> Hash32 {
    let mut d = [by.bytes()[2]; 32];
    d[1] = round as u8;
    d
}

fn msg(c: &Chain, keys: &[SigningKey], op: &Op) -> Option<Msg> {
    let addr = |i: usize| keys[i].address();
    let round = |job: u64| c.state.train_job(job).map_or(0, |j| j.round);
    Some(match *op {
        Op::Open { audits, rounds, .. } => Msg::OpenJob {
            spec: spec(audits, rounds),
        },
        Op::Join { job, .. } => Msg::JoinJob {
            job,
            blob_uri: "https://w.example/blobs".into(),
        },
        Op::Leave { job, .. } => Msg::LeaveJob { job },
        Op::Commit { by, job, kind } => {
            let (round, r) = reveal_of(c, &addr(by), job, kind)?;
            Msg::CommitUpdate {
                job,
                round,
                commitment: update_commitment(job, round, &addr(by), &r),
            }
        }
        Op::Reveal { by, job, kind } => {
            let (round, r) = reveal_of(c, &addr(by), job, kind)?;
            Msg::RevealUpdate {
                job,
                round,
                update: r.update,
                trace: r.trace,
                ef_in: r.ef_in,
                ef_out: if kind == 2 { [0xee; 32] } else { r.ef_out },
                seal: r.seal,
            }
        }
        Op::Audit {
            job, target, verdict, ..
        } => {
            let (round, target) = (round(job), addr(target));
            let trace = trace_of(&target, round);
            let revealed = c
                .state
                .round_work(job, round, &target)
                .and_then(|w| w.reveal)
                .map_or([[0; 32]; 2], |r| [r.update, r.ef_out]);
            let fail = |segment: u32, steps: Vec<Hash32>, trace: Vec<Hash32>| Verdict::Fail { segment, steps, trace };
            Msg::PostAudit {
                job,
                round,
                target,
                verdict: match verdict {
                    0 => Verdict::Pass {
                        digest: digest_of(&target, round),
                    },
                    // A pass without the replay: refused.
                    6 => Verdict::Pass { digest: [6; 32] },
                    1 => fail(0, vec![[1; 32], [2; 32]], trace),
                    2 => Verdict::Unavailable,
                    3 => fail(1, vec![[1; 32], trace[2]], trace),
                    4 => fail(2, revealed.to_vec(), trace),
                    _ => fail(0, vec![[1; 32], [2; 32]], trace_of(&addr(0), round)),
                },
            }
        }
        Op::Dispute { job, diverge, .. } => Msg::DisputeAudit {
            job,
            round: round(job),
            steps: vec![[1; 32], if diverge { [9; 32] } else { [2; 32] }],
        },
        Op::Referee { job, target, hash, .. } => Msg::PostReferee {
            job,
            round: round(job),
            target: addr(target),
            hash: [hash * 7 % 10; 32],
        },
        Op::Vote { job, checkpoint, .. } => Msg::PostCheckpoint {
            job,
            round: round(job),
            checkpoint: [checkpoint + 40; 32],
            left_out: Vec::new(),
        },
        Op::Cancel { job, .. } => Msg::CancelJob { job },
        Op::Skip { .. } | Op::Step { .. } => return None,
    })
}

fn by(op: &Op) -> usize {
    match *op {
        Op::Open { by, .. }
        | Op::Join { by, .. }
        | Op::Leave { by, .. }
        | Op::Commit { by, .. }
        | Op::Reveal { by, .. }
        | Op::Audit { by, .. }
        | Op::Dispute { by, .. }
        | Op::Referee { by, .. }
        | Op::Vote { by, .. }
        | Op::Cancel { by, .. } => by,
        Op::Skip { .. } | Op::Step { .. } => 0,
    }
}

/// Whether `op` posts a verdict that proves nothing (which must be refused): a failing one
/// with no mismatch, or a pass without the replay's loss digest.
fn unproven(op: &Op) -> bool {
    matches!(op, Op::Audit { verdict: 3.., .. })
}

/// The operations of an [`Op::Step`], by actor.
fn step(c: &Chain, keys: &[SigningKey], job: u64, mask: u8, verdict: u8) -> Vec<(usize, Op)> {
    use pazar_types::train::Phase;
    let Some(j) = c.state.train_job(job) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if mask & (1 << i) == 0 {
            continue;
        }
        let a = k.address();
        let Some(w) = c.state.round_work(job, j.round, &a) else {
            continue;
        };
        let op = match j.phase {
            Phase::Train | Phase::Commit if w.commitment.is_none() => Op::Commit { by: i, job, kind: 0 },
            Phase::Reveal if w.commitment.is_some() && w.reveal.is_none() => Op::Reveal { by: i, job, kind: 0 },
            Phase::Aggregate if w.vote.is_none() => Op::Vote {
                by: i,
                job,
                checkpoint: 0,
            },
            Phase::Audit => {
                for (t, audit) in c.state.train_audits(job, j.round) {
                    if audit.auditor == a && audit.verdict.is_none() {
                        let target = keys.iter().position(|k| k.address() == t).unwrap_or(0);
                        out.push((
                            i,
                            Op::Audit {
                                by: i,
                                job,
                                target,
                                verdict,
                            },
                        ));
                    }
                }
                continue;
            }
            _ => continue,
        };
        out.push((i, op));
    }
    out
}

/// Runs `ops` in blocks of up to three messages; returns the final state hash.
fn run(ops: &[Op]) -> Result<[u8; 32], TestCaseError> {
    let keys: Vec<SigningKey> = (0..ACTORS).map(|i| key(KeyScheme::Ed25519, 30 + i as u8)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let mut c = Chain::new(&refs);
    let supply = (c.state.supply_of(&upzr()), c.state.supply_of(&uusd()));
    // Every actor but the first is a provider; the first registers the dataset.
    let mut setup: Vec<Vec<u8>> = keys[1..]
        .iter()
        .map(|k| c.sign(k, vec![create_provider(vec![])]))
        .collect();
    setup.push(c.sign(
        &keys[0],
        vec![Msg::RegisterDataset {
            spec: DatasetSpec {
                name: "d".into(),
                root: [1; 32],
                chunks: 1,
                bytes: 10,
                contributors: vec![Contributor {
                    address: keys[0].address(),
                    chunks: 1,
                }],
            },
        }],
    ));
    c.block(setup);
    // Job 0 runs from the start (two joins reach min_workers); the ops may open more.
    let open = c.sign(&keys[0], vec![Msg::OpenJob { spec: spec(2, 3) }]);
    c.block(vec![open]);
    let joins = keys[1..3]
        .iter()
        .map(|k| {
            c.sign(
                k,
                vec![Msg::JoinJob {
                    job: 0,
                    blob_uri: "https://w.example/blobs".into(),
                }],
            )
        })
        .collect();
    c.block(joins);
    for chunk in ops.chunks(3) {
        let mut txs = Vec::new();
        // Per transaction: a failing verdict that proves no mismatch, which must be refused.
        let mut unproven = Vec::new();
        for op in chunk {
            if let Op::Skip { blocks } = op {
                let to = c.state.height + blocks;
                c.state.skip_to(to);
                invariants::check(&c.state).map_err(|e| TestCaseError::fail(format!("after skip: {e}")))?;
                continue;
            }
            if let Op::Step { job, mask, verdict } = op {
                for (i, op) in step(&c, &keys, *job, *mask, *verdict) {
                    if let Some(m) = msg(&c, &keys, &op) {
                        txs.push(c.sign(&keys[i], vec![m]));
                        unproven.push(self::unproven(&op));
                    }
                }
                continue;
            }
            if let Some(m) = msg(&c, &keys, op) {
                txs.push(c.sign(&keys[by(op)], vec![m]));
                unproven.push(self::unproven(op));
            }
        }
        // `Chain::block` checks every invariant after the block.
        let out = c.block(txs);
        for (r, unproven) in out.receipts.iter().zip(unproven) {
            prop_assert!(
                !(unproven && r.is_ok()),
                "a failing verdict without a mismatch was accepted"
            );
        }
    }
    // Run every job to its end: then the training escrow must be empty.
    let last = c.state.height + 40;
    c.state.skip_to(last);
    invariants::check(&c.state).map_err(TestCaseError::fail)?;
    prop_assert_eq!((c.state.supply_of(&upzr()), c.state.supply_of(&uusd())), supply);
    let held: u128 = c.state.train_jobs().map(|(_, j)| j.escrow + j.bonds).sum();
    prop_assert_eq!(c.state.balance(&c.state.train_escrow(), &upzr()), held);
    Ok(c.state.state_hash())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_training_traffic_conserves_tokens_and_replays_identically(
        ops in proptest::collection::vec(op(), 10..80)
    ) {
        let first = run(&ops)?;
        let second = run(&ops)?;
        prop_assert_eq!(first, second);
    }
}
