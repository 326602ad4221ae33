//! Transaction gossip between validators, on commonware's deterministic runtime and simulated
//! network, each validator a real node (ledger, mempool, redb store) behind simplex and
//! marshal with `pazar_consensus::gossip` on channel 5: a transaction submitted to one
//! validator is committed in blocks the others propose, once; a peer that sends bytes that are
//! not a batch is blocked, one whose transactions are refused by admission is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use commonware_cryptography::{ed25519, Signer};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_p2p::{Recipients, Sender as _};
use commonware_runtime::deterministic::{self, Runner};
use commonware_runtime::{Clock, Quota, Runner as _, Spawner, Supervisor as _};
use commonware_utils::ordered::Set;
use commonware_utils::{probability, NZUsize, NZU32};
use serde_json::json;

use pazar_consensus::gossip::{self, Batch};
use pazar_consensus::{engine, ChainBlock, Evidence, Finalizer, Proposer, Scheme};
use pazar_node::consensus::Application;
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::{Node, NodeConfig};
use pazar_types::{Address, Coin, Denom, Hash32, KeyScheme, Msg, SigningKey, TxBody};

const NAMESPACE: &[u8] = b"pazar-gossip";
const CHAIN: &str = "pazar-gossip-1";
const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
type Pk = ed25519::PublicKey;
type Ctx = deterministic::Context;

fn user(n: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[n; 32]).expect("a valid secret")
}

/// The address validator `i` stamps on the blocks it proposes.
fn proposer(i: usize) -> Address {
    Address::Native([100 + i as u8; 20])
}

struct Validator {
    key: ed25519::PrivateKey,
    node: Arc<Node>,
}

/// One genesis funding users 1 to 4, in `dir`; a node on it that signs blocks as `proposer`.
fn open_node(dir: &Path, proposer: Address) -> Arc<Node> {
    let path = dir.join("genesis.json");
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
    let genesis = GenesisOnDisk::open(&path).expect("genesis reads");
    Node::open(&dir.join("db"), &genesis, proposer, NodeConfig::default()).expect("the node opens")
}

/// Four validators sorted by key (the network's order), a simulated network linking them all
/// on short reliable links, and every validator but those in `idle` running with gossip.
async fn cluster(context: &Ctx, root: &Path, idle: &[usize]) -> (Vec<Validator>, Set<Pk>, Oracle<Pk, Ctx>) {
    let mut keys: Vec<_> = (0..4u64).map(ed25519::PrivateKey::from_seed).collect();
    keys.sort_by_key(|k| k.public_key());
    let vals: Vec<Validator> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let dir: PathBuf = root.join(format!("v{i}"));
            std::fs::create_dir_all(&dir).expect("a validator directory");
            Validator {
                node: open_node(&dir, proposer(i)),
                key,
            }
        })
        .collect();
    let pks = Set::from_iter_dedup(vals.iter().map(|v| v.key.public_key()));
    let (network, oracle) = Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: u32::try_from(gossip::MAX_MESSAGE).expect("fits"),
            max_peers_per_set: NZUsize!(4),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        pks.iter().cloned(),
    )
    .await;
    network.start();
    let link = Link {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(2),
        success_rate: probability!(1.0),
    };
    for a in pks.iter() {
        for b in pks.iter().filter(|b| *b != a) {
            oracle
                .add_link(a.clone(), b.clone(), link.clone())
                .await
                .expect("link added");
        }
    }
    for (i, v) in vals.iter().enumerate() {
        if !idle.contains(&i) {
            spawn(context, &oracle, &pks, v).await;
        }
    }
    (vals, pks, oracle)
}

/// Starts a validator: the engine on channels 0 to 4, gossip on channel 5.
async fn spawn(context: &Ctx, oracle: &Oracle<Pk, Ctx>, participants: &Set<Pk>, v: &Validator) {
    let me = v.key.public_key();
    let control = oracle.control(me.clone());
    let mut chans = Vec::new();
    for c in 0..5u64 {
        chans.push(control.register(c, QUOTA).await.expect("a channel"));
    }
    let mut it = chans.into_iter();
    let mut next = || it.next().expect("five channels");
    let channels = (next(), next(), next(), next(), next());
    let gossip_channel = control
        .register(gossip::CHANNEL, Quota::per_second(gossip::RATE))
        .await
        .expect("a channel");
    let node = v.node.clone();
    let head = node.parent();
    let cfg = engine::Config {
        genesis: ChainBlock::genesis(CHAIN, head.time_ms, head.state_root),
        me: me.clone(),
        scheme: Scheme::signer(NAMESPACE, participants.clone(), v.key.clone()).expect("a member"),
        blocker: control.clone(),
        provider: oracle.manager(),
        partition_prefix: format!("validator-{me}"),
        leader_timeout: Duration::from_millis(500),
        floor: None,
    };
    let outbox = node.gossip_outbox().expect("gossip is turned on once");
    let app: Arc<dyn Application> = node.clone();
    let finalizer = Finalizer::new(app.clone());
    context
        .child("validator")
        .with_attribute("pk", &me)
        .spawn(move |ctx| async move {
            let mut handles = gossip::start(ctx.child("gossip"), node, outbox, gossip_channel, control);
            let (engine, _) = engine::start(ctx, cfg, Proposer::new(app), finalizer, Evidence::default(), channels)
                .await
                .expect("the validator's archives open");
            handles.extend(engine);
            let _ = futures_util::future::join_all(handles).await;
        });
}

