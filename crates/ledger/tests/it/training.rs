//! Training jobs on the ledger: one test per rule (issue 15), each through real signed blocks
//! with every invariant (supply, training escrow) checked after each block.

use crate::common;

use common::{coin, create_provider, expect_err, key, upzr, Chain};
use pazar_ledger::Receipt;
use pazar_types::train::{
    loss_seal, trace_root, update_commitment, AuditOutcome, AuditRecord, Compression, Contributor, DatasetSpec,
    JobSpec, JobState, LeaveReason, ModelSpec, Phase, PhaseBlocks, Reveal, SlashReason, TrainParams, Verdict,
};
use pazar_types::{Address, Event, KeyScheme, Msg, SigningKey};
use sha2::{Digest, Sha256};

const BOND: u128 = 10_000;
const BUDGET: u128 = 1_200_000;
const DATASET: [u8; 32] = [0xda; 32];
const INIT: [u8; 32] = [0x11; 32];

/// A job of `workers` workers and `rounds` rounds; each worker is audited with a chance of
/// `audit_per_mille` ‰. A round has two training segments of four steps and the compression
/// step (segment 2).
fn spec(workers: u16, rounds: u32, audit_per_mille: u16) -> JobSpec {
    JobSpec {
        name: "tiny-llama".into(),
        model: ModelSpec {
            vocab: 256,
            dim: 64,
            layers: 2,
            heads: 4,
            ffn_dim: 256,
            seq_len: 64,
        },
        dataset: DATASET,
        init_checkpoint: INIT,
        params: TrainParams {
            inner_steps: 8,
            segment_steps: 4,
            batch: 4,
            inner_lr_micro: 1_000,
            weight_decay_micro: 0,
            outer_lr_milli: 700,
            outer_momentum_milli: 900,
            compression: Compression::Int8,
            seed: 1,
        },
        min_workers: workers,
        max_workers: workers + 2,
        rounds,
        phases: PhaseBlocks {
            train: 4,
            commit: 2,
            reveal: 2,
            audit: 3,
            dispute: 2,
            aggregate: 3,
        },
        budget: coin(BUDGET, &upzr()),
        bond: coin(BOND, &upzr()),
        audit_per_mille,
        referees: 3,
    }
}

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

/// A job with its owner, workers (registered providers) and what each worker will reveal.
struct Job {
    c: Chain,
    owner: SigningKey,
    workers: Vec<SigningKey>,
    /// A provider that has not joined.
    spare: SigningKey,
    id: u64,
    pending: std::collections::BTreeMap<usize, Reveal>,
    /// Every event of the blocks since the job opened, transactions' and end-of-block's.
    events: Vec<Event>,
}

impl Job {
    /// `n` workers join a job opened with `spec` (round 0 starts when `min_workers` joined).
    fn new(n: usize, spec: JobSpec) -> Job {
        let owner = key(KeyScheme::Ed25519, 1);
        let workers: Vec<SigningKey> = (0..n).map(|i| key(KeyScheme::Ed25519, 10 + i as u8)).collect();
        let spare = key(KeyScheme::Ed25519, 99);
        let mut all: Vec<&SigningKey> = vec![&owner, &spare];
        all.extend(workers.iter());
        let mut c = Chain::new(&all);
        for w in workers.iter().chain([&spare]) {
            c.ok(w, vec![create_provider(vec![])]);
        }
        c.ok(
            &owner,
            vec![Msg::RegisterDataset {
                spec: DatasetSpec {
                    name: "corpus".into(),
                    root: DATASET,
                    chunks: 4,
                    bytes: 4096,
                    contributors: vec![Contributor {
                        address: owner.address(),
                        chunks: 4,
                    }],
                },
            }],
        );
        c.ok(&owner, vec![Msg::OpenJob { spec }]);
        let mut job = Job {
            c,
            owner,
            workers,
            spare,
            id: 0,
            pending: Default::default(),
            events: Vec::new(),
        };
        let joins: Vec<(usize, Msg)> = (0..n).map(|i| (i, job.join_msg())).collect();
        job.batch_ok(joins);
        job
    }

    fn join_msg(&self) -> Msg {
        Msg::JoinJob {
            job: self.id,
            blob_uri: "http://127.0.0.1:9000/blobs".into(),
        }
    }

    fn addr(&self, i: usize) -> Address {
        self.workers[i].address()
    }

    fn index(&self, a: &Address) -> usize {
        self.workers.iter().position(|w| w.address() == *a).expect("a worker")
    }

    fn state(&self) -> &pazar_types::train::TrainJob {
        self.c.state.train_job(self.id).expect("job exists")
    }

    fn round(&self) -> u32 {
        self.state().round
    }

    /// Applies a block (invariants checked) and records its events.
    fn block(&mut self, txs: Vec<Vec<u8>>) -> Vec<Receipt> {
        let out = self.c.block(txs);
        for r in &out.receipts {
            self.events.extend(r.events.iter().cloned());
        }
        self.events.extend(out.end_block_events);
        out.receipts
    }

    /// One block holding one transaction per (worker, message); the receipts in order.
    fn batch(&mut self, msgs: Vec<(usize, Msg)>) -> Vec<Receipt> {
        let txs = msgs
            .into_iter()
            .map(|(i, m)| {
                let k = self.workers[i].clone();
                self.c.sign(&k, vec![m])
            })
            .collect();
        self.block(txs)
    }

    fn batch_ok(&mut self, msgs: Vec<(usize, Msg)>) {
        for r in self.batch(msgs) {
            assert!(r.is_ok(), "tx failed: {}/{} {}", r.codespace, r.code, r.log);
        }
    }

    /// A transaction of worker `i` alone in a block.
    fn one(&mut self, i: usize, m: Msg) -> Receipt {
        self.batch(vec![(i, m)]).remove(0)
    }

    /// A transaction of `k` (the owner, the spare provider) alone in a block.
    fn by(&mut self, k: &SigningKey, m: Msg) -> Receipt {
        let tx = self.c.sign(k, vec![m]);
        self.block(vec![tx]).remove(0)
    }

