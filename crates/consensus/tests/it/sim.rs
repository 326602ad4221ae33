//! Deterministic simulations of many validators, on the harness of `pazar_consensus::sim`
//! (feature `sim`): each validator is a real node (ledger, mempool, redb store in its own
//! directory) behind simplex and marshal, on commonware's deterministic runtime and simulated
//! network (latency, jitter, loss, links cut and restored). Safety: at every height all
//! validators hold the same block and the same state root, and every accepted transaction is
//! committed exactly once. Liveness: finalization goes on with a validator down and resumes
//! after a partition heals. A failing seed prints how to run it again.
//!
//! The sweep runs 1,000 seeds (`PAZAR_SIM_SEEDS` sets how many; `PAZAR_SIM_SEED` runs one):
//! each seed picks one validator and what it does wrong (nothing, down, partitioned and healed,
//! equivocating).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use commonware_cryptography::{ed25519, Signer};
use commonware_p2p::simulated::Oracle;
use commonware_runtime::{Clock, Runner as _, Supervisor as _};
use commonware_utils::ordered::Set;
use serde_json::json;

use pazar_consensus::evidence::{Attestations, VerifierRng};
use pazar_consensus::sim::{
    account, check_agree, check_committed_once, cluster, crash, epoch_cluster, good, link, lossy, open_node, spawn,
    submit_load, unlink, upzr, wait_all, wait_committed, wan_finality, Ctx, Pk, Validator, CHAIN, NAMESPACE, QUOTA,
};
use pazar_consensus::Epochs;
use pazar_consensus::{Evidence, Finalizer, Scheme};
use pazar_ledger::{DoubleSignRecord, ValidatorRecord};
use pazar_node::consensus::{Application, Attestor, VerifyError};
use pazar_types::block::{body_root, Attestation, Block};

/// Simulated time a scenario may take before the runtime gives up on it.
const TIMEOUT: Duration = Duration::from_secs(600);

fn runner(seed: u64) -> commonware_runtime::deterministic::Runner {
    pazar_consensus::sim::runner(seed, TIMEOUT)
}

/// Safety: every validator in `idx` holds the same block and state root at each height up to
/// `upto`.
fn assert_agree(vals: &[Validator], idx: &[usize], upto: u64) {
    if let Err(e) = check_agree(vals, idx, upto) {
        panic!("{e}");
    }
}

/// Safety: every transaction of `hashes` is committed once, at the same place, on every
/// validator in `idx`.
fn assert_committed_once(vals: &[Validator], idx: &[usize], hashes: &[pazar_types::Hash32]) {
    if let Err(e) = check_committed_once(vals, idx, hashes) {
        panic!("{e}");
    }
}

/// Runs `key`'s validator as simplex's `Conflicter` mock: for every vote it receives it signs
/// two, for different blocks.
async fn equivocate(context: &Ctx, oracle: &Oracle<Pk, Ctx>, pks: &Set<Pk>, key: &ed25519::PrivateKey) {
    use commonware_consensus::simplex::mocks::conflicter;
    let (sender, receiver) = oracle
        .control(key.public_key())
        .register(0, QUOTA)
        .await
        .expect("a channel");
    // Votes travel on the sub-channel of their epoch (the engine muxes them by epoch).
    let (mux, mut epochs) = commonware_p2p::utils::mux::Muxer::new(context.child("byzantine_mux"), sender, receiver);
    mux.start();
    let votes = epochs.register(0).await.expect("epoch 0's sub-channel");
    let scheme = Scheme::signer(NAMESPACE, pks.clone(), key.clone()).expect("a member");
    conflicter::Conflicter::<_, _, commonware_cryptography::sha256::Sha256>::new(
        context.child("byzantine"),
        conflicter::Config { scheme },
    )
    .start(votes);
}

fn key_bytes(pk: &Pk) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(pk.as_ref());
    out
}

/// What a validator's ledger holds of the validators' conduct: every record, every double
/// signing, and the next commit height to record.
type Conduct = (
    Vec<([u8; 32], ValidatorRecord)>,
    Vec<(([u8; 32], u64, u64), DoubleSignRecord)>,
    u64,
);

fn conduct(v: &Validator) -> Conduct {
    let st = v.node().state();
    (
        st.validator_records().map(|(k, r)| (*k, *r)).collect(),
        st.double_signs().map(|(k, r)| (*k, *r)).collect(),
        st.next_commit_height(),
    )
}

