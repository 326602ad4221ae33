//! Deterministic simulations of many validators (feature `sim`): each validator is a real node
//! (ledger, mempool, redb store in its own directory) behind simplex and marshal, on
//! commonware's deterministic runtime and simulated network (latency, jitter, loss, links cut
//! and restored). The same seed gives the same run.
//!
//! The harness the simulation tests build their scenarios from (clusters, links cut and
//! restored, crash and restart, transaction gossip, client load, the safety checks), and
//! [`wan_finality`], the internet-scale run `pazar bench testnet` reports: many validators on
//! 50–200 ms links, finality against the median round trip. Behind a feature so that builds
//! which run no simulation do not compile a second instance of the engine (for the
//! deterministic runtime).

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

use pazar_ledger::{GenesisBalance, Params};
use pazar_node::consensus::Application;
use pazar_node::genesis::{ConsensusKey, GenesisFile, GenesisOnDisk, Validator as GenesisValidator};
use pazar_node::{Node, NodeConfig};
use pazar_types::{Address, Coin, Denom, Hash32, KeyScheme, Msg, SigningKey, TxBody};

use crate::{engine, gossip, ChainBlock, Epochs, Evidence, Finalizer, Proposer};

/// Namespace of the simulated chain's votes.
pub const NAMESPACE: &[u8] = b"pazar-sim";
/// Chain id of the simulated chain.
pub const CHAIN: &str = "pazar-sim-1";
/// Users funded in the simulated genesis ([`user`] 1 to `USERS`).
pub const USERS: u8 = 4;
/// Messages per second each simulated channel carries at most.
///
/// The rate real validators give each channel (`net.rs`). It also sizes memory: commonware's
/// resolver and backfill handlers allocate a queue of `peers × burst` slots up front, so a
/// ten times higher rate made the simulation's memory grow ten times faster with the square of
/// the validators.
pub const QUOTA: Quota = Quota::per_second(NZU32!(1_000));
/// Largest simulated message: a full gossip batch (the engine's own messages are far smaller in
/// these simulations).
const MAX_MESSAGE: u32 = gossip::MAX_MESSAGE as u32;
/// How long [`wan_finality`] may run in simulated time before it gives up.
const WAN_TIMEOUT: Duration = Duration::from_secs(600);
/// Most validators [`wan_finality`] runs: each holds a redb store and a link to every other.
pub const MAX_WAN_VALIDATORS: usize = 200;
/// Blocks per epoch of the simulated chains unless a scenario asks for shorter ones: the usual
/// scenarios stay in the first epoch.
pub const EPOCH_LENGTH: u64 = 1 << 20;

pub type Pk = ed25519::PublicKey;
pub type Ctx = deterministic::Context;

/// Why a simulation could not run, or what it found broken.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot prepare validator {0}: {1}")]
    Setup(String, String),
    #[error("validators {a} and {b} hold different blocks or state roots at height {height}")]
    Disagree { a: usize, b: usize, height: u64 },
    #[error("validator {0} has no committed block at height {1}")]
    Missing(usize, u64),
    #[error("{0} validators: between 4 and {MAX_WAN_VALIDATORS}, and at least one height")]
    Size(usize),
    #[error("validator {0} refused a client's transaction: {1}")]
    Refused(usize, String),
    #[error("validator {0} cannot read its store: {1}")]
    Store(usize, String),
    #[error("transaction {0} is not committed on validator {1}")]
    NotCommitted(String, usize),
    #[error("validators {a} and {b} hold transaction {tx} at different places")]
    Misplaced { a: usize, b: usize, tx: String },
}

/// The simulated chain's native denomination.
pub fn upzr() -> Denom {
    Denom::new("upzr").expect("a valid denomination")
}

/// Funded user `n` of the simulated genesis (1 to [`USERS`]).
pub fn user(n: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[n; 32]).expect("a valid secret")
}