    /// Empty blocks until the job is in `phase` of round `round` (at most 50).
    fn wait(&mut self, round: u32, phase: Phase) {
        for _ in 0..50 {
            let j = self.state();
            if j.state == JobState::Running && j.round == round && j.phase == phase {
                return;
            }
            self.block(Vec::new());
        }
        panic!("job never reached {phase:?} of round {round}: {:?}", self.state());
    }

    /// Empty blocks until reveal closed (a round without audits goes straight to aggregate).
    fn wait_past_reveal(&mut self) {
        for _ in 0..50 {
            if matches!(self.state().phase, Phase::Audit | Phase::Aggregate) {
                return;
            }
            self.block(Vec::new());
        }
        panic!("reveal never closed: {:?}", self.state());
    }

    /// Worker `i`'s boundary hashes in the current round: `K + 1` of them (three here).
    fn trace_of(&self, i: usize) -> Vec<[u8; 32]> {
        let round = self.round();
        (0..self.state().spec.params.trace_len())
            .map(|b| h(&[b"boundary", &round.to_le_bytes(), &[i as u8, b as u8]]))
            .collect()
    }

    /// What worker `i` reveals in the current round, with `update` as its update hash.
    fn reveal_of(&self, i: usize, update: [u8; 32]) -> Reveal {
        let round = self.round();
        let ef_in = self
            .c
            .state
            .train_member(self.id, &self.addr(i))
            .expect("member")
            .ef_out;
        Reveal {
            update,
            trace: trace_root(&self.trace_of(i)),
            ef_in,
            ef_out: h(&[b"ef", &round.to_le_bytes(), &[i as u8]]),
            seal: loss_seal(self.id, round, &self.addr(i), &self.digest_of(i)),
        }
    }

    /// The digest of worker `i`'s losses in the current round: what a replay of its round
    /// yields, and what a passing verdict on it carries.
    fn digest_of(&self, i: usize) -> [u8; 32] {
        h(&[b"losses", &self.round().to_le_bytes(), &[i as u8]])
    }

    /// A failing verdict on worker `target`'s `segment` with the auditor's `steps`, carrying the
    /// target's committed trace.
    fn fail(&self, target: usize, segment: u32, steps: &[[u8; 32]]) -> Verdict {
        Verdict::Fail {
            segment,
            steps: steps.to_vec(),
            trace: self.trace_of(target),
        }
    }

    /// The auditor of worker `target` in the current round.
    fn auditor_of(&self, target: usize) -> Address {
        let t = self.addr(target);
        self.audits()
            .into_iter()
            .find(|(a, _)| *a == t)
            .expect("the target is audited")
            .1
            .auditor
    }

    fn honest_update(&self, i: usize) -> [u8; 32] {
        h(&[b"update", &self.round().to_le_bytes(), &[i as u8]])
    }

    fn commit_msg(&self, i: usize, r: &Reveal) -> Msg {
        Msg::CommitUpdate {
            job: self.id,
            round: self.round(),
            commitment: update_commitment(self.id, self.round(), &self.addr(i), r),
        }
    }

    fn reveal_msg(&self, r: &Reveal) -> Msg {
        Msg::RevealUpdate {
            job: self.id,
            round: self.round(),
            update: r.update,
            trace: r.trace,
            ef_in: r.ef_in,
            ef_out: r.ef_out,
            seal: r.seal,
        }
    }

    /// Workers `who` commit (honest updates unless `updates` says otherwise) in one block.
    fn commit_with(&mut self, who: &[usize], update: impl Fn(&Job, usize) -> [u8; 32]) {
        let round = self.round();
        if self.state().phase != Phase::Commit {
            self.wait(round, Phase::Train);
        }
        let mut msgs = Vec::new();
        for &i in who {
            let r = self.reveal_of(i, update(self, i));
            msgs.push((i, self.commit_msg(i, &r)));
            self.pending.insert(i, r);
        }
        self.batch_ok(msgs);
    }

    fn commit(&mut self, who: &[usize]) {
        self.commit_with(who, |j, i| j.honest_update(i));
    }

    /// Workers `who` reveal what they committed, in one block of the reveal phase.
    fn reveal(&mut self, who: &[usize]) {
        let round = self.round();
        self.wait(round, Phase::Reveal);
        let msgs = who
            .iter()
            .map(|&i| {
                let r = self.pending[&i];
                (i, self.reveal_msg(&r))
            })
            .collect();
        self.batch_ok(msgs);
    }

    fn audits(&self) -> Vec<(Address, AuditRecord)> {
        self.c
            .state
            .train_audits(self.id, self.round())
            .map(|(t, a)| (t, a.clone()))
            .collect()
    }

    /// Every assigned auditor but those auditing `except` posts `Pass`, in one block.
    fn pass_all_but(&mut self, except: &[Address]) {
        let round = self.round();
        let msgs: Vec<(usize, Msg)> = self
            .audits()
            .into_iter()
            .filter(|(t, _)| !except.contains(t))
            .map(|(target, a)| {
                (
                    self.index(&a.auditor),
                    Msg::PostAudit {
                        job: self.id,
                        round,
                        target,
                        verdict: Verdict::Pass {
                            digest: self.digest_of(self.index(&target)),
                        },
                    },
                )
            })
            .collect();
        if !msgs.is_empty() {
            self.batch_ok(msgs);
        }
    }

    fn vote(&mut self, who: &[usize], checkpoint: [u8; 32]) {
        self.vote_leaving_out(who, checkpoint, &[]);
    }

    /// Workers `who` vote for `checkpoint` made without the updates of workers `left_out`.
    fn vote_leaving_out(&mut self, who: &[usize], checkpoint: [u8; 32], left_out: &[usize]) {
        let round = self.round();
        self.wait(round, Phase::Aggregate);
        let mut left_out: Vec<Address> = left_out.iter().map(|&i| self.addr(i)).collect();
        left_out.sort();
        let msgs = who
            .iter()
            .map(|&i| {
                (
                    i,
                    Msg::PostCheckpoint {
                        job: self.id,
                        round,
                        checkpoint,
                        left_out: left_out.clone(),
                    },
                )
            })
            .collect();
        self.batch_ok(msgs);
    }