/// Waits until `done` holds of the conduct on every validator in `idx` at one height, up to
/// `max_height`; returns that conduct (the same on all of them).
async fn wait_conduct(
    context: &Ctx,
    vals: &[Validator],
    idx: &[usize],
    max_height: u64,
    done: impl Fn(&Conduct) -> bool,
) -> Conduct {
    loop {
        let h = vals[idx[0]].height();
        if idx.iter().all(|i| vals[*i].height() == h) {
            let first = conduct(&vals[idx[0]]);
            if done(&first) {
                for i in &idx[1..] {
                    assert_eq!(
                        conduct(&vals[*i]),
                        first,
                        "validator {i}'s ledger records another conduct"
                    );
                }
                return first;
            }
        }
        assert!(
            h <= max_height,
            "height {h} reached and the conduct is still not recorded: {:?}",
            conduct(&vals[idx[0]])
        );
        context.sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `scenario` on the deterministic runtime for `seed`, the validators' stores in a fresh
/// directory, and says how to run that seed alone if it fails.
fn simulate<F, Fut>(name: &str, seed: u64, scenario: F)
where
    F: FnOnce(Ctx, PathBuf) -> Fut + std::panic::UnwindSafe,
    Fut: Future<Output = ()>,
{
    let run = move || {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().to_path_buf();
        runner(seed).start(|context| scenario(context, path));
    };
    if let Err(e) = std::panic::catch_unwind(run) {
        eprintln!("{name} failed with seed {seed}; rerun it alone with PAZAR_SIM_SEED={seed} cargo test -p pazar-consensus --features sim --test it sim::{name}");
        std::panic::resume_unwind(e);
    }
}

fn seeds(default: u64) -> Vec<u64> {
    if let Some(one) = std::env::var("PAZAR_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![one];
    }
    let n = std::env::var("PAZAR_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

/// What one validator does wrong in a seed's run.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Never starts.
    Down,
    /// Cut off from everyone for a while, then linked again.
    Partitioned,
    /// Signs conflicting votes for everything it sees (simplex's `Conflicter` mock).
    Equivocating,
}

/// Four validators on lossy links, one of them (chosen by the seed) down, partitioned or
/// equivocating: blocks carrying transactions finalize, every honest validator holds the same
/// blocks and roots, each transaction is committed once, and a partitioned one catches up.
fn four_validators_run(name: &str, seed: u64) {
    let victim = (seed % 4) as usize;
    let fault = [Fault::None, Fault::Down, Fault::Partitioned, Fault::Equivocating][((seed / 4) % 4) as usize];
    simulate(name, seed, move |context, root| async move {
        let idle: &[usize] = match fault {
            Fault::Down | Fault::Equivocating => &[victim],
            Fault::None | Fault::Partitioned => &[],
        };
        let (vals, pks, oracle) = cluster(&context, &root, 4, &lossy(), idle)
            .await
            .expect("the validators open");
        if let Fault::Equivocating = fault {
            equivocate(&context, &oracle, &pks, &vals[victim].key).await;
        }
        let honest: Vec<usize> = match fault {
            Fault::Down | Fault::Equivocating => (0..4).filter(|i| *i != victim).collect(),
            Fault::None | Fault::Partitioned => (0..4).collect(),
        };
        wait_all(&context, &vals, &honest, 2).await;
        if let Fault::Partitioned = fault {
            unlink(&oracle, &pks, victim).await;
        }
        let up: Vec<usize> = honest
            .iter()
            .copied()
            .filter(|i| !matches!(fault, Fault::Partitioned) || *i != victim)
            .collect();
        let hashes = submit_load(&vals, &up, 5).expect("the clients' transactions are admitted");
        let target = vals[up[0]].height() + 12;
        wait_all(&context, &vals, &up, target).await;
        // Each transaction waits for the validator it reached to lead a view that finalizes
        // (no gossip here), which lossy links may delay past those blocks; liveness is that it
        // comes (the scenario's time is bounded).
        for h in &hashes {
            wait_committed(&context, &vals, &up, h).await.expect("the stores read");
        }
        let target = target.max(vals[up[0]].height());
        if let Fault::Partitioned = fault {
            link(&oracle, &pks, &lossy(), Some(victim)).await;
        }
        wait_all(&context, &vals, &honest, target).await;
        assert_agree(&vals, &honest, target);
        assert_committed_once(&vals, &honest, &hashes);
        // The ledger's commit records name a validator that was never up as missing from every
        // certified commit they record (a seed may end before the first is recorded).
        if let Fault::Down = fault {
            let st = vals[honest[0]].node().state();
            let key = key_bytes(&vals[victim].key.public_key());
            let others: Vec<ValidatorRecord> = st
                .validator_records()
                .filter(|(k, _)| **k != key)
                .map(|(_, r)| *r)
                .collect();
            match st.validator_record(&key) {
                Some(r) => assert!(r.signed == 0 && others.iter().all(|o| o.signed + o.missed == r.missed)),
                None => assert!(others.is_empty()),
            }
        }
        for i in &honest {
            let v = &vals[*i];
            if !matches!(fault, Fault::Equivocating) {
                assert!(v.evidence.faults().is_empty(), "an honest run reported faults");
            }
            assert!(!v.finalizer.as_ref().is_some_and(Finalizer::failed));
        }
        // Whether an honest validator sees the equivocation depends on whether it still
        // processes the byzantine votes of a view (a quorum may form without them); the test of
        // its own below shows it recorded.
    });
}

#[test]
fn four_validators_agree_on_every_block_and_root_and_commit_each_transaction_once() {
    // Seeds are independent runs: spread them over the machine's cores.
    let all = seeds(1000);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(all.len().max(1));
    std::thread::scope(|s| {
        for w in 0..workers {
            let mine: Vec<u64> = all.iter().copied().skip(w).step_by(workers).collect();
            s.spawn(move || {
                for seed in mine {
                    four_validators_run(
                        "four_validators_agree_on_every_block_and_root_and_commit_each_transaction_once",
                        seed,
                    );
                }
            });
        }
    });
}

/// A validator that signs two different votes in a view (simplex's `Conflicter` mock) is
/// recorded by the honest ones, who keep finalizing.
#[test]
fn an_equivocating_validator_is_recorded_and_the_others_finalize() {
    simulate(
        "an_equivocating_validator_is_recorded_and_the_others_finalize",
        5,
        |context, root| async move {
            let (vals, pks, oracle) = cluster(&context, &root, 4, &good(), &[0])
                .await
                .expect("the validators open");
            let byz = vals[0].key.clone();
            equivocate(&context, &oracle, &pks, &byz).await;
            let honest = [1, 2, 3];
            wait_all(&context, &vals, &honest, 15).await;
            assert_agree(&vals, &honest, 15);
            for i in honest {
                assert!(
                    !vals[i].evidence.faults().is_empty(),
                    "validator {i} recorded no equivocation"
                );
            }
            // An honest proposer puts the proof in a block: the double signing is on every
            // honest ledger, the same, and only the byzantine validator's.
            let byz_key = key_bytes(&byz.public_key());
            let (records, double_signs, _) = wait_conduct(&context, &vals, &honest, 60, |c| !c.1.is_empty()).await;
            assert!(double_signs.iter().all(|((k, _, _), _)| *k == byz_key));
            let byz_record = records.iter().find(|(k, _)| *k == byz_key).expect("a record").1;
            assert_eq!(byz_record.double_signs, double_signs.len() as u64);
            assert!(records
                .iter()
                .filter(|(k, _)| *k != byz_key)
                .all(|(_, r)| r.double_signs == 0));
            forged_evidence_is_refused(&context, &vals[1]).await;
            let blocked = oracle.blocked().await.expect("the oracle answers");
            assert!(
                blocked.iter().all(|(_, b)| *b == byz.public_key()),
                "an honest validator was blocked: {blocked:?}"
            );
        },
    );
}

/// A certified commit record some stored block carries, of a height other than `not`.
fn stored_commit(v: &Validator, not: u64) -> Option<Attestation> {
    (1..=v.height()).find_map(|h| {
        let b = v.node().store().block(h).expect("reads").expect("committed").block;
        b.evidence
            .commits
            .into_iter()
            .find(|c| c.height != not && matches!(c.attestation, Attestation::Certified { .. }))
            .map(|c| c.attestation)
    })
}

/// `verify` of the block `b` with its evidence changed by `forge` (and its header's root
/// following, so only the evidence is wrong): the reason it is refused.
fn refusal(v: &Validator, b: &Block, forge: impl FnOnce(&mut Block)) -> String {
    let mut forged = b.clone();
    forge(&mut forged);
    forged.header.txs_root = body_root(&forged.txs, &forged.evidence);
    match v.node().verify(&[], &forged) {
        Err(VerifyError::Evidence(why)) => why,
        other => panic!("forged evidence was not refused as evidence: {other:?}"),
    }
}

fn certified(b: &mut Block) -> (&mut Vec<u8>, &mut Vec<u8>) {
    b.evidence
        .commits
        .iter_mut()
        .find_map(|c| match &mut c.attestation {
            Attestation::Certified { signers, certificate } => Some((signers, certificate)),
            Attestation::Unattested => None,
        })
        .expect("a certified commit record")
}

/// A validator's `verify` refuses evidence that does not check out: a signer bitmap that is not
/// the certificate's, a certificate with a broken signature or of another block, a double
/// signing already recorded or whose proof is of another validator or view; and a proof with a
/// broken signature does not check (the recorded one does).
async fn forged_evidence_is_refused(context: &Ctx, v: &Validator) {
    // A proposal of this validator carrying a certified commit record.
    let b = loop {
        let b = v.node().propose(&[], 1).expect("proposes on its finalized head");
        if b.evidence
            .commits
            .iter()
            .any(|c| matches!(c.attestation, Attestation::Certified { .. }))
        {
            break b;
        }
        context.sleep(Duration::from_millis(5)).await;
    };
    v.node().verify(&[], &b).expect("its own proposal verifies");
    let why = refusal(v, &b, |f| certified(f).0[0] ^= 1);
    assert!(why.contains("bitmap is not the certificate's signers"), "{why}");
    let why = refusal(v, &b, |f| {
        let cert = certified(f).1;
        let last = cert.len() - 1;
        cert[last] ^= 0x40;
    });
    assert!(
        why.contains("do not verify") || why.contains("does not decode"),
        "{why}"
    );
    let height = b
        .evidence
        .commits
        .iter()
        .find(|c| matches!(c.attestation, Attestation::Certified { .. }))
        .expect("above")
        .height;
    if let Some(other) = stored_commit(v, height) {
        let why = refusal(v, &b, |f| {
            let c = f
                .evidence
                .commits
                .iter_mut()
                .find(|c| c.height == height)
                .expect("above");
            c.attestation = other;
        });
        assert!(why.contains("another block"), "{why}");
    }
    // The double signing the ledger recorded, as its block carries it.
    let recorded = (1..=v.height())
        .find_map(|h| {
            let blk = v.node().store().block(h).expect("reads").expect("committed").block;
            blk.evidence.double_signs.into_iter().next()
        })
        .expect("a block recorded the double signing");
    let why = refusal(v, &b, |f| f.evidence.double_signs = vec![recorded.clone()]);
    assert!(why.contains("already recorded"), "{why}");
    let why = refusal(v, &b, |f| {
        let mut d = recorded.clone();
        d.validator = (d.validator + 1) % 4;
        f.evidence.double_signs = vec![d];
    });
    assert!(why.contains("the proof is of validator"), "{why}");
    let why = refusal(v, &b, |f| {
        let mut d = recorded.clone();
        d.view += 1_000_000;
        f.evidence.double_signs = vec![d];
    });
    assert!(why.contains("the proof is of validator"), "{why}");
    // The proof itself, checked as every validator checks it: it holds; with one signature
    // bit flipped it does not.
    let check = Attestations::new(
        Evidence::default(),
        Epochs::new(v.node().clone(), NAMESPACE, None).expect("the chain's validator sets"),
        VerifierRng::from_os(),
    );
    check.check_double_sign(&recorded).expect("the recorded proof holds");
    let mut broken = recorded.clone();
    let last = broken.proof.len() - 1;
    broken.proof[last] ^= 0x40;
    let why = check.check_double_sign(&broken).expect_err("a broken signature");
    assert!(
        why.contains("do not verify") || why.contains("does not decode"),
        "{why}"
    );
}

/// A validator is cut off for a stretch: the commits finalized meanwhile are recorded on every
/// ledger without it (missed, with the last height it missed), the same on all four; the others
/// sign what they are counted for.
#[test]
fn a_validator_offline_for_a_stretch_is_recorded_missing_those_commits() {
    simulate(
        "a_validator_offline_for_a_stretch_is_recorded_missing_those_commits",
        13,
        |context, root| async move {
            let (vals, pks, oracle) = cluster(&context, &root, 4, &good(), &[])
                .await
                .expect("the validators open");
            let all = [0, 1, 2, 3];
            wait_all(&context, &vals, &all, 3).await;
            unlink(&oracle, &pks, 3).await;
            let cut = vals[0].height();
            wait_all(&context, &vals, &[0, 1, 2], cut + 12).await;
            let back = vals[0].height();
            link(&oracle, &pks, &good(), Some(3)).await;
            let away = key_bytes(&vals[3].key.public_key());
            // Once every height up to `back` is recorded, on all four ledgers alike.
            let (records, double_signs, next) = wait_conduct(&context, &vals, &all, back + 40, |c| c.2 > back).await;
            assert!(double_signs.is_empty());
            let rec = |k: &[u8; 32]| records.iter().find(|(key, _)| key == k).expect("a record").1;
            let r = rec(&away);
            // Cut off, it signed none of the commits after `cut + 1`.
            assert!(r.missed >= back - cut - 2, "{r:?} for {cut}..{back}");
            assert!(r.last_missed >= back - 1, "{r:?}");
            for (k, other) in &records {
                // Every certified height counts everyone (an unattested one nobody).
                assert!(other.signed + other.missed < next);
                if *k != away {
                    assert!(other.signed >= back - cut, "{other:?}");
                }
            }
        },
    );
}

/// A validator is killed (every actor stops, its node is closed), the other three keep
/// finalizing, then it restarts from its store and the engine's journal, catches up from its
/// peers and agrees with them; no conflicting vote is ever seen.
#[test]
fn a_crashed_validator_restarts_from_its_store_and_catches_up() {
    simulate(
        "a_crashed_validator_restarts_from_its_store_and_catches_up",
        7,
        |context, root| async move {
            let (mut vals, pks, oracle) = cluster(&context, &root, 4, &good(), &[])
                .await
                .expect("the validators open");
            wait_all(&context, &vals, &[0, 1, 2, 3], 5).await;
            assert!(vals[3].task.is_some(), "running");
            crash(&context, &mut vals[3]).await;
            assert!(vals[3].node.is_none(), "the crashed validator's node is closed");
            let crashed_at = open_node(&vals[3].dir, vals[3].proposer)
                .expect("the crashed validator's store opens")
                .parent()
                .height;
            let hashes = submit_load(&vals, &[0, 1, 2], 3).expect("the clients' transactions are admitted");
            wait_all(&context, &vals, &[0, 1, 2], crashed_at + 10).await;
            vals[3].reopen().expect("the crashed validator's store opens");
            assert_eq!(vals[3].height(), crashed_at, "the store kept what was committed");
            spawn(&context, &oracle, &pks, &mut vals[3]).await;
            let target = vals[0].height() + 5;
            wait_all(&context, &vals, &[0, 1, 2, 3], target).await;
            assert_agree(&vals, &[0, 1, 2, 3], target);
            assert_committed_once(&vals, &[0, 1, 2, 3], &hashes);
            for v in &vals {
                assert!(
                    v.evidence.faults().is_empty(),
                    "a restarted validator signed conflicting votes"
                );
            }
        },
    );
}

/// Validator `voter`'s vote (from its account) for `key` to have `power`, sent to every
/// validator in `to` (whichever leads first includes it).
fn vote(vals: &[Validator], voter: usize, key: [u8; 32], power: u64, to: &[usize]) {
    let signer = account(&vals[voter].key);
    let sequence = vals[to[0]].node().state().account(&signer.address()).sequence;
    let tx = pazar_types::TxBody {
        chain_id: CHAIN.into(),
        sender: signer.address(),
        sequence,
        fee: pazar_types::Coin::new(1_000, upzr()),
        msgs: vec![pazar_types::Msg::VoteValidator { key, power }],
        memo: String::new(),
    }
    .sign(&signer)
    .encode();
    for &i in to {
        vals[i]
            .node()
            .submit(tx.clone())
            .expect("a validator's vote is admitted");
    }
}

/// The consensus keys of the set of `epoch` on validator `i`'s ledger.
fn set_of(vals: &[Validator], i: usize, epoch: u64) -> Vec<[u8; 32]> {
    vals[i].node().state().validator_keys(epoch)
}

/// The set changes by epoch: four genesis validators vote a fifth in during epoch 0, and it
/// votes from epoch 2 on (with one of the others down, epoch 2's quorum of 4 of 5 needs it);
/// then they vote the first one out during epoch 2, and from epoch 4 the chain goes on without
/// it (and with one more down, three of the four left are the new set's quorum). A validator restarted in a later epoch than it stopped in rejoins from its store. Every
/// ledger holds the same sets, blocks and roots, and the new validator's commits are recorded.
#[test]
fn the_validator_set_changes_at_epoch_boundaries_by_the_validators_vote() {
    simulate(
        "the_validator_set_changes_at_epoch_boundaries_by_the_validators_vote",
        21,
        |context, root| async move {
            const EPOCH: u64 = 10;
            let (mut vals, pks, oracle) = epoch_cluster(&context, &root, (5, 4, EPOCH), &good(), &[])
                .await
                .expect("the validators open");
            let newcomer = key_bytes(&pks.iter().nth(4).expect("five keys").clone());
            let first = key_bytes(&pks.iter().next().expect("five keys").clone());
            let all = [0, 1, 2, 3, 4];
            assert_eq!(set_of(&vals, 0, 1).len(), 4, "genesis fixes epochs 0 and 1");
            assert!(set_of(&vals, 0, 2).is_empty(), "epoch 2's set is not fixed yet");

            wait_all(&context, &vals, &all, 2).await;
            for voter in 0..3 {
                vote(&vals, voter, newcomer, 1, &[0, 1, 2, 3]);
            }
            // The last block of epoch 0 fixes epoch 2's set; epoch 1 keeps the genesis set.
            wait_all(&context, &vals, &all, EPOCH + 1).await;
            for i in all {
                assert_eq!(set_of(&vals, i, 1).len(), 4, "validator {i}");
                assert_eq!(set_of(&vals, i, 2).len(), 5, "validator {i}");
                assert!(set_of(&vals, i, 2).contains(&newcomer), "validator {i}");
            }

            // In epoch 2, with validator 1 down, 4 of the 5 must vote: the newcomer is one.
            wait_all(&context, &vals, &all, 2 * EPOCH + 1).await;
            crash(&context, &mut vals[1]).await;
            for voter in [0, 2, 3, 4] {
                vote(&vals, voter, first, 0, &[0, 2, 3, 4]);
            }
            wait_all(&context, &vals, &[0, 2, 3, 4], 3 * EPOCH + 2).await;
            for i in [0, 2, 3, 4] {
                assert_eq!(set_of(&vals, i, 3).len(), 5, "epoch 3's set was fixed before the vote");
                assert_eq!(set_of(&vals, i, 4).len(), 4, "validator {i}");
                assert!(!set_of(&vals, i, 4).contains(&first), "validator {i}");
            }
            let signed = vals[0]
                .node()
                .state()
                .validator_record(&newcomer)
                .map_or(0, |r| r.signed);
            assert!(signed > 0, "the newcomer's commits are recorded");

            // Validator 1 comes back in a later epoch, catches up across the boundaries, and
            // from epoch 4 the chain goes on without validator 0.
            vals[1].reopen().expect("the crashed validator's store opens");
            spawn(&context, &oracle, &pks, &mut vals[1]).await;
            wait_all(&context, &vals, &all, 4 * EPOCH + 1).await;
            crash(&context, &mut vals[0]).await;
            let rest = [1, 2, 3, 4];
            let target = vals[2].height() + 2 * EPOCH;
            wait_all(&context, &vals, &rest, target).await;
            assert_agree(&vals, &rest, target);
            for i in rest {
                assert_eq!(set_of(&vals, i, 6), set_of(&vals, 2, 6), "validator {i}");
            }
            // The engine votes with the ledger's set, not the old one: with validator 1 down too,
            // three of the four left are a quorum of epoch 4's set, where a quorum of the five
            // of epoch 3's would need four.
            crash(&context, &mut vals[1]).await;
            let three = [2, 3, 4];
            let target = vals[2].height() + EPOCH;
            wait_all(&context, &vals, &three, target).await;
            assert_agree(&vals, &three, target);
            for v in &vals {
                assert!(v.evidence.faults().is_empty(), "no validator signed conflicting votes");
            }
        },
    );
}

/// One validator is cut off: the others go on (3 of 4 is a quorum), it does not; once the
/// links are back it catches up through marshal's backfill.
#[test]
fn a_partitioned_validator_stops_then_catches_up_when_the_partition_heals() {
    simulate(
        "a_partitioned_validator_stops_then_catches_up_when_the_partition_heals",
        3,
        |context, root| async move {
            let (vals, pks, oracle) = cluster(&context, &root, 4, &good(), &[])
                .await
                .expect("the validators open");
            wait_all(&context, &vals, &[0, 1, 2, 3], 3).await;
            unlink(&oracle, &pks, 3).await;
            let cut = vals[3].height();
            wait_all(&context, &vals, &[0, 1, 2], cut + 15).await;
            assert!(vals[3].height() <= cut + 1, "an isolated validator kept finalizing");
            link(&oracle, &pks, &good(), Some(3)).await;
            let target = vals[0].height() + 5;
            wait_all(&context, &vals, &[0, 1, 2, 3], target).await;
            assert_agree(&vals, &[0, 1, 2, 3], target);
        },
    );
}

/// Seven validators, one never up (two may fail), lossy links.
#[test]
fn seven_validators_finalize_with_one_down_on_lossy_links() {
    simulate(
        "seven_validators_finalize_with_one_down_on_lossy_links",
        11,
        |context, root| async move {
            let (vals, _, _) = cluster(&context, &root, 7, &lossy(), &[0])
                .await
                .expect("the validators open");
            let up: Vec<usize> = (1..7).collect();
            wait_all(&context, &vals, &up, 10).await;
            assert_agree(&vals, &up, 10);
        },
    );
}

/// Internet scale by simulation ([`wan_finality`]): 100 validators (`PAZAR_SIM_VALIDATORS`),
/// each pair linked one way at 50-200 ms (deterministic per pair), 10 heights, every validator
/// holding the same blocks and roots at the end. Prints, as JSON, the median time from a
/// block's proposal (its header time, the proposer's simulated clock) to its commit on each
/// validator, next to the median round trip of the links. Heavy (3.75 GB peak at 100): `cargo
/// test -p pazar-consensus --features sim --release --test it sim:: -- --ignored --nocapture`.
#[test]
#[ignore]
fn a_hundred_validators_on_wan_links_report_finality_against_round_trip() {
    let root = tempfile::tempdir().expect("tempdir");
    let n: usize = std::env::var("PAZAR_SIM_VALIDATORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let r = wan_finality(n, 10, 0, root.path()).expect("the validators finalize 10 heights and agree");
    println!(
        "{}",
        json!({
            "validators": r.validators,
            "sim_finality_p50_ms": r.finality_p50_ms,
            "sim_median_rtt_ms": r.median_rtt_ms,
        })
    );
}

// The harness's own pieces.

#[test]
fn a_validators_account_is_its_consensus_key() {
    let key = ed25519::PrivateKey::from_seed(3);
    let mut pk = [0u8; 32];
    pk.copy_from_slice(key.public_key().as_ref());
    assert_eq!(account(&key).address(), pazar_types::Address::from_ed25519(&pk));
}

#[test]
fn wan_links_span_50_to_200_ms_one_way() {
    let all: Vec<u64> = (0..40)
        .flat_map(|i| {
            (0..40)
                .filter(move |j| *j != i)
                .map(move |j| pazar_consensus::sim::wan_latency_ms(i, j))
        })
        .collect();
    assert_eq!(all.iter().min(), Some(&50));
    assert_eq!(all.iter().max(), Some(&200));
}

#[test]
fn wan_finality_refuses_fewer_than_four_validators_or_no_height() {
    let dir = std::env::temp_dir();
    assert!(matches!(
        wan_finality(3, 5, 0, &dir),
        Err(pazar_consensus::sim::SimError::Size(3))
    ));
    assert!(matches!(
        wan_finality(4, 0, 0, &dir),
        Err(pazar_consensus::sim::SimError::Size(4))
    ));
}

#[test]
fn a_small_wan_run_agrees_and_takes_at_least_one_link_hop_to_finalize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = wan_finality(4, 3, 0, dir.path()).expect("the run completes");
    assert_eq!((r.validators, r.heights), (4, 3));
    // A block is final after votes cross the network: at least one one-way hop.
    assert!(r.finality_p50_ms >= 50, "{r:?}");
    assert!((100..=400).contains(&r.median_rtt_ms), "{r:?}");
}
