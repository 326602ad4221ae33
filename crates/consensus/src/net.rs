//! Many validators over real sockets: [`Simplex`] runs this node as a validator of the sets the
//! ledger fixes for each epoch (genesis names the first; see [`crate::epochs`]), talking to the
//! others over commonware's authenticated `lookup` network (each peer's key and address known
//! in advance from `node.toml`'s peers; connections are encrypted and authenticated with the
//! validators' consensus keys, and connections from anyone else are refused). A node whose key
//! is in no set yet follows the chain and votes from the first epoch whose set holds it; a
//! validator voted in must be added to the peers of the others, under commonware's tokio runtime with its storage (simplex's journal, marshal's
//! archives) in a directory of the node's home.
//!
//! commonware's tokio runner owns its tokio runtime, so the validator runs on an OS thread of
//! its own; [`Consensus::run`] bridges the node's shutdown signal to it and turns its failure (a
//! finalized block the node cannot commit, an actor that stops, a panic) into an error.
//!
//! A validator proposes no sooner than the block time after its parent (simplex alone would
//! produce blocks as fast as the network carries votes).
//!
//! Channels: 0 to 4 are consensus's ([`engine`]), 5 is transaction gossip ([`crate::gossip`]),
//! each with its own per-peer rate; a gossip message is bounded by the batch codec, far below
//! the network's bound (a block's).

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_codec::{Copying, DecodeExt};
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{ChaCha20Poly1305, Digested, Signer};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager};
use commonware_runtime::{Clock, Metrics, Quota, Runner as _, Spawner, Supervisor as _};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::ordered::{Map, Set};
use commonware_utils::NZUsize;
use futures_util::StreamExt;
use zeroize::Zeroizing;

use pazar_node::consensus::{Application, Consensus};
use pazar_node::genesis::ConsensusKey;
use pazar_node::{Node, NodeError};

use crate::app::{Finalizer, Proposer, Scheme};
use crate::block::{ChainBlock, MAX_ENCODED_BLOCK};
use crate::engine;
use crate::epochs::Epochs;
use crate::evidence::Evidence;
use crate::gossip;
use crate::sync::MarshalCertificates;

/// Largest message on any channel: a full block with room for the framing of the block
/// broadcast and of a backfill response (a block with its finalization certificate).
const MAX_MESSAGE: usize = MAX_ENCODED_BLOCK + (1 << 20);

// A gossip batch is checked against its own, smaller bound when decoded.
const _: () = assert!(gossip::MAX_MESSAGE <= MAX_MESSAGE);

/// Messages per second each peer may send on each channel (votes, certificates, requests,
/// blocks). Far above what a validator sends at any block time; it bounds a faulty peer.
const CHANNEL_RATE: NonZeroU32 = commonware_utils::NZU32!(1_000);

/// Capacity of the network's internal mailboxes.
const MAILBOX: NonZeroUsize = NZUsize!(1_024);

/// How often the watcher looks for a finalized block the node could not commit.
const WATCH: Duration = Duration::from_millis(100);

/// How often the engine's metrics are copied to the node's.
const ENGINE_METRICS_EVERY: Duration = Duration::from_secs(1);

/// Storage partitions of the validator (simplex's journal, marshal's archives and cache).
const PARTITION_PREFIX: &str = "pazar";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the validator key is not an ed25519 key: consensus votes are ed25519 signatures")]
    KeyScheme,
    #[error("genesis validator consensus key {0} is not a valid ed25519 public key")]
    BadValidatorKey(ConsensusKey),
    #[error("peer {0} is not a valid ed25519 public key")]
    BadPeerKey(ConsensusKey),
    #[error("peer {0} is this node itself")]
    PeerIsSelf(ConsensusKey),
    #[error("peer {0} is listed twice")]
    DuplicatePeer(ConsensusKey),
    #[error("genesis validator {0} has no address among the peers (add `{0}@HOST:PORT` to peers)")]
    NoAddress(ConsensusKey),
    #[error(transparent)]
    Epochs(#[from] crate::epochs::EpochsError),
    #[error("cannot resolve peer address {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    // The I/O error is part of the message, not a source: these errors also reach the node as
    // text, where a source would be lost.
    #[error("cannot listen for peers on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
    #[error("cannot create the consensus directory {path}: {error}")]
    Storage { path: String, error: std::io::Error },
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("a finalized block could not be committed; consensus stopped")]
    Finalizer,
    #[error("a consensus actor stopped: {0}")]
    Stopped(String),
    #[error("the consensus runtime panicked: {0}")]
    Panicked(String),
}