    /// A whole honest round by `who`: commit, reveal, every audit passes, all vote `checkpoint`
    /// (the quorum ends aggregate in the vote's block, which settles the round).
    fn honest_round(&mut self, who: &[usize], checkpoint: [u8; 32]) {
        self.commit(who);
        self.reveal(who);
        self.wait_past_reveal();
        self.pass_all_but(&[]);
        self.vote(who, checkpoint);
    }

    /// Empty blocks until `round` begins (or the job stops running).
    fn finish_round(&mut self, round: u32) {
        for _ in 0..50 {
            let j = self.state();
            if j.state != JobState::Running || j.round > round {
                return;
            }
            self.block(Vec::new());
        }
        panic!("round {round} never settled: {:?}", self.state());
    }

    /// Rewards paid to `a` in the recorded events.
    fn rewards(&self, a: &Address) -> Vec<u128> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainRewarded { worker, paid, .. } if worker == a => Some(paid.amount),
                _ => None,
            })
            .collect()
    }

    fn slashes(&self) -> Vec<(Address, SlashReason, u128, Option<Address>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainSlashed {
                    worker,
                    reason,
                    amount,
                    to,
                    ..
                } => Some((*worker, *reason, amount.amount, *to)),
                _ => None,
            })
            .collect()
    }

    fn bal(&self, a: &Address) -> u128 {
        self.c.state.balance(a, &upzr())
    }
}

#[test]
fn an_honest_job_pays_equal_shares_returns_bonds_and_chains_its_checkpoints() {
    let mut j = Job::new(4, spec(4, 3, 0));
    let all = [0, 1, 2, 3];
    for r in 0..3u8 {
        j.honest_round(&all, [r + 1; 32]);
        j.finish_round(u32::from(r));
    }
    assert_eq!(j.state().state, JobState::Finished);
    // 400,000 a round over 4 workers, less the 4 % take.
    for i in all {
        assert_eq!(j.rewards(&j.addr(i)), vec![96_000; 3]);
        // Fees: create provider, join, and three rounds of commit, reveal and vote.
        assert_eq!(j.bal(&j.addr(i)), 1_000_000_000 - 100 * 11 + 3 * 96_000);
    }
    assert_eq!(j.bal(&j.c.state.train_escrow()), 0);
    assert_eq!(
        (j.state().paid, j.state().take, j.state().escrow),
        (1_152_000, 48_000, 0)
    );
    // The provenance chain walks from the final checkpoint back to the initial one.
    let mut at = j.state().checkpoint;
    let mut walked = 0;
    loop {
        let (job, round) = j.c.state.checkpoint_rounds(&at)[0];
        let rec = j.c.state.round_record(job, round).expect("recorded");
        assert_eq!((rec.dataset, rec.included.len()), (DATASET, 4));
        walked += 1;
        at = rec.previous;
        if rec.previous_round.is_none() {
            break;
        }
    }
    assert_eq!((walked, at), (3, INIT));
}

#[test]
fn messages_out_of_phase_twice_or_not_opening_the_commitment_are_refused() {
    let mut j = Job::new(3, spec(3, 2, 0));
    let early = j.reveal_of(0, [1; 32]);
    let m = j.reveal_msg(&early);
    expect_err(&j.one(0, m), "train", 12);
    j.commit(&[0]);
    let again = j.commit_msg(0, &j.pending[&0].clone());
    expect_err(&j.one(0, again), "train", 15);
    j.commit(&[1, 2]);
    j.wait(0, Phase::Reveal);
    // Both refusals in one block: the reveal phase lasts two.
    let late = j.commit_msg(0, &j.pending[&0].clone());
    let mut forged = j.pending[&1];
    forged.ef_out = [0xee; 32];
    let m = j.reveal_msg(&forged);
    let rs = j.batch(vec![(0, late), (1, m)]);
    expect_err(&rs[0], "train", 12);
    expect_err(&rs[1], "train", 18);
    j.reveal(&[0, 1, 2]);
    j.vote(&[0, 1, 2], [7; 32]);
    j.finish_round(0);
    // Round 1: worker 0 claims it carried no residual, though round 0 included its ef_out.
    let round = j.round();
    j.wait(round, Phase::Train);
    let mut broken = j.reveal_of(0, j.honest_update(0));
    assert_ne!(broken.ef_in, [0; 32]);
    broken.ef_in = [0; 32];
    let m = j.commit_msg(0, &broken);
    j.batch_ok(vec![(0, m)]);
    j.pending.insert(0, broken);
    j.commit(&[1, 2]);
    j.wait(round, Phase::Reveal);
    let m = j.reveal_msg(&broken);
    expect_err(&j.one(0, m), "train", 19);
}

#[test]
fn only_registered_providers_join_and_only_once() {
    let mut j = Job::new(2, spec(3, 1, 0));
    let owner = j.owner.clone();
    let m = j.join_msg();
    expect_err(&j.by(&owner, m), "train", 5);
    let m = j.join_msg();
    expect_err(&j.one(0, m), "train", 6);
    assert_eq!(j.state().state, JobState::Recruiting);
}

#[test]
fn workers_revealing_the_same_update_are_all_audited() {
    let mut j = Job::new(4, spec(4, 1, 0));
    let copied = j.honest_update(0);
    j.commit_with(
        &[0, 1, 2, 3],
        |job, i| if i == 1 { copied } else { job.honest_update(i) },
    );
    j.reveal(&[0, 1, 2, 3]);
    j.wait(0, Phase::Audit);
    let audits = j.audits();
    let targets: Vec<Address> = audits.iter().map(|(t, _)| *t).collect();
    assert_eq!(targets, {
        let mut t = vec![j.addr(0), j.addr(1)];
        t.sort();
        t
    });
    for (t, a) in &audits {
        assert!(
            a.auditor != j.addr(0) && a.auditor != j.addr(1),
            "{t} audited by a copy"
        );
    }
}

