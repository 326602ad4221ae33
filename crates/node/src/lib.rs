//! Pazar's node: a mempool, block production behind a consensus interface, the durable store,
//! an HTTP/JSON RPC with an event stream, and Prometheus metrics.
//!
//! The node owns the ledger state in memory and the store on disk; every block is executed and
//! committed (fsynced) under the state's write lock, so readers always see a committed state and
//! a client told "committed" will find its transaction after any crash.

pub mod consensus;
pub mod genesis;
pub mod http;
pub mod mempool;
pub mod metrics;
pub mod openapi;
pub mod rpc;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot};

use pazar_api::events::BlockEvents;
use pazar_api::node::{SimulateResult, TxState};
use pazar_api::{ErrorBody, ErrorCode};
use pazar_ledger::{BlockHeader, State};
use pazar_store::{Head, Store, StoreError, StoreOptions};
use pazar_types::block::{
    body_root, Attestation, Commit, Evidence, MAX_BLOCK_BYTES, MAX_BLOCK_COMMITS, MAX_BLOCK_DOUBLE_SIGNS, MAX_BLOCK_TXS,
};
use pazar_types::tx::MAX_TX_BYTES;
use pazar_types::{tx_hash, Address, Block, Coin, Hash32, Header, Msg, SigningKey, Tx, TxBody};

use crate::consensus::{Application, Attestor, Parent, VerifyError};
use crate::genesis::{GenesisOnDisk, GenesisRecord};