fn send(from: &SigningKey, sequence: u64) -> Vec<u8> {
    TxBody {
        chain_id: CHAIN.into(),
        sender: from.address(),
        sequence,
        fee: Coin::new(1_000, Denom::new("upzr").expect("valid")),
        msgs: vec![Msg::Send {
            to: Address::Native([9; 20]),
            amount: Coin::new(1 + u128::from(sequence), Denom::new("upzr").expect("valid")),
        }],
        memo: String::new(),
    }
    .sign(from)
    .encode()
}

/// Waits until `hash` is committed on every validator in `idx`.
async fn committed(context: &Ctx, vals: &[Validator], idx: &[usize], hash: &Hash32) {
    while !idx
        .iter()
        .all(|i| vals[*i].node.store().tx_location(hash).expect("reads").is_some())
    {
        context.sleep(Duration::from_millis(20)).await;
    }
}

async fn height_at_least(context: &Ctx, vals: &[Validator], idx: &[usize], height: u64) {
    while !idx.iter().all(|i| vals[*i].node.parent().height >= height) {
        context.sleep(Duration::from_millis(20)).await;
    }
}

fn runner(seed: u64) -> Runner {
    Runner::from(
        deterministic::Config::default()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(300))),
    )
}

/// Clients send only to validator 0, one transaction per user and round, for eight rounds of
/// rotating leaders: every transaction is committed once, at the same place on all four, and
/// validators other than 0 proposed blocks holding some of them (without gossip, only validator
/// 0's blocks could). Each of the others received every one of them once, and gossiped none on.
#[test]
fn a_transaction_submitted_to_one_validator_is_committed_in_blocks_others_propose() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_path_buf();
    runner(1).start(|context| async move {
        let (vals, _, _) = cluster(&context, &root_path, &[]).await;
        let all = [0, 1, 2, 3];
        height_at_least(&context, &vals, &all, 2).await;
        let mut proposers = Vec::new();
        let mut hashes = Vec::new();
        for round in 0..8u64 {
            let mut this_round = Vec::new();
            for n in 1..=4u8 {
                let h = vals[0].node.submit(send(&user(n), round)).expect("admitted");
                this_round.push(h);
            }
            for h in &this_round {
                committed(&context, &vals, &all, h).await;
                let (height, _) = vals[0].node.store().tx_location(h).expect("reads").expect("committed");
                let block = vals[0].node.store().block(height).expect("reads").expect("stored");
                proposers.push(block.block.header.proposer);
            }
            hashes.extend(this_round);
        }
        for h in &hashes {
            let at: Vec<_> = vals
                .iter()
                .map(|v| v.node.store().tx_location(h).expect("reads"))
                .collect();
            assert!(
                at.iter().all(|a| a.is_some() && *a == at[0]),
                "validators disagree on a transaction"
            );
        }
        assert!(
            proposers.iter().any(|p| *p != proposer(0)),
            "every transaction submitted to validator 0 waited for its own blocks: {proposers:?}"
        );
        let sent = vals[0].node.metrics.gossip_txs_sent.get();
        assert_eq!(
            sent,
            3 * hashes.len() as u64,
            "each transaction went to the three others once"
        );
        for v in &vals[1..] {
            let m = &v.node.metrics;
            assert_eq!(m.gossip_txs_received.get(), hashes.len() as u64);
            assert_eq!(m.gossip_txs_sent.get(), 0, "what was received is not gossiped again");
            assert!(
                m.gossip_txs_admitted.get() > 0,
                "a peer admitted none of the gossiped transactions"
            );
        }
        assert_eq!(vals[0].node.metrics.gossip_txs_dropped.get(), 0);
    });
}

/// Validator 3 is not running consensus but is connected: it gossips a well-formed batch of
/// transactions admission refuses (already committed, twice, and bytes that are no
/// transaction), and nobody blocks it; then bytes that are not a batch, and all three block it.
/// The three keep finalizing.
#[test]
fn a_peer_sending_undecodable_gossip_is_blocked_and_one_sending_refused_transactions_is_not() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_path_buf();
    runner(2).start(|context| async move {
        let (vals, pks, oracle) = cluster(&context, &root_path, &[3]).await;
        let live = [0, 1, 2];
        height_at_least(&context, &vals, &live, 2).await;
        let tx = send(&user(1), 0);
        let h = vals[0].node.submit(tx.clone()).expect("admitted");
        committed(&context, &vals, &live, &h).await;

        let rogue = pks.iter().nth(3).expect("four").clone();
        let (mut sender, _receiver) = oracle
            .control(rogue.clone())
            .register(gossip::CHANNEL, Quota::per_second(gossip::RATE))
            .await
            .expect("a channel");
        let mut refused = Batch::new();
        for t in [tx.clone(), tx, b"not a transaction".to_vec()] {
            refused.push(t).expect("room");
        }
        let before: Vec<u64> = vals.iter().map(|v| v.node.metrics.gossip_txs_received.get()).collect();
        assert_eq!(sender.send(Recipients::All, refused.encode(), false).len(), 3);
        context.sleep(Duration::from_secs(1)).await;
        for i in live {
            let m = &vals[i].node.metrics;
            assert_eq!(
                m.gossip_txs_received.get(),
                before[i] + 3,
                "validator {i} did not read the batch"
            );
        }
        assert!(
            oracle.blocked().await.expect("the oracle answers").is_empty(),
            "a peer was blocked for transactions admission refused"
        );

        let mut garbage = refused.encode();
        garbage.push(0);
        sender.send(Recipients::All, garbage, false);
        context.sleep(Duration::from_secs(1)).await;
        let blocked = oracle.blocked().await.expect("the oracle answers");
        assert_eq!(blocked.len(), 3, "{blocked:?}");
        assert!(blocked.iter().all(|(_, b)| *b == rogue), "{blocked:?}");

        let target = vals[0].node.parent().height + 3;
        height_at_least(&context, &vals, &live, target).await;
    });
}