#[test]
fn an_undisputed_failing_audit_slashes_the_whole_bond_and_pays_the_auditor_half() {
    let mut j = Job::new(3, spec(3, 1, 1_000));
    j.commit(&[0, 1, 2]);
    j.reveal(&[0, 1, 2]);
    j.wait(0, Phase::Audit);
    let target = j.addr(0);
    let auditor = j
        .audits()
        .into_iter()
        .find(|(t, _)| *t == target)
        .expect("all audited")
        .1
        .auditor;
    let before = j.bal(&auditor);
    j.pass_all_but(&[target]);
    let m = Msg::PostAudit {
        job: j.id,
        round: 0,
        target,
        verdict: j.fail(0, 0, &[[1; 32], [2; 32], [3; 32], [4; 32]]),
    };
    let ai = j.index(&auditor);
    let r = j.one(ai, m);
    assert!(r.is_ok(), "{}", r.log);
    let voters: Vec<usize> = (1..3).collect();
    j.vote(&voters, [9; 32]);
    j.finish_round(0);
    assert_eq!(
        j.slashes(),
        vec![(target, SlashReason::FailedAudit, BOND, Some(auditor))]
    );
    assert!(j.rewards(&target).is_empty());
    assert_eq!(j.c.state.train_member(j.id, &target), None);
    let rec = j.c.state.round_record(j.id, 0).expect("checkpoint made");
    assert!(rec.included.iter().all(|u| u.worker != target));
    let caught = rec.audits.iter().find(|a| a.target == target).expect("recorded");
    assert_eq!(caught.outcome, AuditOutcome::Caught);
    // Half the bond, the round's pay (update + upheld audits) and its own bond back, less the
    // fees of its audits and its vote.
    let paid: u128 = j.rewards(&auditor).iter().sum();
    assert!(paid > 0);
    let rec = j.c.state.round_record(j.id, 0).expect("recorded");
    let posted = rec.audits.iter().filter(|a| a.auditor == auditor).count() as u128;
    assert_eq!(j.bal(&auditor), before + BOND / 2 - 100 * (posted + 1) + paid + BOND);
}

/// Five workers all audited; the auditor of worker 0 fails its training segment 1 with
/// `auditor_steps`, worker 0 disputes with `target_steps`, and every referee posts
/// `referee_hash`.
fn disputed(target_steps: [[u8; 32]; 4], auditor_steps: [[u8; 32]; 4], referee_hash: [u8; 32]) -> (Job, Address) {
    let mut j = Job::new(5, spec(5, 1, 1_000));
    let all = [0, 1, 2, 3, 4];
    j.commit(&all);
    j.reveal(&all);
    j.wait(0, Phase::Audit);
    let target = j.addr(0);
    let auditor = j
        .audits()
        .into_iter()
        .find(|(t, _)| *t == target)
        .expect("all audited")
        .1
        .auditor;
    j.pass_all_but(&[target]);
    let m = Msg::PostAudit {
        job: j.id,
        round: 0,
        target,
        verdict: j.fail(0, 1, &auditor_steps),
    };
    let ai = j.index(&auditor);
    assert!(j.one(ai, m).is_ok());
    // The target's hashes end where its own trace says segment 1 ends.
    let mut target_steps = target_steps;
    target_steps[3] = j.trace_of(0)[2];
    let contradicting = Msg::DisputeAudit {
        job: j.id,
        round: 0,
        steps: vec![target_steps[0], target_steps[1], target_steps[2], [0xee; 32]],
    };
    expect_err(&j.one(0, contradicting), "train", 42);
    let m = Msg::DisputeAudit {
        job: j.id,
        round: 0,
        steps: target_steps.to_vec(),
    };
    let r = j.one(0, m);
    assert!(r.is_ok(), "{}", r.log);
    let (_, a) = j.audits().into_iter().find(|(t, _)| *t == target).expect("audit");
    let d = a.dispute.expect("disputed");
    assert_eq!((d.index, d.referees.len()), (1, 3));
    assert!(!d.referees.contains(&target) && !d.referees.contains(&auditor));
    let msgs = d
        .referees
        .iter()
        .map(|r| {
            (
                j.index(r),
                Msg::PostReferee {
                    job: j.id,
                    round: 0,
                    target,
                    hash: referee_hash,
                },
            )
        })
        .collect();
    j.batch_ok(msgs);
    j.wait(0, Phase::Aggregate);
    (j, auditor)
}

#[test]
fn a_dispute_the_referees_uphold_slashes_the_auditor_and_excludes_its_update() {
    let (mut j, auditor) = disputed(
        [[1; 32], [5; 32], [6; 32], [7; 32]],
        [[1; 32], [2; 32], [3; 32], [4; 32]],
        [5; 32],
    );
    let target = j.addr(0);
    assert_eq!(
        j.slashes(),
        vec![(auditor, SlashReason::FalseAudit, BOND, Some(target))]
    );
    let voters: Vec<usize> = (0..5).filter(|i| j.addr(*i) != auditor).collect();
    j.vote(&voters, [9; 32]);
    j.finish_round(0);
    let rec = j.c.state.round_record(j.id, 0).expect("checkpoint made");
    assert!(rec.included.iter().any(|u| u.worker == target));
    assert!(rec.included.iter().all(|u| u.worker != auditor));
    assert!(j.rewards(&auditor).is_empty());
    assert!(!j.rewards(&target).is_empty());
}

#[test]
fn a_dispute_the_referees_reject_slashes_the_target() {
    let (mut j, auditor) = disputed(
        [[1; 32], [5; 32], [6; 32], [7; 32]],
        [[1; 32], [2; 32], [3; 32], [4; 32]],
        [2; 32],
    );
    let target = j.addr(0);
    assert_eq!(
        j.slashes(),
        vec![(target, SlashReason::FailedAudit, BOND, Some(auditor))]
    );
    let voters: Vec<usize> = (1..5).collect();
    j.vote(&voters, [9; 32]);
    j.finish_round(0);
    assert!(j.rewards(&target).is_empty());
}

