//! Deterministic simulations of many validators: each validator is a real node (ledger, mempool,
//! redb store in its own directory) behind simplex and marshal, on commonware's deterministic
//! runtime and simulated network (latency, jitter, loss, links cut and restored). Safety: at
//! every height all validators hold the same block and the same state root, and every accepted
//! transaction is committed exactly once. Liveness: finalization goes on with a validator down
//! and resumes after a partition heals. A failing seed prints how to run it again.
//!
//! The sweep runs 1,000 seeds (`PAZAR_SIM_SEEDS` sets how many; `PAZAR_SIM_SEED` runs one):
//! each seed picks one validator and what it does wrong (nothing, down, partitioned and healed,
//! equivocating).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use commonware_cryptography::{ed25519, Signer};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::deterministic::{self, Runner};
use commonware_runtime::{Clock, Handle, Quota, Runner as _, Spawner, Supervisor as _};
use commonware_utils::ordered::Set;
use commonware_utils::{probability, NZUsize, NZU32};
use serde_json::json;

use pazar_consensus::evidence::{Attestations, VerifierRng};
use pazar_consensus::{engine, ChainBlock, Evidence, Finalizer, Proposer, Scheme};
use pazar_ledger::{DoubleSignRecord, ValidatorRecord};
use pazar_node::consensus::VerifyError;
use pazar_node::consensus::{Application, Attestor};
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::{Node, NodeConfig};
use pazar_types::block::{body_root, Attestation, Block};
use pazar_types::{Address, Coin, Denom, Hash32, KeyScheme, Msg, SigningKey, TxBody};

const NAMESPACE: &[u8] = b"pazar-sim";
const CHAIN: &str = "pazar-sim-1";
const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
type Pk = ed25519::PublicKey;
type Ctx = deterministic::Context;

fn upzr() -> Denom {
    Denom::new("upzr").expect("valid")
}

fn user(n: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[n; 32]).expect("a valid secret")
}

/// One validator: its consensus key, its node's directory and node, and the task running it.
struct Validator {
    key: ed25519::PrivateKey,
    dir: PathBuf,
    node: Option<Arc<Node>>,
    finalizer: Option<Finalizer>,
    evidence: Evidence,
    task: Option<Handle<()>>,
}

impl Validator {
    fn node(&self) -> &Arc<Node> {
        self.node.as_ref().expect("the validator's node is open")
    }

    fn height(&self) -> u64 {
        self.node.as_ref().map_or(0, |n| n.parent().height)
    }
}

/// Writes one genesis (funding the users) into `dir` and opens a node on it.
fn open_node(dir: &Path) -> Arc<Node> {
    let path = dir.join("genesis.json");
    if !path.exists() {
        let balances: Vec<_> = (1..=4u8)
            .map(|n| json!({"address": user(n).address(), "coins": [{"denom": "upzr", "amount": "1000000000"}]}))
            .collect();
        let genesis = json!({
            "genesis_time_ms": 1_000,
            "chain_id": CHAIN,
            "params": pazar_ledger::Params::devnet("upzr", "uusd"),
            "balances": balances,
            "validators": [{"name": "v", "address": Address::module("v"), "power": 1}],
        });
        std::fs::write(&path, serde_json::to_vec(&genesis).expect("JSON")).expect("genesis written");
    }
    let genesis = GenesisOnDisk::open(&path).expect("genesis reads");
    Node::open(&dir.join("db"), &genesis, Address::module("v"), NodeConfig::default()).expect("the node opens")
}

fn genesis_block(node: &Node) -> ChainBlock {
    let head = node.parent();
    ChainBlock::genesis(CHAIN, head.time_ms, head.state_root)
}

fn make_validators(n: u64, root: &Path) -> (Vec<Validator>, Set<Pk>) {
    let keys: Vec<_> = (0..n).map(ed25519::PrivateKey::from_seed).collect();
    let set = Set::from_iter_dedup(keys.iter().map(|k| k.public_key()));
    let mut vals: Vec<Validator> = keys
        .into_iter()
        .map(|key| {
            let dir = root.join(format!("v{}", key.public_key()));
            std::fs::create_dir_all(&dir).expect("a validator directory");
            Validator {
                node: Some(open_node(&dir)),
                key,
                dir,
                finalizer: None,
                evidence: Evidence::default(),
                task: None,
            }
        })
        .collect();
    vals.sort_by_key(|v| v.key.public_key());
    (vals, set)
}