/// Name of the store record holding the genesis file's stamp, hash and header.
const GENESIS_RECORD: &str = "genesis";
use crate::mempool::{Candidate, Mempool, MempoolError, MempoolLimits};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("genesis is invalid: {0}")]
    Genesis(String),
    #[error("the data directory holds another chain (genesis {stored}); this genesis is {given}")]
    GenesisMismatch { stored: String, given: String },
    #[error("block {height} was refused by the ledger: {reason}")]
    Block { height: u64, reason: String },
    #[error("proposed block failed verification: {0}")]
    Verify(#[from] VerifyError),
    #[error(
        "finalized block {got} at height {height} differs from the block committed there: two blocks \
         were finalized at one height, which consensus must never allow"
    )]
    Conflict { height: u64, got: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a submitted transaction was refused. Each carries a stable [`ErrorCode`] for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("transaction is {0} bytes, more than the {MAX_TX_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("transaction cannot be decoded: {0}")]
    Decode(String),
    #[error("transaction is for chain {got}, this node runs {expected}")]
    WrongChain { expected: String, got: String },
    #[error("signature is invalid: {0}")]
    Signature(String),
    #[error("transaction was already committed at height {0}")]
    Committed(u64),
    #[error("fee denomination {0} is not accepted (use the native or stable denomination)")]
    FeeDenom(String),
    #[error("fee {got} is below the minimum {min} for {msgs} message(s)")]
    FeeTooLow { min: String, got: String, msgs: usize },
    #[error(transparent)]
    Mempool(#[from] MempoolError),
}

impl SubmitError {
    /// The code clients match on (and the metrics count by); its HTTP status is the code's.
    pub fn reason(&self) -> ErrorCode {
        match self {
            SubmitError::TooLarge(_) => ErrorCode::TooLarge,
            SubmitError::Decode(_) => ErrorCode::Decode,
            SubmitError::WrongChain { .. } => ErrorCode::WrongChain,
            SubmitError::Signature(_) => ErrorCode::Signature,
            SubmitError::Committed(_) => ErrorCode::Duplicate,
            SubmitError::FeeDenom(_) => ErrorCode::FeeDenom,
            SubmitError::FeeTooLow { .. } => ErrorCode::FeeTooLow,
            SubmitError::Mempool(e) => match e {
                MempoolError::Duplicate => ErrorCode::Duplicate,
                MempoolError::StaleSequence { .. } => ErrorCode::StaleSequence,
                MempoolError::TooFarAhead { .. } => ErrorCode::SequenceTooFar,
                MempoolError::SequenceTaken(_) => ErrorCode::SequenceTaken,
                MempoolError::SequenceGap { .. } => ErrorCode::SequenceGap,
                MempoolError::FeeUnpayable { .. } => ErrorCode::FeeUnpayable,
                MempoolError::Full { .. } => ErrorCode::MempoolFull,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Faucet {
    pub key: SigningKey,
    /// What one request receives.
    pub amounts: Vec<Coin>,
    pub fee: Coin,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub block_time: Duration,
    pub mempool: MempoolLimits,
    pub store: StoreOptions,
    pub max_block_txs: usize,
    /// Longest a `commit`-mode submission waits before answering "still pending".
    pub commit_wait: Duration,
    pub faucet: Option<Faucet>,
    /// Bounds of the RPC's HTTP server (connections, header time and size).
    pub http: http::HttpLimits,
    /// Event streams (`/events`) served at once.
    pub max_event_subscribers: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            block_time: Duration::from_secs(1),
            mempool: MempoolLimits::default(),
            store: StoreOptions::default(),
            max_block_txs: 20_000,
            commit_wait: Duration::from_secs(30),
            faucet: None,
            http: http::HttpLimits::default(),
            max_event_subscribers: 256,
        }
    }
}

const _: () = assert!(MAX_BLOCK_TXS >= 20_000);

pub struct Node {
    chain_id: String,
    /// SHA-256 of the genesis file this node's store was started from.
    genesis_hash: Hash32,
    proposer: Address,
    genesis_time_ms: u64,
    state: RwLock<State>,
    head: RwLock<Head>,
    mempool: Mutex<Mempool>,
    store: Store,
    blocks: broadcast::Sender<Arc<BlockEvents>>,
    waiters: Mutex<HashMap<Hash32, Vec<oneshot::Sender<TxState>>>>,
    faucet_lock: tokio::sync::Mutex<()>,
    pub metrics: Metrics,
    pub config: NodeConfig,
    last_commit: Mutex<Option<Instant>>,
    subscribers: Arc<std::sync::atomic::AtomicUsize>,
    /// Turns to run a simulation ([`MAX_SIMULATIONS`]).
    pub(crate) simulations: tokio::sync::Semaphore,
    /// Turns to serve a state snapshot ([`MAX_SNAPSHOTS`]).
    pub(crate) snapshots: Arc<tokio::sync::Semaphore>,
    /// Client addresses a snapshot is being served to (one each).
    pub(crate) snapshot_clients: Arc<Mutex<std::collections::BTreeSet<std::net::IpAddr>>>,
    /// Turns to read a certificate (`GET /sync/finalization/{h}`).
    pub(crate) certificate_reads: tokio::sync::Semaphore,
    /// Where consensus keeps its certificates, once an engine that makes them runs.
    certificates: std::sync::OnceLock<Arc<dyn consensus::Certificates>>,
    /// The height of the snapshot this node's store was restored from: blocks at and below it
    /// are not here.
    snapshot_base: Option<u64>,
    /// The consensus engine's proofs about itself, once an engine that makes them runs
    /// ([`Application::set_attestor`]).
    attestor: RwLock<Option<Arc<dyn consensus::Attestor>>>,
    /// Hashes of the last finalized blocks by height, for the commit records of proposals
    /// (which name recent heights) without reading whole blocks back from the store.
    recent_hashes: Mutex<std::collections::BTreeMap<u64, Hash32>>,
    /// Where transactions admitted from RPC clients go to be gossiped to the other validators,
    /// once an engine that gossips asked ([`Node::gossip_outbox`]).
    gossip: std::sync::OnceLock<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// Hashes of transactions outside the mempool whose signatures this node checked in a
    /// proposal, so that running the block again (speculatively, then finalized) does not
    /// check them again. The hash covers the signature: the same hash is the same bytes.
    verified: Mutex<VerifiedTxs>,
}

/// A bounded set of transaction hashes, the oldest forgotten first.
#[derive(Default)]
struct VerifiedTxs {
    set: std::collections::HashSet<Hash32>,
    order: std::collections::VecDeque<Hash32>,
}

/// Most hashes [`VerifiedTxs`] keeps: two of the largest blocks.
const VERIFIED_TXS: usize = 2 * MAX_BLOCK_TXS;

impl VerifiedTxs {
    fn insert(&mut self, h: Hash32) {
        if self.set.insert(h) {
            self.order.push_back(h);
        }
        while self.order.len() > VERIFIED_TXS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, h: &Hash32) -> bool {
        self.set.contains(h)
    }

    /// Forgets `hashes` (committed: a block repeating one fails on its sequence, and its
    /// signature is checked again).
    fn forget(&mut self, hashes: &[Hash32]) {
        if self.set.is_empty() {
            return;
        }
        for h in hashes {
            self.set.remove(h);
        }
        let set = &self.set;
        self.order.retain(|h| set.contains(h));
    }
}

/// One event subscriber's place in [`NodeConfig::max_event_subscribers`]; freed when dropped.
pub struct SubscriberSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Where submitted transactions come from: a client of the RPC, or another validator's gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Client,
    Peer,
}

/// Stable reason of a mempool or submission error, counted in metrics.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .expect("a lock holder panicked; the node cannot continue safely")
}

/// The fee rules of admission: an accepted denomination, at least the minimum per message.
fn fee_check(st: &State, body: &TxBody) -> Result<(), SubmitError> {
    let dp = st
        .params
        .denom(&body.fee.denom)
        .ok_or_else(|| SubmitError::FeeDenom(body.fee.denom.to_string()))?;
    let min = dp.min_fee_per_msg.saturating_mul(body.msgs.len() as u128);
    if body.fee.amount < min {
        return Err(SubmitError::FeeTooLow {
            min: Coin::new(min, body.fee.denom.clone()).to_string(),
            got: body.fee.to_string(),
            msgs: body.msgs.len(),
        });
    }
    Ok(())
}

/// What the mempool judges a decoded transaction by.
fn candidate(tx: &Tx, bytes: Vec<u8>, hash: Hash32) -> Candidate {
    let body = &tx.body;
    Candidate {
        bytes,
        hash,
        sender: body.sender,
        sequence: body.sequence,
        fee: body.fee.clone(),
        spend: body.max_spend(),
    }
}

/// A transaction that passed admission's stateless checks (size, encoding, chain, and its
/// signature by its sender over these bytes), waiting for the stateful ones.
struct Checked {
    tx: Tx,
    bytes: Vec<u8>,
    hash: Hash32,
}

/// Simulations run at once. Each holds the state's write lock for its transactions' work (under
/// a ledger savepoint), so more would only queue on the lock; more wait their turn (the HTTP
/// server bounds how many can wait).
pub const MAX_SIMULATIONS: usize = 2;

/// Transactions admitted from RPC clients that may wait to be gossiped ([`Node::gossip_outbox`]).
/// When the queue is full a transaction is not gossiped (counted in the metrics): it still waits
/// in this node's mempool for this node's turn to lead, and no client waits on the network.
pub const GOSSIP_QUEUE: usize = 32_768;

/// State snapshots served at once (`GET /sync/snapshot`): each holds a read transaction of the
/// store and a thread while its reader takes it.
pub const MAX_SNAPSHOTS: usize = 4;

impl Node {
    /// Opens the store at `db_path`, initialising it from `genesis` when empty, or checking that
    /// it holds this genesis and loading its state.
    pub fn open(
        db_path: &Path,
        genesis: &GenesisOnDisk,
        proposer: Address,
        config: NodeConfig,
    ) -> Result<Arc<Node>, NodeError> {
        let store = Store::open(db_path, config.store)?;
        Node::with_store(store, genesis, proposer, config)
    }

    /// The genesis record kept in `store` by an earlier start, if any (see
    /// [`GenesisOnDisk::open_with_record`]).
    pub fn genesis_record(store: &Store) -> Result<Option<GenesisRecord>, NodeError> {
        match store.node_record(GENESIS_RECORD)? {
            None => Ok(None),
            // An unreadable record is only a cache: the file is hashed again.
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        }
    }

    /// Starts a node on an opened store.
    pub fn with_store(
        store: Store,
        genesis: &GenesisOnDisk,
        proposer: Address,
        config: NodeConfig,
    ) -> Result<Arc<Node>, NodeError> {
        let gh = genesis.hash;
        let gt = genesis.header.genesis_time_ms;
        let (state, head) = match store.genesis_hash()? {
            None => {
                let full = genesis.full().map_err(|e| NodeError::Genesis(e.to_string()))?;
                let mut state = full.ledger_state().map_err(|e| NodeError::Genesis(e.to_string()))?;
                let mut head = store.init_genesis(&mut state, gh)?;
                head.time_ms = gt;
                (state, head)
            }
            Some(stored) if stored != gh => {
                return Err(NodeError::GenesisMismatch {
                    stored: hex::encode(stored),
                    given: hex::encode(gh),
                })
            }
            Some(_) => {
                let (state, mut head) = store.load_state()?;
                head.time_ms = head.time_ms.max(gt);
                (state, head)
            }
        };
        let record = genesis.record();
        if Node::genesis_record(&store)?.as_ref() != Some(&record) {
            let bytes = serde_json::to_vec(&record).map_err(|e| NodeError::Genesis(e.to_string()))?;
            store.set_node_record(GENESIS_RECORD, &bytes)?;
        }
        let snapshot_base = store.snapshot_base()?;
        let (blocks, _) = broadcast::channel(1024);
        let metrics = Metrics::default();
        metrics.height.set(head.height as i64);
        Ok(Arc::new(Node {
            chain_id: genesis.header.chain_id.clone(),
            proposer,
            genesis_hash: gh,
            genesis_time_ms: gt,
            state: RwLock::new(state),
            head: RwLock::new(head),
            mempool: Mutex::new(Mempool::new(config.mempool)),
            store,
            blocks,
            waiters: Mutex::new(HashMap::new()),
            faucet_lock: tokio::sync::Mutex::new(()),
            metrics,
            config,
            last_commit: Mutex::new(None),
            subscribers: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            simulations: tokio::sync::Semaphore::new(MAX_SIMULATIONS),
            snapshots: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOTS)),
            snapshot_clients: Arc::new(Mutex::new(std::collections::BTreeSet::new())),
            certificate_reads: tokio::sync::Semaphore::new(rpc::sync::MAX_CERTIFICATE_READS),
            certificates: std::sync::OnceLock::new(),
            snapshot_base,
            attestor: RwLock::new(None),
            recent_hashes: Mutex::new(std::collections::BTreeMap::new()),
            gossip: std::sync::OnceLock::new(),
            verified: Mutex::new(VerifiedTxs::default()),
        }))
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// SHA-256 of the chain's genesis file.
    pub fn genesis_hash(&self) -> Hash32 {
        self.genesis_hash
    }

    /// Hands the node where consensus keeps its certificates (see [`consensus::Certificates`]);
    /// the first call wins.
    pub fn set_certificates(&self, c: Arc<dyn consensus::Certificates>) {
        let _ = self.certificates.set(c);
    }

    /// Where consensus keeps its certificates, if the engine makes any (a solo node does not).
    pub fn certificates(&self) -> Option<&Arc<dyn consensus::Certificates>> {
        self.certificates.get()
    }

    /// The height of the snapshot this node's store started from, if it did.
    pub fn snapshot_base(&self) -> Option<u64> {
        self.snapshot_base
    }

    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("a lock holder panicked; the node cannot continue safely")
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .expect("a lock holder panicked; the node cannot continue safely")
    }

    pub fn head(&self) -> Head {
        *self
            .head
            .read()
            .expect("a lock holder panicked; the node cannot continue safely")
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn mempool_len(&self) -> (usize, usize) {
        let m = lock(&self.mempool);
        (m.len(), m.bytes())
    }

    /// A place for one more event subscriber, or `None` when all are taken.
    pub fn subscriber_slot(&self) -> Option<SubscriberSlot> {
        use std::sync::atomic::Ordering;
        self.subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.max_event_subscribers).then_some(n + 1)
            })
            .ok()
            .map(|_| SubscriberSlot(self.subscribers.clone()))
    }

    pub fn subscribe_blocks(&self) -> broadcast::Receiver<Arc<BlockEvents>> {
        self.blocks.subscribe()
    }

    /// Decodes and checks a transaction without state: size, encoding, chain, fee shape.
    fn precheck(&self, bytes: &[u8]) -> Result<(Tx, Hash32), SubmitError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(SubmitError::TooLarge(bytes.len()));
        }
        let (tx, digest) = Tx::decode_with_digest(bytes).map_err(|e| SubmitError::Decode(e.to_string()))?;
        self.check_chain(&tx)?;
        Ok((tx, digest))
    }

    fn check_chain(&self, tx: &Tx) -> Result<(), SubmitError> {
        if tx.body.chain_id != self.chain_id {
            return Err(SubmitError::WrongChain {
                expected: self.chain_id.clone(),
                got: tx.body.chain_id.clone(),
            });
        }
        Ok(())
    }

    /// Admits transactions that passed the stateless checks and [`Node::known`] (`checked[i]`:
    /// the decoded transaction, its bytes and hash, or why it was refused), as one by one in
    /// order: each is checked for fee and sequence against the committed state and inserted in
    /// the mempool. The state's read lock and the mempool's lock are taken once, so each
    /// transaction sees those before it (a sender's later sequence follows its earlier ones, a
    /// repeat is a duplicate; one committed since [`Node::known`] looked has a used sequence).
    /// When `gossip`, the bytes of each admitted transaction are queued for the other
    /// validators, in order. Results are in input order.
    fn admit_many(&self, checked: Vec<Result<Checked, SubmitError>>, gossip: bool) -> Vec<Result<Hash32, SubmitError>> {
        let mut out = Vec::with_capacity(checked.len());
        let mut to_gossip = Vec::new();
        let mut dropped = Vec::new();
        {
            let st = self.state();
            let mut mp = lock(&self.mempool);
            for c in checked {
                let r = c.and_then(|c| {
                    let body = &c.tx.body;
                    fee_check(&st, body)?;
                    let seq = st.account(&body.sender).sequence;
                    let copy = gossip.then(|| c.bytes.clone());
                    let hash = c.hash;
                    let cand = candidate(&c.tx, c.bytes, hash);
                    let inserted = mp.insert(cand, seq, &|d| st.balance(&body.sender, d), st.height)?;
                    dropped.extend(inserted.dropped);
                    to_gossip.extend(copy);
                    Ok(hash)
                });
                out.push(r);
            }
            self.metrics.mempool_txs.set(mp.len() as i64);
            self.metrics.mempool_bytes.set(mp.bytes() as i64);
        }
        self.notify_dropped(&dropped, "evicted or replaced by a higher-fee transaction");
        for bytes in to_gossip {
            self.gossip(bytes);
        }
        out
    }

    /// For each of `hashes`, why it is refused without further checks: it waits in the
    /// mempool (a duplicate) or is committed. The store is read once for all of them; a store
    /// that cannot be read refuses nothing here (the sequence check refuses a committed
    /// transaction anyway: its sequence is used).
    fn known(&self, hashes: &[Hash32]) -> Vec<Option<SubmitError>> {
        let committed = self
            .store
            .tx_locations(hashes)
            .unwrap_or_else(|_| vec![None; hashes.len()]);
        let mp = lock(&self.mempool);
        hashes
            .iter()
            .zip(committed)
            .map(|(h, c)| match c {
                Some((height, _)) => Some(SubmitError::Committed(height)),
                None if mp.contains(h) => Some(SubmitError::Mempool(MempoolError::Duplicate)),
                None => None,
            })
            .collect()
    }

    /// Submits one transaction to the mempool; returns its hash.
    pub fn submit(&self, bytes: Vec<u8>) -> Result<Hash32, SubmitError> {
        let r = self.submit_inner(bytes);
        if let Err(e) = &r {
            self.metrics.reject(e.reason().as_str());
        }
        r
    }

    fn submit_inner(&self, bytes: Vec<u8>) -> Result<Hash32, SubmitError> {
        let (tx, digest) = self.precheck(&bytes)?;
        let hash = tx_hash(&bytes);
        if let Some(e) = self.known(&[hash]).pop().flatten() {
            return Err(e);
        }
        tx.verify_signature_with(&digest)
            .map_err(|e| SubmitError::Signature(e.to_string()))?;
        let checked = Checked { tx, bytes, hash };
        let gossip = self.gossip.get().is_some();
        self.admit_many(vec![Ok(checked)], gossip)
            .pop()
            .expect("one result per transaction")
    }

    /// Submits many transactions, verifying their signatures with the ledger's one rule in one
    /// batch ([`pazar_types::verify_signatures`]: each signature verifies *and* its key is the
    /// sender's). Results are in input order.
    pub fn submit_batch(&self, txs: Vec<Vec<u8>>) -> Vec<Result<Hash32, SubmitError>> {
        self.submit_many(txs, Origin::Client)
    }

    /// Transactions another validator gossiped: the same admission as [`Node::submit_batch`]
    /// (a peer's bytes are as untrusted as a client's), but they are not gossiped again (every
    /// validator sends what it admitted to all the others) and a refusal is not a client's
    /// error: a transaction committed meanwhile, or already here, is normal under gossip. The
    /// metrics count what was received and what was admitted.
    pub fn submit_from_peer(&self, txs: Vec<Vec<u8>>) -> Vec<Result<Hash32, SubmitError>> {
        self.metrics.gossip_txs_received.inc_by(txs.len() as u64);
        let out = self.submit_many(txs, Origin::Peer);
        let admitted = out.iter().filter(|r| r.is_ok()).count();
        self.metrics.gossip_txs_admitted.inc_by(admitted as u64);
        out
    }

    /// Turns on gossip: from now on every transaction this node admits from its RPC clients is
    /// also queued (at most [`GOSSIP_QUEUE`]) on the returned receiver, for the consensus engine
    /// to send to the other validators. The first call gets the receiver; later ones `None`.
    pub fn gossip_outbox(&self) -> Option<tokio::sync::mpsc::Receiver<Vec<u8>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(GOSSIP_QUEUE);
        self.gossip.set(tx).ok().map(|()| rx)
    }

    /// Queues an admitted client transaction for gossip, never waiting: a full queue (or an
    /// engine that stopped reading) drops the copy and counts it.
    fn gossip(&self, bytes: Vec<u8>) {
        if let Some(q) = self.gossip.get() {
            if q.try_send(bytes).is_err() {
                self.metrics.gossip_txs_dropped.inc();
            }
        }
    }

    fn submit_many(&self, txs: Vec<Vec<u8>>, origin: Origin) -> Vec<Result<Hash32, SubmitError>> {
        // Decoded, with the signed digest and the hash; a transaction already here (waiting
        // or committed) is refused before its signature is checked: the hash covers the
        // signature, so those are bytes this node has checked already (under gossip a
        // validator often receives a transaction after the block that holds it).
        let mut pre: Vec<Result<(Tx, Hash32, Hash32), SubmitError>> = txs
            .iter()
            .map(|b| self.precheck(b).map(|(tx, digest)| (tx, digest, tx_hash(b))))
            .collect();
        let hashes: Vec<Hash32> = pre.iter().flatten().map(|(_, _, h)| *h).collect();
        let mut known = self.known(&hashes).into_iter();
        for p in pre.iter_mut() {
            if p.is_ok() {
                // `known` has one answer per pre-checked transaction, in order.
                if let Some(e) = known.next().flatten() {
                    *p = Err(e);
                }
            }
        }
        let items: Vec<(&Tx, &Hash32)> = pre.iter().flatten().map(|(tx, d, _)| (tx, d)).collect();
        let sigs = pazar_types::verify_signatures(&items);
        drop(items);
        // `sigs` has one result for each transaction still unrefused, in order.
        let mut sigs = sigs.into_iter();
        let checked: Vec<Result<Checked, SubmitError>> = txs
            .into_iter()
            .zip(pre)
            .map(|(bytes, p)| {
                let (tx, _, hash) = p?;
                let sig = sigs.next().expect("one signature result per unrefused transaction");
                sig.map_err(|e| SubmitError::Signature(e.to_string()))?;
                Ok(Checked { tx, bytes, hash })
            })
            .collect();
        let gossip = origin == Origin::Client && self.gossip.get().is_some();
        let out = self.admit_many(checked, gossip);
        if origin == Origin::Client {
            for e in out.iter().filter_map(|r| r.as_ref().err()) {
                self.metrics.reject(e.reason().as_str());
            }
        }
        out
    }

    /// What would become of `bytes` if submitted now, changing nothing. Two answers: the
    /// checks of [`Node::submit`] that do not mutate (chain, signature, duplicate, fee, sequence
    /// and payability against the committed state and the sender's pending transactions), and
    /// the ledger's run of the transaction on the committed state, after the sender's pending
    /// transactions that precede it, as the next block would run it, undone afterwards
    /// ([`State::simulate_txs`]). The ledger runs
    /// even when admission refuses, so a refusal (a send of more than the balance is refused
    /// as unpayable) comes with the ledger's own reason. Only bytes that are no transaction at
    /// all (too large, undecodable) are an error.
    pub fn simulate(&self, bytes: Vec<u8>) -> Result<SimulateResult, SubmitError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(SubmitError::TooLarge(bytes.len()));
        }
        let (tx, digest) = Tx::decode_with_digest(&bytes).map_err(|e| SubmitError::Decode(e.to_string()))?;
        let hash = tx_hash(&bytes);
        let signed = tx
            .verify_signature_with(&digest)
            .map_err(|e| SubmitError::Signature(e.to_string()));
        let stateless = self.check_chain(&tx).and_then(|()| signed.clone()).and_then(|()| {
            match self.store.tx_location(&hash).ok().flatten() {
                Some((h, _)) => Err(SubmitError::Committed(h)),
                None => Ok(()),
            }
        });
        let body = &tx.body;
        // The next block's time as this node would propose it; the ledger's rules read heights,
        // and the time only names the block. Read before the state's lock is taken.
        let time_ms = self
            .head()
            .time_ms
            .saturating_add(u64::try_from(self.config.block_time.as_millis()).unwrap_or(u64::MAX));
        // The admission checks, the pending transactions and the run see one state: the run is
        // made on the live state under a savepoint the ledger undoes, holding the write lock
        // for the transactions' own work (at most MAX_SEQUENCE_AHEAD pending ones of this
        // sender and this one), never for a copy of the state, whatever its size.
        let mut st = self.state_mut();
        let seq = st.account(&body.sender).sequence;
        let (admission, mut block) = {
            let mp = lock(&self.mempool);
            let admission = stateless.and_then(|()| fee_check(&st, body)).and_then(|()| {
                let cand = candidate(&tx, Vec::new(), hash);
                mp.check(&cand, seq, &|d| st.balance(&body.sender, d))
                    .map(|_| ())
                    .map_err(SubmitError::from)
            });
            let ahead = if body.sequence > seq {
                mp.pending_between(&body.sender, seq, body.sequence)
            } else {
                Vec::new()
            };
            (admission, ahead)
        };
        block.push(bytes);
        // The pending transactions passed the signature rule on entry to the mempool; this one
        // is marked only when it passed it above, so the ledger refuses a bad one as it would.
        let mut preverified = vec![true; block.len()];
        if let Some(last) = preverified.last_mut() {
            *last = signed.is_ok();
        }
        let header = BlockHeader {
            chain_id: self.chain_id.clone(),
            height: st.height + 1,
            time_ms,
        };
        let mut receipts = st
            .simulate_txs(&header, &block, &preverified)
            .expect("the live state's next height on this chain is never refused");
        drop(st);
        let receipt = receipts.pop().expect("n transactions have n receipts");
        let admission = admission.err().map(|e| ErrorBody {
            code: e.reason(),
            message: e.to_string(),
        });
        Ok(SimulateResult {
            hash,
            would_succeed: admission.is_none() && receipt.code == 0,
            height: header.height,
            receipt,
            admission,
        })
    }

    /// Registers interest in a transaction's fate (committed or dropped); register before
    /// submitting.
    pub fn watch(&self, hash: Hash32) -> oneshot::Receiver<TxState> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).entry(hash).or_default().push(tx);
        rx
    }

    pub fn unwatch(&self, hash: &Hash32) {
        let mut w = lock(&self.waiters);
        if let Some(v) = w.get_mut(hash) {
            v.retain(|s| !s.is_closed());
            if v.is_empty() {
                w.remove(hash);
            }
        }
    }

    fn notify_dropped(&self, hashes: &[Hash32], reason: &str) {
        if hashes.is_empty() {
            return;
        }
        let mut w = lock(&self.waiters);
        for h in hashes {
            for s in w.remove(h).unwrap_or_default() {
                let _ = s.send(TxState::Dropped { reason: reason.into() });
            }
        }
    }

    /// Whether `hash` waits in the mempool.
    pub fn is_pending(&self, hash: &Hash32) -> bool {
        lock(&self.mempool).contains(hash)
    }

    /// Sends the faucet's amounts to `to` and waits for the commit (or the drop). Devnet only.
    pub async fn faucet(self: &Arc<Self>, to: Address) -> Result<TxState, FaucetError> {
        let f = self.config.faucet.clone().ok_or(FaucetError::Disabled)?;
        // One faucet transaction at a time keeps its sequence simple.
        let _g = self.faucet_lock.lock().await;
        let from = f.key.address();
        let sequence = {
            let st = self.state();
            st.account(&from).sequence
        };
        let body = TxBody {
            chain_id: self.chain_id.clone(),
            sender: from,
            sequence,
            fee: f.fee.clone(),
            msgs: f.amounts.iter().map(|c| Msg::Send { to, amount: c.clone() }).collect(),
            memo: "faucet".into(),
        };
        let bytes = body.sign(&f.key).encode();
        let hash = tx_hash(&bytes);
        let rx = self.watch(hash);
        if let Err(e) = self.submit(bytes) {
            self.unwatch(&hash);
            return Err(FaucetError::Submit(e));
        }
        match tokio::time::timeout(self.config.commit_wait, rx).await {
            Ok(Ok(o)) => Ok(o),
            _ => Err(FaucetError::Timeout),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaucetError {
    #[error("this node has no faucet (only a devnet does)")]
    Disabled,
    #[error("faucet transaction refused: {0}")]
    Submit(SubmitError),
    #[error("faucet transaction was not committed in time")]
    Timeout,
}

fn hexs(h: &Hash32) -> String {
    hex::encode(h)
}

/// Whether `h` is a header that may follow `parent`: the next height, naming the parent's
/// hash, carrying the state root after it, stamped after it.
fn follows(parent: &Parent, h: &Header) -> Result<(), VerifyError> {
    if h.height != parent.height + 1 {
        return Err(VerifyError::Height {
            parent: parent.height,
            got: h.height,
        });
    }
    if h.parent != parent.hash {
        return Err(VerifyError::Parent {
            expected: hexs(&parent.hash),
            got: hexs(&h.parent),
        });
    }
    if h.state_root != parent.state_root {
        return Err(VerifyError::StateRoot {
            expected: hexs(&parent.state_root),
            got: hexs(&h.state_root),
        });
    }
    if h.time_ms <= parent.time_ms {
        return Err(VerifyError::Time {
            parent: parent.time_ms,
            got: h.time_ms,
        });
    }
    Ok(())
}

impl Node {
    /// Runs `f` with the state after `pending` (blocks not final yet, from the one after the
    /// last finalized block, each following the one before) and the parent they make: the last
    /// of them with the state root it commits to, computed here ([`State::speculate`] and
    /// [`Store::speculative_roots`], both undone), or the last finalized block when `pending`
    /// is empty. The state's lock is held throughout, so the head cannot move meanwhile.
    fn on_pending<T>(
        &self,
        pending: &[Block],
        f: impl FnOnce(&State, &Parent) -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        if pending.is_empty() {
            let st = self.state();
            return f(&st, &self.parent());
        }
        let mut st = self.state_mut();
        let mut parent = self.parent();
        if pending[0].header.height <= parent.height {
            return Err(VerifyError::Stale {
                height: pending[0].header.height,
                finalized: parent.height,
            });
        }
        // Each pending block follows the one before; state roots after the first are checked
        // once computed.
        for (i, b) in pending.iter().enumerate() {
            if b.header.chain_id != self.chain_id || !b.is_well_formed() {
                return Err(VerifyError::Malformed);
            }
            // The first carries the finalized root; the others' roots are not known yet.
            let root = if i == 0 { parent.state_root } else { b.header.state_root };
            follows(
                &Parent {
                    state_root: root,
                    ..parent
                },
                &b.header,
            )?;
            parent = Parent {
                height: b.header.height,
                hash: b.header.hash(),
                state_root: b.header.state_root,
                time_ms: b.header.time_ms,
            };
        }
        let headers: Vec<BlockHeader> = pending
            .iter()
            .map(|b| BlockHeader {
                chain_id: b.header.chain_id.clone(),
                height: b.header.height,
                time_ms: b.header.time_ms,
            })
            .collect();
        let preverified: Vec<Vec<bool>> = pending.iter().map(|b| self.preverified(&b.txs)).collect();
        let blocks: Vec<pazar_ledger::Pending> = pending
            .iter()
            .zip(&headers)
            .zip(&preverified)
            .map(|((b, header), pre)| pazar_ledger::Pending {
                header,
                txs: &b.txs,
                preverified: pre,
            })
            .collect();
        let store = &self.store;
        let evidence: Vec<&Evidence> = pending.iter().map(|b| &b.evidence).collect();
        if evidence.iter().any(|e| !e.is_empty()) && self.attestor().is_none() {
            return Err(VerifyError::Evidence("this node cannot check evidence".into()));
        }
        st.speculate_with_evidence(&blocks, &evidence, |after, sets| {
            let roots = store
                .speculative_roots(sets)
                .map_err(|e| VerifyError::Execution(e.to_string()))?;
            for (b, root) in pending.iter().skip(1).zip(&roots) {
                if b.header.state_root != *root {
                    return Err(VerifyError::StateRoot {
                        expected: hexs(root),
                        got: hexs(&b.header.state_root),
                    });
                }
            }
            let last = roots.last().copied().ok_or(VerifyError::Malformed)?;
            f(
                after,
                &Parent {
                    state_root: last,
                    ..parent
                },
            )
        })
        .map_err(|e| VerifyError::Execution(e.to_string()))?
    }

    /// What a validator checks of a proposal's transactions without the state: each decodes
    /// (within the size limit), is for this chain, and is validly signed by its sender (those
    /// already in this node's mempool passed that on entry; the rest are checked in one batch).
    fn check_block_txs(&self, txs: &[Vec<u8>]) -> Result<(), VerifyError> {
        let mut decoded = Vec::with_capacity(txs.len());
        for (index, bytes) in txs.iter().enumerate() {
            if bytes.len() > MAX_TX_BYTES {
                return Err(VerifyError::Transaction {
                    index,
                    reason: format!("{} bytes, over the {MAX_TX_BYTES}-byte limit", bytes.len()),
                });
            }
        }
        let hashes: Vec<Hash32> = txs.iter().map(|t| tx_hash(t)).collect();
        let known = self.preverified_hashes(&hashes);
        for (index, bytes) in txs.iter().enumerate() {
            if known[index] {
                continue;
            }
            let bad = |reason: String| VerifyError::Transaction { index, reason };
            let (tx, digest) = Tx::decode_with_digest(bytes).map_err(|e| bad(e.to_string()))?;
            if tx.body.chain_id != self.chain_id {
                return Err(bad(format!("it is for chain {}", tx.body.chain_id)));
            }
            decoded.push((index, tx, digest));
        }
        let items: Vec<(&Tx, &Hash32)> = decoded.iter().map(|(_, t, d)| (t, d)).collect();
        for ((index, _, _), r) in decoded.iter().zip(pazar_types::verify_signatures(&items)) {
            r.map_err(|e| VerifyError::Transaction {
                index: *index,
                reason: format!("signature: {e}"),
            })?;
        }
        let mut verified = lock(&self.verified);
        for (index, _, _) in &decoded {
            verified.insert(hashes[*index]);
        }
        Ok(())
    }

    /// Which of `txs` this node has already checked the signature of: those waiting in its
    /// mempool (checked on entry) and those it checked in an earlier proposal.
    fn preverified(&self, txs: &[Vec<u8>]) -> Vec<bool> {
        let hashes: Vec<Hash32> = txs.iter().map(|t| tx_hash(t)).collect();
        self.preverified_hashes(&hashes)
    }

    /// [`Node::preverified`] of transactions given by their hashes.
    fn preverified_hashes(&self, hashes: &[Hash32]) -> Vec<bool> {
        let mp = lock(&self.mempool);
        let verified = lock(&self.verified);
        hashes.iter().map(|h| mp.contains(h) || verified.contains(h)).collect()
    }
}

/// Most finalized block hashes [`Node`] keeps by height for commit records.
const RECENT_HASHES: usize = 256;

impl Node {
    fn attestor(&self) -> Option<Arc<dyn Attestor>> {
        self.attestor
            .read()
            .expect("a lock holder panicked; the node cannot continue safely")
            .clone()
    }

    /// The hash of the block at `height` on the chain of `pending` (blocks above the finalized
    /// head, oldest first): a pending block, or a finalized one.
    fn hash_at(&self, pending: &[Block], height: u64) -> Option<Hash32> {
        if let Some(first) = pending.first() {
            if height >= first.header.height {
                return pending
                    .get(usize::try_from(height - first.header.height).ok()?)
                    .map(|b| b.header.hash());
            }
        }
        if let Some(h) = lock(&self.recent_hashes).get(&height) {
            return Some(*h);
        }
        let head = self.head();
        if height == head.height {
            return Some(head.block_hash);
        }
        self.store.block(height).ok().flatten().map(|b| b.block.header.hash())
    }

    /// The evidence a proposal at `height` on `pending` carries, given the state `st` after
    /// `pending`: commit records from the next unrecorded height while this node holds their
    /// certificates (or they are old enough to go unattested), and the double signings it
    /// holds proofs of that the ledger has not recorded.
    fn evidence_for(&self, st: &State, pending: &[Block], height: u64, attestor: &dyn Attestor) -> Evidence {
        let mut ev = Evidence::default();
        let mut next = st.next_commit_height();
        while next < height && ev.commits.len() < MAX_BLOCK_COMMITS {
            let attestation = match self.hash_at(pending, next).and_then(|h| attestor.commit(next, &h)) {
                Some(a) => a,
                None if next + pazar_ledger::evidence::UNATTESTED_AFTER <= height => Attestation::Unattested,
                None => break,
            };
            ev.commits.push(Commit {
                height: next,
                attestation,
            });
            next += 1;
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in attestor.double_signs() {
            if ev.double_signs.len() == MAX_BLOCK_DOUBLE_SIGNS {
                break;
            }
            // A proof of a later epoch than the block's waits for a block of that epoch.
            if d.epoch > st.epoch_of(height) {
                continue;
            }
            let Some(key) = st.validator_keys(d.epoch).get(d.validator as usize).copied() else {
                continue;
            };
            if st.double_sign(&key, d.epoch, d.view).is_none() && seen.insert((d.epoch, d.validator, d.view)) {
                ev.double_signs.push(d);
            }
        }
        // Each record passed the ledger's rules by construction; a refusal here is a bug, and
        // a block without evidence is still a valid block.
        if let Err(e) = st.check_evidence(height, &ev) {
            tracing::error!(height, error = %e, "own evidence refused; proposing without it");
            return Evidence::default();
        }
        ev
    }

    /// Checks the proofs of `block`'s evidence (the ledger's rules were checked on the state
    /// after `pending`): every certificate finalizes the block at its height on this chain and
    /// is signed by the validators its bitmap names, every double signing is proven.
    fn check_evidence_proofs(
        &self,
        pending: &[Block],
        block: &Block,
        attestor: &dyn Attestor,
    ) -> Result<(), VerifyError> {
        for c in &block.evidence.commits {
            if let Attestation::Certified { .. } = &c.attestation {
                let hash = self
                    .hash_at(pending, c.height)
                    .ok_or_else(|| VerifyError::Evidence(format!("no block at height {} here", c.height)))?;
                attestor
                    .check_commit(c.height, &c.attestation, &hash)
                    .map_err(|e| VerifyError::Evidence(format!("commit of height {}: {e}", c.height)))?;
            }
        }
        for d in &block.evidence.double_signs {
            attestor.check_double_sign(d).map_err(|e| {
                VerifyError::Evidence(format!(
                    "double signing of validator {} in view {}: {e}",
                    d.validator, d.view
                ))
            })?;
        }
        Ok(())
    }
}

impl Application for Node {
    fn epoch_length(&self) -> Option<u64> {
        self.state().epoch_length()
    }

    fn validator_set(&self, epoch: u64) -> Option<Vec<[u8; 32]>> {
        self.state()
            .validator_set(epoch)
            .map(|s| s.iter().map(|m| m.key).collect())
    }

    fn block_hash(&self, height: u64) -> Option<Hash32> {
        self.hash_at(&[], height)
    }

    fn set_attestor(&self, attestor: Arc<dyn Attestor>) {
        *self
            .attestor
            .write()
            .expect("a lock holder panicked; the node cannot continue safely") = Some(attestor);
    }

    fn parent(&self) -> Parent {
        let h = self.head();
        Parent {
            height: h.height,
            hash: h.block_hash,
            state_root: h.state_root,
            time_ms: h.time_ms.max(self.genesis_time_ms),
        }
    }

    fn propose(&self, pending: &[Block], time_ms: u64) -> Result<Block, VerifyError> {
        let attestor = self.attestor();
        self.on_pending(pending, |st, parent| {
            // Sequences after the pending blocks: what they include is not proposed again.
            let txs: Vec<Vec<u8>> = {
                let mp = lock(&self.mempool);
                let max = self.config.max_block_txs.min(MAX_BLOCK_TXS);
                mp.reap(max, MAX_BLOCK_BYTES, |a| st.account(a).sequence)
                    .into_iter()
                    .map(|(_, b)| b)
                    .collect()
            };
            let height = parent.height + 1;
            let evidence = attestor
                .as_deref()
                .map(|a| self.evidence_for(st, pending, height, a))
                .unwrap_or_default();
            Ok(Block {
                header: Header {
                    chain_id: self.chain_id.clone(),
                    height,
                    time_ms: time_ms.max(parent.time_ms + 1),
                    parent: parent.hash,
                    state_root: parent.state_root,
                    txs_root: body_root(&txs, &evidence),
                    proposer: self.proposer,
                },
                txs,
                evidence,
            })
        })
    }

    fn verify(&self, pending: &[Block], block: &Block) -> Result<(), VerifyError> {
        let h = &block.header;
        if h.chain_id != self.chain_id {
            return Err(VerifyError::Chain {
                expected: self.chain_id.clone(),
                got: h.chain_id.clone(),
            });
        }
        if !block.is_well_formed() {
            return Err(VerifyError::Malformed);
        }
        let attestor = self.attestor();
        let evidence = &block.evidence;
        if !evidence.is_empty() && attestor.is_none() {
            return Err(VerifyError::Evidence("this node cannot check evidence".into()));
        }
        self.on_pending(pending, |st, parent| {
            follows(parent, h)?;
            match &attestor {
                Some(_) if !evidence.is_empty() => st
                    .check_evidence(h.height, evidence)
                    .map_err(|e| VerifyError::Evidence(e.to_string())),
                _ => Ok(()),
            }
        })?;
        if let Some(a) = attestor.as_deref().filter(|_| !evidence.is_empty()) {
            self.check_evidence_proofs(pending, block, a)?;
        }
        self.check_block_txs(&block.txs)
    }

    fn finalized(&self, block: Block) -> Result<(), NodeError> {
        let t0 = Instant::now();
        let height = block.header.height;
        // Delivery is at least once: a block already committed is acknowledged again, if it is
        // the same block.
        let head = self.head();
        if height <= head.height {
            let stored = self.store.block(height)?.map(|b| b.block.header.hash());
            return match stored {
                Some(hash) if hash == block.header.hash() => Ok(()),
                // Below a snapshot this node started from there is nothing to compare with;
                // consensus delivers only finalized blocks, and the snapshot was of them.
                None if self.snapshot_base.is_some_and(|b| height <= b) => Ok(()),
                _ => Err(NodeError::Conflict {
                    height,
                    got: hexs(&block.header.hash()),
                }),
            };
        }
        follows(&self.parent(), &block.header).map_err(NodeError::Verify)?;
        let hashes: Vec<Hash32> = block.txs.iter().map(|t| tx_hash(t)).collect();
        let mut st = self.state_mut();
        let preverified = self.preverified_hashes(&hashes);
        let lh = BlockHeader {
            chain_id: block.header.chain_id.clone(),
            height,
            time_ms: block.header.time_ms,
        };
        // The evidence is checked before anything runs, so a refusal changes nothing.
        if !block.evidence.is_empty() && self.attestor().is_none() {
            return Err(NodeError::Block {
                height,
                reason: "this node cannot check evidence".into(),
            });
        }
        st.check_evidence(height, &block.evidence)
            .map_err(|e| NodeError::Block {
                height,
                reason: e.to_string(),
            })?;
        let outcome = st
            .apply_block_preverified(&lh, &block.txs, &preverified)
            .map_err(|e| NodeError::Block {
                height,
                reason: e.to_string(),
            })?;
        st.apply_evidence(height, &block.evidence)
            .expect("evidence checked before the block ran, on tables the block does not touch");
        if let Some(a) = self.attestor().filter(|_| !block.evidence.double_signs.is_empty()) {
            let recorded: Vec<(u64, u32, u64)> = block
                .evidence
                .double_signs
                .iter()
                .map(|d| (d.epoch, d.validator, d.view))
                .collect();
            a.recorded(&recorded);
        }
        let changes = st.take_changes();
        let head = self.store.commit_block(&block, &outcome, changes)?;
        *self
            .head
            .write()
            .expect("a lock holder panicked; the node cannot continue safely") = head;
        {
            let mut recent = lock(&self.recent_hashes);
            recent.insert(height, head.block_hash);
            while recent.len() > RECENT_HASHES {
                recent.pop_first();
            }
        }
        lock(&self.verified).forget(&hashes);
        let dropped = {
            let mut mp = lock(&self.mempool);
            let d = mp.update(&hashes, height, |a| st.account(a).sequence, |a, d| st.balance(a, d));
            self.metrics.mempool_txs.set(mp.len() as i64);
            self.metrics.mempool_bytes.set(mp.bytes() as i64);
            d
        };
        drop(st);

        let n = block.txs.len();
        self.metrics.height.set(height as i64);
        self.metrics.blocks.inc();
        self.metrics.txs_committed.inc_by(n as u64);
        self.metrics.block_txs.observe(n as f64);
        self.metrics.commit_seconds.observe(t0.elapsed().as_secs_f64());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.metrics
            .finality_seconds
            .observe(now_ms.saturating_sub(block.header.time_ms) as f64 / 1000.0);
        {
            let mut last = lock(&self.last_commit);
            if let Some(prev) = *last {
                let secs = prev.elapsed().as_secs_f64().max(1e-3);
                self.metrics.txs_per_s.set((n as f64 / secs) as i64);
            }
            *last = Some(Instant::now());
        }
        {
            let mut w = lock(&self.waiters);
            for (i, r) in outcome.receipts.iter().enumerate() {
                for s in w.remove(&r.tx_hash).unwrap_or_default() {
                    let _ = s.send(TxState::Committed {
                        height,
                        index: i as u32,
                        receipt: r.clone(),
                    });
                }
            }
        }
        self.notify_dropped(
            &dropped,
            "dropped from the mempool: its sequence was used or it expired",
        );
        let _ = self.blocks.send(Arc::new(BlockEvents {
            height,
            hash: head.block_hash,
            time_ms: block.header.time_ms,
            receipts: outcome.receipts,
            end_block_events: outcome.end_block_events,
        }));
        Ok(())
    }
}

/// Runs a node: the consensus engine producing blocks and the RPC on `listener`, until
/// `shutdown` turns true or block production fails (a store error stops the node rather than
/// let memory and disk diverge).
pub async fn run<C: consensus::Consensus>(
    node: Arc<Node>,
    engine: C,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let app: Arc<dyn Application> = node.clone();
    let mut rpc_shutdown = shutdown.clone();
    let rpc = tokio::spawn(rpc::serve(node, listener, async move {
        let _ = rpc_shutdown.wait_for(|s| *s).await;
    }));
    let result = engine.run(app, shutdown.clone()).await;
    if result.is_err() {
        rpc.abort();
        return result;
    }
    let _ = shutdown.wait_for(|s| *s).await;
    // Open event streams would hold a graceful shutdown forever: give them a moment, then stop.
    if tokio::time::timeout(Duration::from_secs(2), rpc).await.is_err() {
        tracing::warn!("RPC connections did not close in time; stopping anyway");
    }
    result
}