#[test]
fn a_dispute_with_nothing_different_is_refused() {
    let mut j = Job::new(3, spec(3, 1, 1_000));
    j.commit(&[0, 1, 2]);
    j.reveal(&[0, 1, 2]);
    j.wait(0, Phase::Audit);
    let target = j.addr(0);
    let auditor = j
        .audits()
        .into_iter()
        .find(|(t, _)| *t == target)
        .expect("audited")
        .1
        .auditor;
    // The compression step (segment 2): the update's hash and ef_out's.
    let steps = [[1; 32], [2; 32]];
    let ai = j.index(&auditor);
    let m = Msg::PostAudit {
        job: j.id,
        round: 0,
        target,
        verdict: j.fail(0, 2, &steps),
    };
    assert!(j.one(ai, m).is_ok());
    let same = Msg::DisputeAudit {
        job: j.id,
        round: 0,
        steps: steps.to_vec(),
    };
    expect_err(&j.one(0, same), "train", 29);
    let short = Msg::DisputeAudit {
        job: j.id,
        round: 0,
        steps: vec![[1; 32]],
    };
    expect_err(&j.one(0, short), "train", 28);
}

#[test]
fn a_dispute_without_referees_excludes_the_target_without_slashing_anyone() {
    let mut j = Job::new(2, spec(2, 1, 1_000));
    j.commit(&[0, 1]);
    j.reveal(&[0, 1]);
    j.wait(0, Phase::Audit);
    let (a0, a1) = (j.addr(0), j.addr(1));
    j.pass_all_but(&[a0]);
    let m = Msg::PostAudit {
        job: j.id,
        round: 0,
        target: a0,
        verdict: j.fail(0, 2, &[[1; 32], [2; 32]]),
    };
    assert!(j.one(1, m).is_ok());
    // The compression step: the target stands by the update and ef_out it revealed.
    let mine = j.pending[&0];
    let m = Msg::DisputeAudit {
        job: j.id,
        round: 0,
        steps: vec![mine.update, mine.ef_out],
    };
    let r = j.one(0, m);
    assert!(r.is_ok(), "{}", r.log);
    j.wait(0, Phase::Aggregate);
    assert!(j.slashes().is_empty());
    assert!(j.events.iter().any(|e| matches!(e,
        Event::TrainAuditSettled { target, outcome: AuditOutcome::Undecided, .. } if *target == a0)));
    j.vote(&[1], [9; 32]);
    j.finish_round(0);
    let rec = j.c.state.round_record(j.id, 0).expect("checkpoint made");
    assert_eq!(rec.included.iter().map(|u| u.worker).collect::<Vec<_>>(), vec![a1]);
    // Worker 1 is paid for its update only (its undecided audit earns nothing); worker 0, out
    // of the checkpoint, for its upheld audit of worker 1 only: a whole round's tokens, since
    // the audit replayed the whole round.
    let tokens = |a: Address| {
        j.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainRewarded { worker, tokens, .. } if *worker == a => Some(*tokens),
                _ => None,
            })
            .collect::<Vec<u64>>()
    };
    assert_eq!(tokens(a1), vec![8 * 4 * 64]);
    assert_eq!(tokens(a0), vec![8 * 4 * 64]);
}

#[test]
fn a_withheld_reveal_costs_the_whole_bond_and_the_update() {
    let mut j = Job::new(3, spec(3, 1, 0));
    j.commit(&[0, 1, 2]);
    j.reveal(&[0, 1]);
    j.wait(0, Phase::Aggregate);
    let w = j.addr(2);
    assert_eq!(j.slashes(), vec![(w, SlashReason::WithheldReveal, BOND, None)]);
    assert_eq!(j.c.state.train_member(j.id, &w), None);
    let m = Msg::PostCheckpoint {
        job: j.id,
        round: 0,
        checkpoint: [9; 32],
        left_out: Vec::new(),
    };
    expect_err(&j.one(2, m), "train", 32);
}

#[test]
fn three_rounds_in_a_row_without_a_commitment_remove_a_member_with_its_bond() {
    let mut j = Job::new(3, spec(2, 5, 0));
    for r in 0..3u32 {
        j.honest_round(&[0, 1], [r as u8 + 1; 32]);
        j.finish_round(r);
        let missed = j.c.state.train_member(j.id, &j.addr(2)).map(|m| m.missed);
        assert_eq!(missed, if r < 2 { Some(r + 1) } else { None });
    }
    let w = j.addr(2);
    assert!(j.events.iter().any(|e| matches!(e,
        Event::TrainMemberLeft { worker, reason: LeaveReason::Missed, refunded, .. }
            if *worker == w && refunded.amount == BOND)));
    assert!(j.rewards(&w).is_empty());
    assert_eq!(j.state().round_workers, 2);
}

#[test]
fn a_round_without_a_majority_checkpoint_pays_nobody_and_the_next_one_can() {
    let mut j = Job::new(4, spec(4, 2, 0));
    j.commit(&[0, 1, 2, 3]);
    j.reveal(&[0, 1, 2, 3]);
    j.vote(&[0, 1], [1; 32]);
    j.batch_ok(vec![
        (
            2,
            Msg::PostCheckpoint {
                job: 0,
                round: 0,
                checkpoint: [2; 32],
                left_out: Vec::new(),
            },
        ),
        (
            3,
            Msg::PostCheckpoint {
                job: 0,
                round: 0,
                checkpoint: [2; 32],
                left_out: Vec::new(),
            },
        ),
    ]);
    j.finish_round(0);
    assert!(j
        .events
        .iter()
        .any(|e| matches!(e, Event::TrainRoundFailed { round: 0, .. })));
    assert_eq!((j.state().checkpoint, j.state().escrow), (INIT, BUDGET));
    assert!(j.c.state.round_record(j.id, 0).is_none());
    j.commit(&[0, 1, 2, 3]);
    j.reveal(&[0, 1, 2, 3]);
    j.vote(&[0, 1, 2], [5; 32]);
    j.finish_round(1);
    assert_eq!(j.state().checkpoint, [5; 32]);
    let rec = j.c.state.round_record(j.id, 1).expect("recorded");
    assert_eq!((rec.previous, rec.previous_round), (INIT, None));
    // The failed round's budget rolled over: the last round pays all of it.
    assert_eq!(j.rewards(&j.addr(0)), vec![288_000]);
}