async fn network(context: &Ctx, participants: &Set<Pk>) -> Oracle<Pk, Ctx> {
    let (network, oracle) = Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: 1 << 20,
            max_peers_per_set: NZUsize!(participants.len()),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        participants.iter().cloned(),
    )
    .await;
    network.start();
    oracle
}

async fn link(oracle: &Oracle<Pk, Ctx>, pks: &Set<Pk>, link: &Link, only: Option<usize>) {
    for (i, a) in pks.iter().enumerate() {
        for (j, b) in pks.iter().enumerate() {
            if i != j && only.is_none_or(|w| w == i || w == j) {
                oracle
                    .add_link(a.clone(), b.clone(), link.clone())
                    .await
                    .expect("link added");
            }
        }
    }
}

async fn unlink(oracle: &Oracle<Pk, Ctx>, pks: &Set<Pk>, who: usize) {
    let w = pks.iter().nth(who).expect("a participant").clone();
    for p in pks.iter().filter(|p| **p != w) {
        let _ = oracle.remove_link(w.clone(), p.clone()).await;
        let _ = oracle.remove_link(p.clone(), w.clone()).await;
    }
}

/// Starts a validator in its own task, so aborting that task stops all of its actors (a crash;
/// its storage, in the runtime and on disk, stays).
async fn spawn(context: &Ctx, oracle: &Oracle<Pk, Ctx>, participants: &Set<Pk>, v: &mut Validator) {
    let me = v.key.public_key();
    let control = oracle.control(me.clone());
    let mut chans = Vec::new();
    for c in 0..5u64 {
        chans.push(control.register(c, QUOTA).await.expect("a channel"));
    }
    let mut it = chans.into_iter();
    let mut next = || it.next().expect("five channels");
    let channels = (next(), next(), next(), next(), next());
    let node = v.node().clone();
    let cfg = engine::Config {
        genesis: genesis_block(&node),
        me: me.clone(),
        scheme: Scheme::signer(NAMESPACE, participants.clone(), v.key.clone()).expect("a member"),
        blocker: control.clone(),
        provider: oracle.manager(),
        partition_prefix: format!("validator-{me}"),
        leader_timeout: Duration::from_millis(500),
        floor: None,
    };
    let app: Arc<dyn Application> = node;
    let finalizer = Finalizer::new(app.clone());
    v.finalizer = Some(finalizer.clone());
    let evidence = v.evidence.clone();
    let task = context
        .child("validator")
        .with_attribute("pk", &me)
        .spawn(move |ctx| async move {
            let (handles, _) = engine::start(ctx, cfg, Proposer::new(app), finalizer, evidence, channels)
                .await
                .expect("the validator's archives open");
            let _ = futures_util::future::join_all(handles).await;
        });
    v.task = Some(task);
}

/// A simulated network of `n` validators linked all to all with `l`, every validator started
/// except those in `idle` (left for the test to start, crash or replace).
async fn cluster(
    context: &Ctx,
    root: &Path,
    n: u64,
    l: &Link,
    idle: &[usize],
) -> (Vec<Validator>, Set<Pk>, Oracle<Pk, Ctx>) {
    let (mut vals, pks) = make_validators(n, root);
    let oracle = network(context, &pks).await;
    link(&oracle, &pks, l, None).await;
    for (i, v) in vals.iter_mut().enumerate() {
        if !idle.contains(&i) {
            spawn(context, &oracle, &pks, v).await;
        }
    }
    (vals, pks, oracle)
}

/// Runs `key`'s validator as simplex's `Conflicter` mock: for every vote it receives it signs
/// two, for different blocks.
async fn equivocate(context: &Ctx, oracle: &Oracle<Pk, Ctx>, pks: &Set<Pk>, key: &ed25519::PrivateKey) {
    use commonware_consensus::simplex::mocks::conflicter;
    let votes = oracle
        .control(key.public_key())
        .register(0, QUOTA)
        .await
        .expect("a channel");
    let scheme = Scheme::signer(NAMESPACE, pks.clone(), key.clone()).expect("a member");
    conflicter::Conflicter::<_, _, commonware_cryptography::sha256::Sha256>::new(
        context.child("byzantine"),
        conflicter::Config { scheme },
    )
    .start(votes);
}