/// A peer as `node.toml` names it: `PUBKEYHEX@HOST:PORT`, the validator's consensus key and
/// the address its p2p listener is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub key: ConsensusKey,
    pub addr: String,
}

impl std::str::FromStr for Peer {
    type Err = String;

    fn from_str(s: &str) -> Result<Peer, String> {
        let (key, addr) = s
            .split_once('@')
            .ok_or_else(|| format!("peer {s:?} is not PUBKEYHEX@HOST:PORT"))?;
        let key: ConsensusKey = key.parse()?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("peer {s:?} has no port (PUBKEYHEX@HOST:PORT)"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("peer {s:?}: {addr:?} is not HOST:PORT"));
        }
        Ok(Peer {
            key,
            addr: addr.to_string(),
        })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.key, self.addr)
    }
}

/// What a validator needs to join the network.
pub struct Settings {
    /// The chain's id and its genesis file's hash: the namespace of every vote and of the p2p
    /// handshake ([`crate::sync::namespace`]), so signatures of one chain are worthless on
    /// another.
    pub chain_id: String,
    pub genesis_hash: pazar_types::Hash32,
    /// The genesis validator set: every genesis validator's consensus key (later sets come
    /// from the ledger).
    pub validators: Vec<ConsensusKey>,
    /// This validator's ed25519 secret (the same key as its account's).
    pub secret: Zeroizing<[u8; 32]>,
    /// Where this validator's p2p listener binds.
    pub listen: SocketAddr,
    /// Every other validator (of genesis, or voted in since, or to be) with its address.
    pub peers: Vec<Peer>,
    /// The consensus storage directory (inside the node's home).
    pub storage_dir: PathBuf,
    /// The height-0 block every validator starts from.
    pub genesis: ChainBlock,
    /// The least time between a block and its parent.
    pub block_time: Duration,
    /// The finalization of the first block this validator executes when its state came from a
    /// snapshot ([`crate::sync`]); `None` when it replays the chain from genesis.
    pub floor: Option<engine::Finalization>,
    /// Filled with marshal's archive once the engine runs, for the RPC to serve certificates.
    pub certificates: MarshalCertificates,
}

/// One validator behind simplex over real sockets; see the module's documentation.
pub struct Simplex {
    chain_id: String,
    genesis_hash: pazar_types::Hash32,
    key: PrivateKey,
    addresses: Map<PublicKey, Address>,
    storage_dir: PathBuf,
    genesis: ChainBlock,
    block_time: Duration,
    floor: Option<engine::Finalization>,
    certificates: MarshalCertificates,
    /// The node whose client transactions are gossiped and which admits its peers' ones.
    gossip: Option<Arc<Node>>,
}

impl Simplex {
    /// Checks the settings: every genesis validator but this node has an address, and every
    /// peer is a valid key, listed once. This node need not be a genesis validator (it follows
    /// until a set holds it).
    pub fn new(s: Settings) -> Result<Simplex, NetError> {
        let key = PrivateKey::decode(Copying(&s.secret[..])).map_err(|_| NetError::KeyScheme)?;
        let me = key.public_key();
        let my_key = consensus_key(&me);
        let mut set = Vec::with_capacity(s.validators.len());
        for v in &s.validators {
            set.push(PublicKey::decode(Copying(&v.0[..])).map_err(|_| NetError::BadValidatorKey(*v))?);
        }
        let set = Set::from_iter_dedup(set);
        if set.position(&me).is_none() {
            tracing::warn!(key = %my_key, "this node is not a genesis validator: it follows until a validator set holds it");
        }
        let mut addresses = vec![(me.clone(), Address::Symmetric(s.listen))];
        for p in &s.peers {
            if p.key == my_key {
                return Err(NetError::PeerIsSelf(p.key));
            }
            let pk = PublicKey::decode(Copying(&p.key.0[..])).map_err(|_| NetError::BadPeerKey(p.key))?;
            if addresses.iter().any(|(k, _)| *k == pk) {
                return Err(NetError::DuplicatePeer(p.key));
            }
            addresses.push((pk, Address::Symmetric(resolve(&p.addr)?)));
        }
        for v in set.iter() {
            if !addresses.iter().any(|(k, _)| k == v) {
                return Err(NetError::NoAddress(consensus_key(v)));
            }
        }
        // The network's listener panics when it cannot bind; say why before anything starts
        // (the port may still be taken in between, which then ends `run` as a panic).
        drop(std::net::TcpListener::bind(s.listen).map_err(|error| NetError::Listen { addr: s.listen, error })?);
        let addresses = Map::from_iter_dedup(addresses);
        Ok(Simplex {
            chain_id: s.chain_id,
            genesis_hash: s.genesis_hash,
            key,
            addresses,
            storage_dir: s.storage_dir,
            genesis: s.genesis,
            block_time: s.block_time,
            floor: s.floor,
            certificates: s.certificates,
            gossip: None,
        })
    }