#[test]
fn a_member_joining_mid_round_takes_part_from_the_next_round() {
    let mut j = Job::new(3, spec(3, 2, 0));
    let spare = j.spare.clone();
    let m = j.join_msg();
    assert!(j.by(&spare, m).is_ok());
    assert_eq!(
        j.c.state.train_member(j.id, &spare.address()).map(|m| m.active_from),
        Some(1)
    );
    j.workers.push(spare);
    let r = j.reveal_of(3, [4; 32]);
    let m = j.commit_msg(3, &r);
    expect_err(&j.one(3, m), "train", 14);
    j.honest_round(&[0, 1, 2], [1; 32]);
    j.finish_round(0);
    assert_eq!(j.state().round_workers, 4);
    j.honest_round(&[0, 1, 2, 3], [2; 32]);
    j.finish_round(1);
    assert_eq!(j.rewards(&j.addr(3)).len(), 1);
}

#[test]
fn a_leaving_member_gets_its_bond_when_its_round_settles() {
    let mut j = Job::new(3, spec(2, 3, 0));
    let w = j.addr(2);
    assert!(j.one(2, Msg::LeaveJob { job: 0 }).is_ok());
    expect_err(&j.one(2, Msg::LeaveJob { job: 0 }), "train", 9);
    assert_eq!(j.c.state.train_member(j.id, &w).map(|m| m.bond), Some(BOND));
    j.honest_round(&[0, 1, 2], [1; 32]);
    j.finish_round(0);
    assert_eq!(j.c.state.train_member(j.id, &w), None);
    assert!(j.events.iter().any(|e| matches!(e,
        Event::TrainMemberLeft { worker, reason: LeaveReason::Left, refunded, .. }
            if *worker == w && refunded.amount == BOND)));
    assert_eq!(j.rewards(&w).len(), 1);
    assert_eq!(j.state().round_workers, 2);
    // A member not in the running round leaves at once.
    let spare = j.spare.clone();
    let m = j.join_msg();
    assert!(j.by(&spare, m).is_ok());
    let before = j.bal(&spare.address());
    assert!(j.by(&spare, Msg::LeaveJob { job: 0 }).is_ok());
    assert_eq!(j.bal(&spare.address()), before + BOND - 100);
}

#[test]
fn cancelling_a_recruiting_job_refunds_budget_and_bonds() {
    let mut j = Job::new(1, spec(2, 3, 0));
    let (owner, w) = (j.owner.clone(), j.addr(0));
    let (owner_before, w_before) = (j.bal(&owner.address()), j.bal(&w));
    expect_err(&j.one(0, Msg::CancelJob { job: 0 }), "train", 34);
    assert!(j.by(&owner, Msg::CancelJob { job: 0 }).is_ok());
    assert_eq!(j.state().state, JobState::Cancelled);
    assert_eq!(j.bal(&owner.address()), owner_before + BUDGET - 100);
    assert_eq!(j.bal(&w), w_before + BOND - 100);
    assert_eq!(j.bal(&j.c.state.train_escrow()), 0);
    let m = j.join_msg();
    expect_err(&j.one(0, m), "train", 4);
}