/// The address validator `i` (in the set's order) stamps on the blocks it proposes.
pub fn proposer(i: usize) -> Address {
    let mut a = [0xa0; 20];
    a[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Address::Native(a)
}

/// A transfer of `1 + sequence` upzr from `from` (sequence `sequence`) to a fixed address,
/// signed and encoded as a client submits it.
pub fn transfer(from: &SigningKey, sequence: u64) -> Vec<u8> {
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

/// One validator: its consensus key, its node's directory, the address it proposes as, whether
/// it gossips transactions, its node, and the task running it.
pub struct Validator {
    pub key: ed25519::PrivateKey,
    pub dir: PathBuf,
    pub proposer: Address,
    /// Runs `gossip` on channel [`gossip::CHANNEL`] beside the engine (set before [`spawn`]).
    pub gossip: bool,
    pub node: Option<Arc<Node>>,
    pub finalizer: Option<Finalizer>,
    pub evidence: Evidence,
    pub task: Option<Handle<()>>,
}

impl Validator {
    pub fn node(&self) -> &Arc<Node> {
        self.node.as_ref().expect("the validator's node is open")
    }

    /// The height of its last committed block; 0 while its node is closed.
    pub fn height(&self) -> u64 {
        self.node.as_ref().map_or(0, |n| n.parent().height)
    }

    /// Opens its node again from its directory (after [`crash`]).
    pub fn reopen(&mut self) -> Result<(), SimError> {
        self.node = Some(open_node(&self.dir, self.proposer)?);
        Ok(())
    }
}

/// The account key of a validator: its consensus key (an ed25519 secret), so it signs
/// transactions (votes on the validator set) as the account the ledger knows it by.
pub fn account(key: &ed25519::PrivateKey) -> SigningKey {
    use commonware_codec::Encode;
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&key.encode());
    SigningKey::from_secret(KeyScheme::Ed25519, &secret).expect("an ed25519 secret")
}

/// Writes the simulated genesis into `dir`: `members` are the validator set of the first two
/// epochs (power 1 each), epochs are `epoch_length` blocks, and the users and the accounts of
/// `validators` (members or not) are funded.
pub fn write_genesis(
    dir: &Path,
    members: &[ed25519::PrivateKey],
    validators: &[ed25519::PrivateKey],
    epoch_length: u64,
) -> Result<(), SimError> {
    let setup = |e: String| SimError::Setup(dir.display().to_string(), e);
    let funded = (1..=USERS)
        .map(user)
        .chain(validators.iter().map(account))
        .map(|k| GenesisBalance {
            address: k.address(),
            coins: vec![Coin::new(1_000_000_000, upzr())],
        })
        .collect();
    let genesis = GenesisFile {
        // The simulated clock starts at the Unix epoch: blocks are stamped with it from the
        // first one on (a later genesis time would stamp the first blocks after it instead).
        genesis_time_ms: 0,
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances: funded,
        validators: members
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut key = [0u8; 32];
                key.copy_from_slice(k.public_key().as_ref());
                GenesisValidator {
                    name: format!("v{i}"),
                    address: account(k).address(),
                    power: 1,
                    consensus_key: Some(ConsensusKey(key)),
                }
            })
            .collect(),
        epoch_length,
    };
    let bytes = serde_json::to_vec(&genesis).map_err(|e| setup(e.to_string()))?;
    std::fs::write(dir.join("genesis.json"), bytes).map_err(|e| setup(e.to_string()))
}

/// Opens a node on the genesis in `dir` ([`write_genesis`]) that proposes as `proposer`.
pub fn open_node(dir: &Path, proposer: Address) -> Result<Arc<Node>, SimError> {
    let setup = |e: String| SimError::Setup(dir.display().to_string(), e);
    let path = dir.join("genesis.json");
    let genesis = GenesisOnDisk::open(&path).map_err(|e| setup(e.to_string()))?;
    Node::open(&dir.join("db"), &genesis, proposer, NodeConfig::default()).map_err(|e| setup(e.to_string()))
}

/// The height-0 block of `node`'s chain.
pub fn genesis_block(node: &Node) -> ChainBlock {
    let head = node.parent();
    ChainBlock::genesis(CHAIN, head.time_ms, head.state_root)
}