async fn wait_all(context: &Ctx, vals: &[Validator], idx: &[usize], height: u64) {
    while !idx.iter().all(|i| vals[*i].height() >= height) {
        context.sleep(Duration::from_millis(50)).await;
    }
}

/// The block hash and state root at every height up to `upto`, read from the node's store.
fn chain_of(v: &Validator, upto: u64) -> BTreeMap<u64, (Hash32, Hash32)> {
    (1..=upto)
        .map(|h| {
            let b = v.node().store().block(h).expect("reads").expect("committed");
            (h, (b.block.header.hash(), b.state_root))
        })
        .collect()
}

/// Safety: every validator in `idx` holds the same block and state root at each height.
fn assert_agree(vals: &[Validator], idx: &[usize], upto: u64) {
    let first = chain_of(&vals[idx[0]], upto);
    for i in &idx[1..] {
        assert_eq!(
            chain_of(&vals[*i], upto),
            first,
            "validator {i} disagrees with {}",
            idx[0]
        );
    }
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
    Vec<(([u8; 32], u64), DoubleSignRecord)>,
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

fn send(from: &SigningKey, sequence: u64) -> Vec<u8> {
    TxBody {
        chain_id: CHAIN.into(),
        sender: from.address(),
        sequence,
        fee: Coin::new(1_000, upzr()),
        msgs: vec![Msg::Send {
            to: Address::Native([9; 20]),
            amount: Coin::new(1 + u128::from(sequence), upzr()),
        }],
        memo: String::new(),
    }
    .sign(from)
    .encode()
}

/// Submits each user's transactions to one validator each (round robin), as clients do.
fn submit_load(vals: &[Validator], idx: &[usize], per_user: u64) -> Vec<Hash32> {
    let mut hashes = Vec::new();
    for (k, n) in (1..=4u8).enumerate() {
        let v = &vals[idx[k % idx.len()]];
        let u = user(n);
        let from = v.node().state().account(&u.address()).sequence;
        for s in from..from + per_user {
            hashes.push(v.node().submit(send(&u, s)).expect("admitted"));
        }
    }
    hashes
}

/// Every hash committed exactly once, at the same place, on every validator in `idx`.
fn assert_committed_once(vals: &[Validator], idx: &[usize], hashes: &[Hash32]) {
    for h in hashes {
        let at: Vec<_> = idx
            .iter()
            .map(|i| vals[*i].node().store().tx_location(h).expect("reads"))
            .collect();
        assert!(at[0].is_some(), "transaction {} was not committed", hex::encode(h));
        assert!(
            at.iter().all(|a| *a == at[0]),
            "validators disagree on where a transaction is"
        );
    }
}

fn lossy() -> Link {
    Link {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(20),
        success_rate: probability!(0.9),
    }
}

fn good() -> Link {
    Link {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(2),
        success_rate: probability!(1.0),
    }
}

fn runner(seed: u64) -> Runner {
    Runner::from(
        deterministic::Config::default()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(600))),
    )
}