#[test]
fn the_same_blocks_give_the_same_state_hash() {
    let run = || {
        let mut j = Job::new(3, spec(3, 2, 1_000));
        j.honest_round(&[0, 1, 2], [1; 32]);
        j.finish_round(0);
        j.commit(&[0, 1]);
        j.c.state.state_hash()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_failing_verdict_names_a_segment_of_the_round_and_hashes_each_of_its_steps() {
    assert!(spec(3, 1, 1_001).validate("spec").is_err());
    let mut j = Job::new(3, spec(3, 1, 1_000));
    j.commit(&[0, 1, 2]);
    j.reveal(&[0, 1, 2]);
    j.wait(0, Phase::Audit);
    let target = j.addr(0);
    let auditor = j
        .audits()
        .into_iter()
        .find(|(t, _)| *t == target)
        .expect("every worker audited")
        .1
        .auditor;
    let ai = j.index(&auditor);
    let trace = j.trace_of(0);
    let post = |segment: u32, steps: usize| Msg::PostAudit {
        job: 0,
        round: 0,
        target,
        verdict: Verdict::Fail {
            segment,
            steps: vec![[1; 32]; steps],
            trace: trace.clone(),
        },
    };
    // Segments 0 and 1 train (four steps each), segment 2 is the compression step (two
    // hashes: update and ef_out); there is no segment 3.
    let rs = j.batch(vec![
        (ai, post(3, 2)),
        (ai, post(0, 2)),
        (ai, post(1, 5)),
        (ai, post(2, 4)),
    ]);
    expect_err(&rs[0], "train", 37);
    for r in &rs[1..] {
        expect_err(r, "train", 24);
    }
    let r = j.one(ai, post(1, 4));
    assert!(r.is_ok(), "{}", r.log);
    // The dispute gives as many hashes as the verdict.
    let m = Msg::DisputeAudit {
        job: 0,
        round: 0,
        steps: vec![[2; 32]; 2],
    };
    expect_err(&j.one(0, m), "train", 28);
}

/// Three workers, all audited, in the audit phase of round 0: the job, and the index of the
/// auditor of worker 0 after every other audit passed.
fn auditing_worker_0() -> (Job, usize) {
    let mut j = Job::new(3, spec(3, 1, 1_000));
    j.commit(&[0, 1, 2]);
    j.reveal(&[0, 1, 2]);
    j.wait(0, Phase::Audit);
    let target = j.addr(0);
    j.pass_all_but(&[target]);
    let ai = j.index(&j.auditor_of(0));
    (j, ai)
}

fn post_audit(j: &Job, target: usize, verdict: Verdict) -> Msg {
    Msg::PostAudit {
        job: j.id,
        round: j.round(),
        target: j.addr(target),
        verdict,
    }
}

#[test]
fn a_failing_verdict_whose_segment_ends_at_the_committed_boundary_is_refused() {
    let (mut j, ai) = auditing_worker_0();
    let trace = j.trace_of(0);
    // The auditor's hashes of segment 1 end where the target's trace says (trace[2]): the
    // target's round agrees with the replay there, so there is nothing to fail, and the
    // target could not dispute equal hashes. Same for segment 0 ending at trace[1].
    let honest_end = |end: [u8; 32]| vec![[7; 32], [8; 32], [9; 32], end];
    let rs = j.batch(vec![
        (ai, post_audit(&j, 0, j.fail(0, 1, &honest_end(trace[2])))),
        (ai, post_audit(&j, 0, j.fail(0, 0, &honest_end(trace[1])))),
    ]);
    expect_err(&rs[0], "train", 40);
    expect_err(&rs[1], "train", 40);
    assert!(rs[0].log.contains("no mismatch to claim"), "{}", rs[0].log);
    // Ending at the *other* segment's boundary is still a mismatch with this one.
    let m = post_audit(&j, 0, j.fail(0, 1, &honest_end(trace[1])));
    let r = j.one(ai, m);
    assert!(r.is_ok(), "{}", r.log);
}

#[test]
fn a_failing_verdict_carrying_a_trace_other_than_the_committed_one_is_refused() {
    let (mut j, ai) = auditing_worker_0();
    let steps = [[1; 32], [2; 32], [3; 32], [4; 32]];
    let with_trace = |trace: Vec<[u8; 32]>| Verdict::Fail {
        segment: 0,
        steps: steps.to_vec(),
        trace,
    };
    let mut forged = j.trace_of(0);
    forged[1] = [4; 32];
    let mut longer = j.trace_of(0);
    longer.push([5; 32]);
    let rs = j.batch(vec![
        // A trace the auditor made up so that its steps seem to disagree with it.
        (ai, post_audit(&j, 0, with_trace(forged))),
        // Another worker's committed trace.
        (ai, post_audit(&j, 0, with_trace(j.trace_of(1)))),
        // One boundary too many, and one too few.
        (ai, post_audit(&j, 0, with_trace(longer))),
        (ai, post_audit(&j, 0, with_trace(j.trace_of(0)[..2].to_vec()))),
    ]);
    expect_err(&rs[0], "train", 39);
    expect_err(&rs[1], "train", 39);
    expect_err(&rs[2], "train", 38);
    expect_err(&rs[3], "train", 38);
    assert!(rs[2].log.contains("has 3"), "{}", rs[2].log);
    // Nothing was recorded: the verdict can still be posted, with the committed trace.
    let r = j.one(ai, post_audit(&j, 0, with_trace(j.trace_of(0))));
    assert!(r.is_ok(), "{}", r.log);
}

#[test]
fn a_compression_failure_equal_to_the_revealed_update_and_ef_out_is_refused() {
    let (mut j, ai) = auditing_worker_0();
    let revealed = j.pending[&0];
    let rs = j.batch(vec![(
        ai,
        post_audit(&j, 0, j.fail(0, 2, &[revealed.update, revealed.ef_out])),
    )]);
    expect_err(&rs[0], "train", 41);
    // A different ef_out alone is a real mismatch.
    let m = post_audit(&j, 0, j.fail(0, 2, &[revealed.update, [0xef; 32]]));
    let r = j.one(ai, m);
    assert!(r.is_ok(), "{}", r.log);
}

#[test]
fn an_unavailable_verdict_excludes_the_target_without_slashing_or_paying_the_auditor() {
    let (mut j, ai) = auditing_worker_0();
    let (target, auditor) = (j.addr(0), j.addr(ai));
    // It cannot be disputed (it claims no mismatch), and as the last verdict of the round it
    // ends the audit phase in its block: nothing waits on it.
    let dispute = Msg::DisputeAudit {
        job: j.id,
        round: 0,
        steps: vec![[1; 32]; 4],
    };
    let rs = j.batch(vec![(ai, post_audit(&j, 0, Verdict::Unavailable)), (0, dispute)]);
    assert!(rs[0].is_ok(), "{}", rs[0].log);
    expect_err(&rs[1], "train", 25);
    assert_eq!(j.state().phase, Phase::Aggregate);
    assert!(j.slashes().is_empty());
    assert!(j.events.iter().any(|e| matches!(e,
        Event::TrainAuditSettled { target: t, outcome: AuditOutcome::Unavailable, .. } if *t == target)));
    j.vote(&[1, 2], [9; 32]);
    j.finish_round(0);
    let rec = j.c.state.round_record(j.id, 0).expect("checkpoint made");
    assert!(rec.included.iter().all(|u| u.worker != target));
    assert_eq!(rec.included.len(), 2);
    let summary = rec.audits.iter().find(|a| a.target == target).expect("recorded");
    assert_eq!((summary.auditor, summary.outcome), (auditor, AuditOutcome::Unavailable));
    // The target is paid for its passed audit only; the auditor for its update and its passed
    // audits, not for the unavailable one.
    let round_tokens = 8 * 4 * 64u64;
    let tokens = |a: Address| {
        j.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainRewarded { worker, tokens, .. } if *worker == a => Some(*tokens),
                _ => None,
            })
            .sum::<u64>()
    };
    let passed = |a: Address| {
        rec.audits
            .iter()
            .filter(|s| s.auditor == a && s.outcome == AuditOutcome::Pass)
            .count() as u64
    };
    assert_eq!(tokens(auditor), round_tokens * (1 + passed(auditor)));
    assert_eq!(tokens(target), round_tokens * passed(target));
    // The excluded target's share stays in the escrow (back to the owner at the end): the
    // others are paid as if it had been paid too, so excluding it raised nobody's pay.
    let (mut gross, mut paid_tokens) = (0u128, 0u128);
    for e in &j.events {
        if let Event::TrainRewarded { tokens, paid, take, .. } = e {
            gross += paid.amount + take.amount;
            paid_tokens += u128::from(*tokens);
        }
    }
    let share = BUDGET * paid_tokens / (paid_tokens + u128::from(round_tokens));
    assert!(gross <= share && gross + 3 >= share, "paid {gross}, a share of {share}");
    // Both keep their bonds (returned when the job ended).
    for w in [target, auditor] {
        assert!(j.events.iter().any(|e| matches!(e,
            Event::TrainMemberLeft { worker, reason: LeaveReason::JobEnded, refunded, .. }
                if *worker == w && refunded.amount == BOND)));
    }
}