    /// Gossips the transactions `node` admits from its clients to the other validators and
    /// admits theirs into `node` ([`crate::gossip`]); `node` must be the node this validator
    /// runs. Without it, a transaction waits in the mempool of the validator it reached until
    /// that validator leads.
    pub fn with_gossip(mut self, node: Arc<Node>) -> Simplex {
        self.gossip = Some(node);
        self
    }

    /// Runs the validator on the calling thread until `stop` resolves (or its sender is
    /// dropped) or the validator fails.
    fn run_validator(
        self,
        app: Arc<dyn Application>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), NetError> {
        std::fs::create_dir_all(&self.storage_dir).map_err(|error| NetError::Storage {
            path: self.storage_dir.display().to_string(),
            error,
        })?;
        let runtime = commonware_runtime::tokio::Config::new()
            .with_storage_directory(self.storage_dir.clone())
            .with_worker_threads(2);
        commonware_runtime::tokio::Runner::new(runtime).start(|context| async move {
            let namespace = crate::sync::namespace(&self.chain_id, &self.genesis_hash);
            let me = self.key.public_key();
            let listen = match self.addresses.get_value(&me) {
                Some(Address::Symmetric(a)) => *a,
                _ => unreachable!("this validator's own address is a socket address"),
            };
            let handshake = Cups::<_, ChaCha20Poly1305>::new(
                Sake {
                    signer: self.key.clone(),
                    synchrony_bound: Duration::from_secs(5),
                    max_handshake_age: Duration::from_secs(10),
                    version: sake::Version::V1,
                },
                cups::Version::V1,
            );
            let max_message = u32::try_from(MAX_MESSAGE).expect("a block fits a u32 length");
            let p2p = lookup::Config::local(
                handshake,
                &namespace,
                listen,
                NZUsize!(self.addresses.len().max(1)),
                max_message,
                MAILBOX,
            );
            let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p);
            let _ = oracle.track(0, self.addresses.clone());
            let quota = Quota::per_second(CHANNEL_RATE);
            let mut channel = |c: u64| network.register(c, quota);
            let channels = (channel(0), channel(1), channel(2), channel(3), channel(4));
            // Registered whether or not this validator gossips: peers that do may send on it.
            let gossip_channel = network.register(gossip::CHANNEL, Quota::per_second(gossip::RATE));
            let network = network.start();

            let epochs = Epochs::new(app.clone(), &namespace, Some(self.key.clone()))?;
            let finalizer = Finalizer::new(app.clone());
            let proposer = Paced {
                inner: Proposer::new(app),
                block_time: self.block_time,
            };
            let cfg = engine::Config {
                genesis: self.genesis.clone(),
                me: me.clone(),
                epochs,
                blocker: oracle.clone(),
                provider: oracle.clone(),
                partition_prefix: PARTITION_PREFIX.to_string(),
                leader_timeout: self.block_time + Duration::from_secs(1),
                floor: self.floor.clone(),
            };
            let (mut handles, marshal) = engine::start(
                context.child("validator"),
                cfg,
                proposer,
                finalizer.clone(),
                Evidence::default(),
                channels,
            )
            .await?;
            self.certificates.set(marshal.clone());
            handles.push(network);
            // The validator-set hand-off records of the epochs this node passes through, for
            // the nodes that sync their state from it ([`crate::handoff`]).
            if let Some(node) = &self.gossip {
                handles.push(crate::handoff::start(context.child("handoffs"), node.clone(), marshal));
            }
            let gossiping = self.gossip.as_ref().and_then(|n| Some((n.clone(), n.gossip_outbox()?)));
            if let Some((node, outbox)) = gossiping {
                handles.extend(gossip::start(
                    context.child("gossip"),
                    node,
                    outbox,
                    gossip_channel,
                    oracle,
                ));
            }
            tracing::info!(peers = self.addresses.len() - 1, %listen, "consensus started");
            let mut actors = futures_util::future::select_all(handles);
            let metrics_node = self.gossip.clone();
            let mut next_metrics = context.current();
            loop {
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    (r, i, _) = &mut actors => {
                        let why = match r {
                            Ok(()) => "it returned".to_string(),
                            Err(e) => e.to_string(),
                        };
                        return Err(NetError::Stopped(format!("actor {i}: {why}")));
                    }
                    _ = context.sleep(WATCH) => {
                        if finalizer.failed() {
                            return Err(NetError::Finalizer);
                        }
                        // The engine's own metrics (view, peers, finalized height) on the
                        // node's /metrics, refreshed every second.
                        if let Some(node) = &metrics_node {
                            if context.current() >= next_metrics {
                                node.metrics.set_engine(context.encode());
                                next_metrics = context.current() + ENGINE_METRICS_EVERY;
                            }
                        }
                    }
                }
            }
        })
    }
}