/// `n` validators with their nodes open in directories under `root`, ordered as the set orders
/// their keys (validator `i` is the set's `i`th), all in the genesis set, with epochs of
/// [`EPOCH_LENGTH`] blocks.
pub fn make_validators(n: u64, root: &Path) -> Result<(Vec<Validator>, Set<Pk>), SimError> {
    make_validators_with(n, n as usize, EPOCH_LENGTH, root)
}

/// `n` validators (in key order) of which the first `members` are the genesis set and the rest
/// follow the chain until voted in, with epochs of `epoch_length` blocks.
pub fn make_validators_with(
    n: u64,
    members: usize,
    epoch_length: u64,
    root: &Path,
) -> Result<(Vec<Validator>, Set<Pk>), SimError> {
    let mut keys: Vec<_> = (0..n).map(ed25519::PrivateKey::from_seed).collect();
    keys.sort_by_key(|k| k.public_key());
    let set = Set::from_iter_dedup(keys.iter().map(|k| k.public_key()));
    let genesis = &keys[..members.min(keys.len())];
    let mut vals = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().cloned().enumerate() {
        let dir = root.join(format!("v{}", key.public_key()));
        std::fs::create_dir_all(&dir).map_err(|e| SimError::Setup(dir.display().to_string(), e.to_string()))?;
        write_genesis(&dir, genesis, &keys, epoch_length)?;
        vals.push(Validator {
            node: Some(open_node(&dir, proposer(i))?),
            key,
            dir,
            proposer: proposer(i),
            gossip: false,
            finalizer: None,
            evidence: Evidence::default(),
            task: None,
        });
    }
    debug_assert!(vals.iter().zip(set.iter()).all(|(v, pk)| v.key.public_key() == *pk));
    Ok((vals, set))
}