#[test]
fn a_pass_that_does_not_open_the_targets_loss_seal_is_refused() {
    let (mut j, ai) = auditing_worker_0();
    let revealed = j.pending[&0];
    let rs = j.batch(vec![
        // Made up without a replay; the target's revealed hashes (all public) do not open it
        // either, nor does the seal itself.
        (ai, post_audit(&j, 0, Verdict::Pass { digest: [0x11; 32] })),
        (
            ai,
            post_audit(
                &j,
                0,
                Verdict::Pass {
                    digest: revealed.update,
                },
            ),
        ),
        (ai, post_audit(&j, 0, Verdict::Pass { digest: revealed.seal })),
        // Another worker's digest.
        (ai, post_audit(&j, 0, Verdict::Pass { digest: j.digest_of(1) })),
    ]);
    for r in &rs {
        expect_err(r, "train", 43);
    }
    assert!(rs[0].log.contains("does not open the seal"), "{}", rs[0].log);
    // Nothing was recorded: the auditor can still pass with the digest its replay gives.
    let target = j.addr(0);
    assert!(j.audits().iter().any(|(t, a)| *t == target && a.verdict.is_none()));
    let r = j.one(ai, post_audit(&j, 0, Verdict::Pass { digest: j.digest_of(0) }));
    assert!(r.is_ok(), "{}", r.log);
}

#[test]
fn an_update_the_majority_could_not_fetch_is_left_out_unpaid_and_the_round_still_settles() {
    let mut j = Job::new(4, spec(4, 1, 0));
    let all = [0, 1, 2, 3];
    j.commit(&all);
    j.reveal(&all);
    j.wait_past_reveal();
    j.pass_all_but(&[]);
    j.wait(0, Phase::Aggregate);
    let hidden = j.addr(3);
    // Only another included worker's update can be left out: not the voter's own, nor a
    // stranger's.
    let vote = |j: &Job, left_out: Vec<Address>| Msg::PostCheckpoint {
        job: j.id,
        round: 0,
        checkpoint: [9; 32],
        left_out,
    };
    let stranger = key(KeyScheme::Ed25519, 77).address();
    let rs = j.batch(vec![(3, vote(&j, vec![hidden])), (0, vote(&j, vec![stranger]))]);
    expect_err(&rs[0], "train", 44);
    expect_err(&rs[1], "train", 44);
    // Three of four leave worker 3's update out, a majority; worker 3 does not vote.
    j.vote_leaving_out(&[0, 1, 2], [9; 32], &[3]);
    j.finish_round(0);
    let rec = j.c.state.round_record(j.id, 0).expect("the round settled");
    assert_eq!(rec.checkpoint, [9; 32]);
    assert_eq!(rec.unserved, vec![hidden]);
    assert!(rec.included.iter().all(|u| u.worker != hidden));
    assert_eq!(rec.included.len(), 3);
    // Its share stayed in the escrow and went back to the owner: the others are paid as if it
    // had been paid too (the whole budget is this one round's: a quarter each, less 4 %).
    assert!(j.rewards(&hidden).is_empty());
    for i in 0..3 {
        assert_eq!(j.rewards(&j.addr(i)), vec![288_000]);
    }
    assert_eq!(j.state().state, JobState::Finished);
    assert_eq!(
        (j.state().paid, j.state().take, j.state().refunded),
        (864_000, 36_000, 300_000)
    );
    assert_eq!(j.bal(&j.c.state.train_escrow()), 0);
}

#[test]
fn votes_for_one_checkpoint_with_different_left_out_sets_are_counted_apart() {
    let mut j = Job::new(4, spec(4, 2, 0));
    let all = [0, 1, 2, 3];
    j.commit(&all);
    j.reveal(&all);
    j.wait_past_reveal();
    // Two of four vote (C, {}), two vote (C, {worker 0}): four votes name C, but neither pair
    // is more than half of the four included workers.
    j.vote(&[0, 1], [7; 32]);
    j.vote_leaving_out(&[2, 3], [7; 32], &[0]);
    j.finish_round(0);
    assert!(j
        .events
        .iter()
        .any(|e| matches!(e, Event::TrainRoundFailed { round: 0, .. })));
    assert!(j.c.state.round_record(j.id, 0).is_none());
    assert_eq!((j.state().checkpoint, j.state().escrow), (INIT, BUDGET));
    assert!(all.iter().all(|&i| j.rewards(&j.addr(i)).is_empty()));
    // Three of four on one (checkpoint, set) is a majority: that set is the round's.
    j.commit(&all);
    j.reveal(&all);
    j.wait_past_reveal();
    j.vote(&[0], [8; 32]);
    j.vote_leaving_out(&[1, 2, 3], [8; 32], &[0]);
    j.finish_round(1);
    let rec = j.c.state.round_record(j.id, 1).expect("the round settled");
    assert_eq!((rec.checkpoint, rec.unserved.clone()), ([8; 32], vec![j.addr(0)]));
}