impl Consensus for Simplex {
    async fn run(
        self,
        app: Arc<dyn Application>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("consensus".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_validator(app, stop_rx)))
                    .unwrap_or_else(|p| Err(NetError::Panicked(panic_message(&p))));
                let _ = done_tx.send(r);
            })
            .map_err(|e| NodeError::Internal(format!("cannot start the consensus thread: {e}")))?;
        let result = tokio::select! {
            r = &mut done_rx => match r {
                // The validator stops only when told to: ending by itself is a failure.
                Ok(Ok(())) => Err(NetError::Stopped("consensus ended by itself".into())),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(NetError::Panicked("the consensus thread ended without a result".into())),
            },
            _ = stopping(&mut shutdown) => {
                let _ = stop_tx.send(());
                match (&mut done_rx).await {
                    Ok(r) => r,
                    Err(_) => Err(NetError::Panicked("the consensus thread ended without a result".into())),
                }
            }
        };
        // The thread has sent its result: it is ending.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        result.map_err(|e| NodeError::Internal(format!("consensus: {e}")))
    }
}

/// The node's [`Proposer`], proposing no sooner than `block_time` after the parent's time.
#[derive(Clone)]
struct Paced {
    inner: Proposer,
    block_time: Duration,
}

impl<E: Clock + Spawner + Metrics> commonware_consensus::Application<E> for Paced {
    type SigningScheme = Scheme;
    type Context = Context<Digest, PublicKey>;
    type Block = ChainBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, context): (E, Self::Context),
        ancestry: impl Ancestry<Self::Block>,
        input: (),
    ) -> Option<Digested<Self::Block>> {
        // The first block of the ancestry is the parent; a clone leaves the original unread.
        let parent = ancestry.clone().next().await?;
        let due = parent
            .inner()
            .block()
            .header
            .time_ms
            .saturating_add(millis(self.block_time));
        let now = crate::app::now_ms(&runtime);
        // At most one block time: a parent stamped in the future (a fast clock) must not stall
        // this proposer beyond the view's timeout.
        let wait = Duration::from_millis(due.saturating_sub(now)).min(self.block_time);
        if !wait.is_zero() {
            runtime.sleep(wait).await;
        }
        self.inner.propose((runtime, context), ancestry, input).await
    }

    async fn verify(&mut self, context: (E, Self::Context), ancestry: impl Ancestry<Self::Block>) -> bool {
        self.inner.verify(context, ancestry).await
    }
}

/// Resolves once `shutdown` turns true, or its sender is gone.
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn consensus_key(pk: &PublicKey) -> ConsensusKey {
    let mut k = [0u8; 32];
    k.copy_from_slice(pk.as_ref());
    ConsensusKey(k)
}

fn resolve(addr: &str) -> Result<SocketAddr, NetError> {
    let err = |reason: String| NetError::Resolve {
        addr: addr.to_string(),
        reason,
    };
    addr.to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