/// The simulated network of `participants`, started, with no links yet.
pub async fn network(context: &Ctx, participants: &Set<Pk>) -> Oracle<Pk, Ctx> {
    let (network, oracle) = Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: MAX_MESSAGE,
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

/// Links every ordered pair of `pks` with `link`, or (with `only`) the pairs that include it.
pub async fn link(oracle: &Oracle<Pk, Ctx>, pks: &Set<Pk>, link: &Link, only: Option<usize>) {
    for (i, a) in pks.iter().enumerate() {
        for (j, b) in pks.iter().enumerate() {
            if i != j && only.is_none_or(|w| w == i || w == j) {
                oracle
                    .add_link(a.clone(), b.clone(), link.clone())
                    .await
                    .expect("the simulated network adds a link between two of its peers");
            }
        }
    }
}

/// Removes every link to and from participant `who`.
pub async fn unlink(oracle: &Oracle<Pk, Ctx>, pks: &Set<Pk>, who: usize) {
    let w = pks.iter().nth(who).expect("a participant").clone();
    for p in pks.iter().filter(|p| **p != w) {
        let _ = oracle.remove_link(w.clone(), p.clone()).await;
        let _ = oracle.remove_link(p.clone(), w.clone()).await;
    }
}

/// Starts a validator (the engine on channels 0 to 4, and gossip on [`gossip::CHANNEL`] if it
/// gossips) in its own task, so aborting that task stops all of its actors (a crash; its
/// storage, in the runtime and on disk, stays).
pub async fn spawn(context: &Ctx, oracle: &Oracle<Pk, Ctx>, _participants: &Set<Pk>, v: &mut Validator) {
    let me = v.key.public_key();
    let control = oracle.control(me.clone());
    let mut chans = Vec::new();
    for c in 0..5u64 {
        chans.push(
            control
                .register(c, QUOTA)
                .await
                .expect("a fresh channel registers on the simulated network"),
        );
    }
    let mut it = chans.into_iter();
    let mut next = || it.next().expect("five channels");
    let channels = (next(), next(), next(), next(), next());
    let node = v.node().clone();
    let gossip = if v.gossip {
        let channel = control
            .register(gossip::CHANNEL, Quota::per_second(gossip::RATE))
            .await
            .expect("a fresh channel registers on the simulated network");
        let outbox = node
            .gossip_outbox()
            .expect("a node opened for this start has gossip off");
        Some((channel, outbox))
    } else {
        None
    };
    let app: Arc<dyn Application> = node.clone();
    let cfg = engine::Config {
        genesis: genesis_block(&node),
        me: me.clone(),
        epochs: Epochs::new(app.clone(), NAMESPACE, Some(v.key.clone()))
            .expect("the simulated genesis has a validator set"),
        blocker: control.clone(),
        provider: oracle.manager(),
        partition_prefix: format!("validator-{me}"),
        leader_timeout: Duration::from_millis(500),
        floor: None,
    };
    let finalizer = Finalizer::new(app.clone());
    v.finalizer = Some(finalizer.clone());
    let evidence = v.evidence.clone();
    let task = context
        .child("validator")
        .with_attribute("pk", &me)
        .spawn(move |ctx| async move {
            let mut handles = match gossip {
                Some((channel, outbox)) => gossip::start(ctx.child("gossip"), node, outbox, channel, control),
                None => Vec::new(),
            };
            let (engine, _) = engine::start(ctx, cfg, Proposer::new(app), finalizer, evidence, channels)
                .await
                .expect("the validator's archives open in the simulated storage");
            handles.extend(engine);
            let _ = futures_util::future::join_all(handles).await;
        });
    v.task = Some(task);
}

/// Crashes a validator: aborts its task (every actor stops; its storage stays) and closes its
/// node once the aborted actors have let go of it. [`Validator::reopen`] and [`spawn`] restart
/// it.
pub async fn crash(context: &Ctx, v: &mut Validator) {
    if let Some(task) = v.task.take() {
        task.abort();
        let _ = task.await;
    }
    v.finalizer = None;
    // An aborted task's future is dropped when the runtime next polls it: the node is closed
    // once the last of them has let go of it.
    if let Some(node) = v.node.take() {
        while Arc::strong_count(&node) > 1 {
            context.sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A simulated cluster: its validators (in the set's order), the set, and the network's oracle.
pub type Cluster = (Vec<Validator>, Set<Pk>, Oracle<Pk, Ctx>);

/// A simulated network of `n` validators linked all to all with `l`, every validator started
/// except those in `idle` (left for the caller to start, crash or replace).
pub async fn cluster(context: &Ctx, root: &Path, n: u64, l: &Link, idle: &[usize]) -> Result<Cluster, SimError> {
    start_cluster(context, root, n, l, idle, false).await
}

/// [`cluster`] with every validator also gossiping the transactions its clients submit.
pub async fn gossiping_cluster(
    context: &Ctx,
    root: &Path,
    n: u64,
    l: &Link,
    idle: &[usize],
) -> Result<Cluster, SimError> {
    start_cluster(context, root, n, l, idle, true).await
}

/// [`cluster`] of `n` validators of which only the first `members` are the genesis set (the
/// others follow until voted in), with epochs of `epoch_length` blocks.
pub async fn epoch_cluster(
    context: &Ctx,
    root: &Path,
    (n, members, epoch_length): (u64, usize, u64),
    l: &Link,
    idle: &[usize],
) -> Result<Cluster, SimError> {
    let (vals, pks) = make_validators_with(n, members, epoch_length, root)?;
    start(context, vals, pks, l, idle, false).await
}

async fn start_cluster(
    context: &Ctx,
    root: &Path,
    n: u64,
    l: &Link,
    idle: &[usize],
    gossip: bool,
) -> Result<Cluster, SimError> {
    let (vals, pks) = make_validators(n, root)?;
    start(context, vals, pks, l, idle, gossip).await
}

async fn start(
    context: &Ctx,
    mut vals: Vec<Validator>,
    pks: Set<Pk>,
    l: &Link,
    idle: &[usize],
    gossip: bool,
) -> Result<Cluster, SimError> {
    let oracle = network(context, &pks).await;
    link(&oracle, &pks, l, None).await;
    for (i, v) in vals.iter_mut().enumerate() {
        v.gossip = gossip;
        if !idle.contains(&i) {
            spawn(context, &oracle, &pks, v).await;
        }
    }
    Ok((vals, pks, oracle))
}

/// Waits (in simulated time) until every validator in `idx` has committed `height`.
pub async fn wait_all(context: &Ctx, vals: &[Validator], idx: &[usize], height: u64) {
    while !idx.iter().all(|i| vals[*i].height() >= height) {
        context.sleep(Duration::from_millis(50)).await;
    }
}

/// Submits `per_user` transfers of each funded user (from its next sequence on) to one
/// validator in `idx` each, round robin, as clients do; returns their hashes.
pub fn submit_load(vals: &[Validator], idx: &[usize], per_user: u64) -> Result<Vec<Hash32>, SimError> {
    let mut hashes = Vec::new();
    for (k, n) in (1..=USERS).enumerate() {
        let i = idx[k % idx.len()];
        let node = vals[i].node();
        let u = user(n);
        let from = node.state().account(&u.address()).sequence;
        for s in from..from + per_user {
            hashes.push(
                node.submit(transfer(&u, s))
                    .map_err(|e| SimError::Refused(i, e.to_string()))?,
            );
        }
    }
    Ok(hashes)
}

/// Where validator `i` committed transaction `hash` (height and index), if it did.
pub fn tx_location(vals: &[Validator], i: usize, hash: &Hash32) -> Result<Option<(u64, u32)>, SimError> {
    vals[i]
        .node()
        .store()
        .tx_location(hash)
        .map_err(|e| SimError::Store(i, e.to_string()))
}

/// Waits (in simulated time) until every validator in `idx` has committed transaction `hash`.
pub async fn wait_committed(context: &Ctx, vals: &[Validator], idx: &[usize], hash: &Hash32) -> Result<(), SimError> {
    loop {
        let mut all = true;
        for &i in idx {
            all &= tx_location(vals, i, hash)?.is_some();
        }
        if all {
            return Ok(());
        }
        context.sleep(Duration::from_millis(20)).await;
    }
}

/// Safety: every transaction of `hashes` is committed on every validator in `idx`, once (the
/// store indexes one place per transaction), and at the same place on all of them.
pub fn check_committed_once(vals: &[Validator], idx: &[usize], hashes: &[Hash32]) -> Result<(), SimError> {
    let Some(&first) = idx.first() else {
        return Ok(());
    };
    for h in hashes {
        let tx = || h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let at = tx_location(vals, first, h)?.ok_or_else(|| SimError::NotCommitted(tx(), first))?;
        for &i in idx {
            match tx_location(vals, i, h)? {
                None => return Err(SimError::NotCommitted(tx(), i)),
                Some(other) if other != at => {
                    return Err(SimError::Misplaced {
                        a: first,
                        b: i,
                        tx: tx(),
                    })
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// The block hash and state root at every height up to `upto`, read from the node's store.
pub fn chain_of(v: &Validator, upto: u64) -> BTreeMap<u64, (Hash32, Hash32)> {
    (1..=upto)
        .filter_map(|h| {
            let b = v.node().store().block(h).ok().flatten()?;
            Some((h, (b.block.header.hash(), b.state_root)))
        })
        .collect()
}

/// Safety: every validator in `idx` holds the same block and state root at each height up to
/// `upto`.
pub fn check_agree(vals: &[Validator], idx: &[usize], upto: u64) -> Result<(), SimError> {
    let Some(&first) = idx.first() else {
        return Ok(());
    };
    let reference = chain_of(&vals[first], upto);
    for &i in idx {
        let chain = chain_of(&vals[i], upto);
        for h in 1..=upto {
            match (reference.get(&h), chain.get(&h)) {
                (None, _) => return Err(SimError::Missing(first, h)),
                (_, None) => return Err(SimError::Missing(i, h)),
                (Some(a), Some(b)) if a != b => {
                    return Err(SimError::Disagree {
                        a: first,
                        b: i,
                        height: h,
                    })
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Lossy links: 50 ms ± 20 ms, one message in ten lost.
pub fn lossy() -> Link {
    Link {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(20),
        success_rate: probability!(0.9),
    }
}

/// Good links: 10 ms ± 2 ms, nothing lost.
pub fn good() -> Link {
    Link {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(2),
        success_rate: probability!(1.0),
    }
}

/// The deterministic runtime for `seed`, giving up after `timeout` of simulated time.
pub fn runner(seed: u64, timeout: Duration) -> Runner {
    Runner::from(
        deterministic::Config::default()
            .with_seed(seed)
            .with_timeout(Some(timeout)),
    )
}

/// What [`wan_finality`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanReport {
    pub validators: usize,
    pub heights: u64,
    /// Median, over every validator and height, of the time from a block's proposal (its header
    /// time, the proposer's simulated clock) to its commit on that validator.
    pub finality_p50_ms: u64,
    /// Median round trip over every pair of validators (one way each direction, no jitter).
    pub median_rtt_ms: u64,
}

/// One-way latency of the simulated link from validator `i` to `j`: 50–200 ms, fixed per
/// ordered pair, so the two directions of a pair usually differ.
pub fn wan_latency_ms(i: usize, j: usize) -> u64 {
    50 + ((i * 31 + j * 17) % 151) as u64
}

/// Internet scale by simulation: `n` validators, each ordered pair linked at 50–200 ms (±5 ms
/// jitter, nothing lost), run until every validator committed `heights` blocks; every validator
/// must then hold the same blocks and roots. Node stores go in directories under `root`.
/// Deterministic for a given `seed`.
pub fn wan_finality(n: usize, heights: u64, seed: u64, root: &Path) -> Result<WanReport, SimError> {
    if !(4..=MAX_WAN_VALIDATORS).contains(&n) || heights == 0 {
        return Err(SimError::Size(n));
    }
    let root = root.to_path_buf();
    runner(seed, WAN_TIMEOUT).start(|context| async move {
        let (mut vals, pks) = make_validators(n as u64, &root)?;
        let oracle = network(&context, &pks).await;
        let list: Vec<Pk> = pks.iter().cloned().collect();
        let mut rtts = Vec::with_capacity(n * (n - 1));
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate() {
                if i != j {
                    rtts.push(wan_latency_ms(i, j) + wan_latency_ms(j, i));
                    let l = Link {
                        latency: Duration::from_millis(wan_latency_ms(i, j)),
                        jitter: Duration::from_millis(5),
                        success_rate: probability!(1.0),
                    };
                    oracle
                        .add_link(a.clone(), b.clone(), l)
                        .await
                        .expect("the simulated network adds a link between two of its peers");
                }
            }
        }
        for v in vals.iter_mut() {
            spawn(&context, &oracle, &pks, v).await;
        }
        let mut seen = vec![0u64; n];
        let mut latencies = Vec::with_capacity(n * heights as usize);
        while seen.iter().any(|h| *h < heights) {
            context.sleep(Duration::from_millis(5)).await;
            let now = context
                .current()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            for (i, v) in vals.iter().enumerate() {
                let h = v.height().min(heights);
                for height in seen[i] + 1..=h {
                    let b = v
                        .node()
                        .store()
                        .block(height)
                        .ok()
                        .flatten()
                        .ok_or(SimError::Missing(i, height))?;
                    latencies.push(now.saturating_sub(b.block.header.time_ms));
                }
                seen[i] = seen[i].max(h);
            }
        }
        check_agree(&vals, &(0..n).collect::<Vec<_>>(), heights)?;
        latencies.sort_unstable();
        rtts.sort_unstable();
        Ok(WanReport {
            validators: n,
            heights,
            finality_p50_ms: latencies[latencies.len() / 2],
            median_rtt_ms: rtts[rtts.len() / 2],
        })
    })
}