/// Runs `f` for `seed`, and says how to run that seed alone if it fails.
fn with_seed(name: &str, seed: u64, f: impl FnOnce(u64) + std::panic::UnwindSafe) {
    if let Err(e) = std::panic::catch_unwind(move || f(seed)) {
        eprintln!("{name} failed with seed {seed}; rerun it alone with PAZAR_SIM_SEED={seed} cargo test -p pazar-consensus --test sim {name}");
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
fn four_validators_run(seed: u64) {
    let victim = (seed % 4) as usize;
    let fault = [Fault::None, Fault::Down, Fault::Partitioned, Fault::Equivocating][((seed / 4) % 4) as usize];
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_path_buf();
    runner(seed).start(|context| async move {
        let idle: &[usize] = match fault {
            Fault::Down | Fault::Equivocating => &[victim],
            Fault::None | Fault::Partitioned => &[],
        };
        let (vals, pks, oracle) = cluster(&context, &root_path, 4, &lossy(), idle).await;
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
        let hashes = submit_load(&vals, &up, 5);
        let target = vals[up[0]].height() + 12;
        wait_all(&context, &vals, &up, target).await;
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
                    with_seed(
                        "four_validators_agree_on_every_block_and_root_and_commit_each_transaction_once",
                        seed,
                        four_validators_run,
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
    with_seed(
        "an_equivocating_validator_is_recorded_and_the_others_finalize",
        5,
        |seed| {
            let root = tempfile::tempdir().expect("tempdir");
            let root_path = root.path().to_path_buf();
            runner(seed).start(|context| async move {
                let (vals, pks, oracle) = cluster(&context, &root_path, 4, &good(), &[0]).await;
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
                assert!(double_signs.iter().all(|((k, _), _)| *k == byz_key));
                let byz_record = records.iter().find(|(k, _)| *k == byz_key).expect("a record").1;
                assert_eq!(byz_record.double_signs, double_signs.len() as u64);
                assert!(records
                    .iter()
                    .filter(|(k, _)| *k != byz_key)
                    .all(|(_, r)| r.double_signs == 0));
                forged_evidence_is_refused(&context, &pks, &vals[1]).await;
                let blocked = oracle.blocked().await.expect("the oracle answers");
                assert!(
                    blocked.iter().all(|(_, b)| *b == byz.public_key()),
                    "an honest validator was blocked: {blocked:?}"
                );
            });
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
async fn forged_evidence_is_refused(context: &Ctx, pks: &Set<Pk>, v: &Validator) {
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
        Scheme::verifier(NAMESPACE, pks.clone()),
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
    with_seed(
        "a_validator_offline_for_a_stretch_is_recorded_missing_those_commits",
        13,
        |seed| {
            let root = tempfile::tempdir().expect("tempdir");
            let root_path = root.path().to_path_buf();
            runner(seed).start(|context| async move {
                let (vals, pks, oracle) = cluster(&context, &root_path, 4, &good(), &[]).await;
                let all = [0, 1, 2, 3];
                wait_all(&context, &vals, &all, 3).await;
                unlink(&oracle, &pks, 3).await;
                let cut = vals[0].height();
                wait_all(&context, &vals, &[0, 1, 2], cut + 12).await;
                let back = vals[0].height();
                link(&oracle, &pks, &good(), Some(3)).await;
                let away = key_bytes(&vals[3].key.public_key());
                // Once every height up to `back` is recorded, on all four ledgers alike.
                let (records, double_signs, next) =
                    wait_conduct(&context, &vals, &all, back + 40, |c| c.2 > back).await;
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
            });
        },
    );
}

/// A validator is killed (every actor stops, its node is closed), the other three keep
/// finalizing, then it restarts from its store and the engine's journal, catches up from its
/// peers and agrees with them; no conflicting vote is ever seen.
#[test]
fn a_crashed_validator_restarts_from_its_store_and_catches_up() {
    with_seed(
        "a_crashed_validator_restarts_from_its_store_and_catches_up",
        7,
        |seed| {
            let root = tempfile::tempdir().expect("tempdir");
            let root_path = root.path().to_path_buf();
            runner(seed).start(|context| async move {
                let (mut vals, pks, oracle) = cluster(&context, &root_path, 4, &good(), &[]).await;
                wait_all(&context, &vals, &[0, 1, 2, 3], 5).await;
                let task = vals[3].task.take().expect("running");
                task.abort();
                let _ = task.await;
                vals[3].finalizer = None;
                // An aborted task's future is dropped when the runtime next polls it: the node
                // is closed once the last of them has let go of it.
                let node = vals[3].node.take().expect("open");
                while Arc::strong_count(&node) > 1 {
                    context.sleep(Duration::from_millis(1)).await;
                }
                drop(node);
                let crashed_at = {
                    let n = open_node(&vals[3].dir);
                    let h = n.parent().height;
                    drop(n);
                    h
                };
                let hashes = submit_load(&vals, &[0, 1, 2], 3);
                wait_all(&context, &vals, &[0, 1, 2], crashed_at + 10).await;
                vals[3].node = Some(open_node(&vals[3].dir));
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
            });
        },
    );
}

/// One validator is cut off: the others go on (3 of 4 is a quorum), it does not; once the
/// links are back it catches up through marshal's backfill.
#[test]
fn a_partitioned_validator_stops_then_catches_up_when_the_partition_heals() {
    with_seed(
        "a_partitioned_validator_stops_then_catches_up_when_the_partition_heals",
        3,
        |seed| {
            let root = tempfile::tempdir().expect("tempdir");
            let root_path = root.path().to_path_buf();
            runner(seed).start(|context| async move {
                let (vals, pks, oracle) = cluster(&context, &root_path, 4, &good(), &[]).await;
                wait_all(&context, &vals, &[0, 1, 2, 3], 3).await;
                unlink(&oracle, &pks, 3).await;
                let cut = vals[3].height();
                wait_all(&context, &vals, &[0, 1, 2], cut + 15).await;
                assert!(vals[3].height() <= cut + 1, "an isolated validator kept finalizing");
                link(&oracle, &pks, &good(), Some(3)).await;
                let target = vals[0].height() + 5;
                wait_all(&context, &vals, &[0, 1, 2, 3], target).await;
                assert_agree(&vals, &[0, 1, 2, 3], target);
            });
        },
    );
}

/// Seven validators, one never up (two may fail), lossy links.
#[test]
fn seven_validators_finalize_with_one_down_on_lossy_links() {
    with_seed("seven_validators_finalize_with_one_down_on_lossy_links", 11, |seed| {
        let root = tempfile::tempdir().expect("tempdir");
        let root_path = root.path().to_path_buf();
        runner(seed).start(|context| async move {
            let (vals, _, _) = cluster(&context, &root_path, 7, &lossy(), &[0]).await;
            let up: Vec<usize> = (1..7).collect();
            wait_all(&context, &vals, &up, 10).await;
            assert_agree(&vals, &up, 10);
        });
    });
}

/// Internet scale by simulation: 100 validators, each pair linked one way at 50-200 ms
/// (deterministic per pair), 10 heights. Prints, as JSON, the median time from a block's
/// proposal (its header time, the proposer's simulated clock) to its commit on each validator,
/// next to the median round trip of the links. Heavy: `cargo test -p pazar-consensus --release
/// --test sim -- --ignored --nocapture`.
#[test]
#[ignore]
fn a_hundred_validators_on_wan_links_report_finality_against_round_trip() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_path_buf();
    let n: usize = std::env::var("PAZAR_SIM_VALIDATORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    runner(0).start(|context| async move {
        let (mut vals, pks) = make_validators(n as u64, &root_path);
        let oracle = network(&context, &pks).await;
        let list: Vec<Pk> = pks.iter().cloned().collect();
        let mut rtts = Vec::new();
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate() {
                if i != j {
                    let one_way = 50 + ((i * 31 + j * 17) % 151) as u64;
                    let back = 50 + ((j * 31 + i * 17) % 151) as u64;
                    rtts.push(one_way + back);
                    let l = Link {
                        latency: Duration::from_millis(one_way),
                        jitter: Duration::from_millis(5),
                        success_rate: probability!(1.0),
                    };
                    oracle.add_link(a.clone(), b.clone(), l).await.expect("link added");
                }
            }
        }
        for v in vals.iter_mut() {
            spawn(&context, &oracle, &pks, v).await;
        }
        let heights = 10;
        let mut seen = vec![0u64; n];
        let mut latencies = Vec::new();
        while seen.iter().any(|h| *h < heights) {
            context.sleep(Duration::from_millis(5)).await;
            let now = context
                .current()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            for (i, v) in vals.iter().enumerate() {
                let h = v.height();
                for height in seen[i] + 1..=h.min(heights) {
                    let b = v.node().store().block(height).expect("reads").expect("committed");
                    latencies.push(now.saturating_sub(b.block.header.time_ms));
                }
                seen[i] = seen[i].max(h.min(heights));
            }
        }
        assert_agree(&vals, &(0..n).collect::<Vec<_>>(), heights);
        latencies.sort_unstable();
        rtts.sort_unstable();
        println!(
            "{}",
            json!({
                "validators": n,
                "sim_finality_p50_ms": latencies[latencies.len() / 2],
                "sim_median_rtt_ms": rtts[rtts.len() / 2],
            })
        );
    });
}
