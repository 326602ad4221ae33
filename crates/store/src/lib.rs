//! Pazar's durable store: blocks with their receipts, a transaction index, the ledger state and a
//! Jellyfish Merkle tree over it, all in one redb database.
//!
//! A block is committed in one redb write transaction (fsynced before `commit_block` returns), so
//! after a crash at any instant the store holds exactly the blocks committed before it, with the
//! state and root that belong to them. The state root of version `h` commits to every ledger
//! entry after block `h`; the header of block `h + 1` carries it.
//!
//! The store knows nothing of networking, clocks or consensus; it never decides what a block is,
//! it records what the node hands it.

use std::path::Path;

use borsh::{BorshDeserialize, BorshSerialize};
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::Sha256;

use pazar_ledger::{BlockOutcome, RestoreError, State, StateChange, StateRestorer};
use pazar_types::{Block, Hash32};

mod history;
mod snapshot;
pub use snapshot::{
    read_frame, write_frame, Frame, Restore, SnapshotChunk, SnapshotError, SnapshotHead, CHUNK_ENTRIES, MAX_FRAME_BYTES,
};

/// redb's page cache.
const CACHE_BYTES: usize = 256 << 20;
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const TX_INDEX: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("tx_index");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const JMT_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_nodes");
/// `key_hash ‖ version (big-endian)` → `0` (deleted) or `1 ‖ value`.
const JMT_VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_values");
/// `stale_since (big-endian) ‖ node key`: nodes no version from `stale_since` on needs.
const JMT_STALE_NODES: TableDefinition<&[u8], ()> = TableDefinition::new("jmt_stale_nodes");
/// `stale_since (big-endian) ‖ key_hash ‖ old version`: value versions superseded at `stale_since`.
const JMT_STALE_VALUES: TableDefinition<&[u8], ()> = TableDefinition::new("jmt_stale_values");

const HEAD_KEY: &str = "head";
const GENESIS_KEY: &str = "genesis";
const FORMAT_KEY: &str = "format";
/// Version of the on-disk layout and of the ledger's encoding of its state; a store of another
/// version is refused, never reinterpreted. 2: bids and orders carry their expiry, the params
/// their timeouts, and tables 16–18 (expiry indexes, auditor index) exist.
const FORMAT: &[u8] = b"pazar-store/2";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory is in use by another process (a node is already running on it)")]
    Locked,
    #[error("store database error: {0}")]
    Db(String),
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    #[error("store was written by an incompatible version ({0})")]
    Format(String),
    #[error("store holds no genesis; initialise it first")]
    Empty,
    #[error("store already holds a chain (genesis {0})")]
    AlreadyInitialised(String),
    #[error("block {got} does not follow the stored head {head}")]
    NotNext { head: u64, got: u64 },
    #[error("state of version {0} is pruned or not yet committed")]
    Pruned(u64),
    #[error("stored state cannot be restored: {0}")]
    Restore(#[from] RestoreError),
    #[error("state commitment error: {0}")]
    Tree(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            e => StoreError::Corrupt(e.to_string()),
        }
    }
}

fn tree_err(e: anyhow::Error) -> StoreError {
    StoreError::Tree(format!("{e:#}"))
}

/// The last committed block: its height, hash and the state root after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Head {
    pub height: u64,
    pub block_hash: Hash32,
    pub state_root: Hash32,
    pub time_ms: u64,
}

/// A committed block with what it did.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct StoredBlock {
    pub block: Block,
    pub outcome: BlockOutcome,
    /// State root after this block (carried by the next header).
    pub state_root: Hash32,
}

/// [`StoredBlock`]'s encoding written from borrowed parts (the same bytes), so committing a
/// block does not copy its transactions and receipts first.
#[derive(BorshSerialize)]
struct StoredBlockRef<'a> {
    block: &'a Block,
    outcome: &'a BlockOutcome,
    state_root: &'a Hash32,
}

/// A value read from the state commitment with its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The version (block height) proven against.
    pub height: u64,
    pub root: Hash32,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    /// Borsh encoding of a `jmt` sparse Merkle proof.
    pub proof: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Keep the state commitment (and proofs) of this many most recent versions; `None` keeps
    /// every version (archive). Blocks and receipts are always kept.
    pub keep_versions: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            keep_versions: Some(1_000),
        }
    }
}

pub struct Store {
    db: Database,
    opts: StoreOptions,
}

/// Reads tree nodes and values from redb tables, inside a read or a write transaction.
struct Reader<'a, N, V> {
    nodes: &'a N,
    values: &'a V,
}

impl<N, V> TreeReader for Reader<'_, N, V>
where
    N: ReadableTable<&'static [u8], &'static [u8]>,
    V: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let k = borsh::to_vec(node_key)?;
        match self.nodes.get(k.as_slice())? {
            Some(v) => Ok(Some(Node::try_from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    fn get_value_option(&self, max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        let lo = value_key(&key_hash, 0);
        let hi = value_key(&key_hash, max_version);
        let mut range = self.values.range(lo.as_slice()..=hi.as_slice())?;
        match range.next_back() {
            Some(entry) => {
                let (_, v) = entry?;
                Ok(decode_value(v.value())?)
            }
            None => Ok(None),
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("state sync restore is not supported by this store")
    }
}

/// The tree's new root and nodes after `set` (key hashes with their new values, `None` deleting)
/// as version `version`. A set without deletions, the common case (a block of transfers), goes
/// through the tree's batched insertion, which visits every node on the touched paths once
/// instead of once per key (10,000 updates of a 20,000-key tree held in memory: 55–70 ms
/// against 130–160 ms); a set with a deletion goes key by key. The tree is canonical, so both give the same root, and both record
/// the nodes they replace as stale.
fn tree_update<R: TreeReader>(
    reader: &R,
    set: Vec<(KeyHash, Option<OwnedValue>)>,
    version: Version,
) -> Result<(jmt::RootHash, jmt::storage::TreeUpdateBatch), StoreError> {
    let tree = Sha256Jmt::new(reader);
    if set.is_empty() || set.iter().any(|(_, v)| v.is_none()) {
        return tree.put_value_set(set, version).map_err(tree_err);
    }
    let inserts: Vec<(KeyHash, OwnedValue)> = set.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    let (mut roots, batch) = tree
        .batch_put_value_sets(vec![inserts], None, version)
        .map_err(tree_err)?;
    let root = roots
        .pop()
        .ok_or_else(|| StoreError::Corrupt("the tree returned no root for a version".into()))?;
    Ok((root, batch))
}

fn value_key(kh: &KeyHash, version: Version) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&kh.0);
    k[32..].copy_from_slice(&version.to_be_bytes());
    k
}

/// A tree value as `jmt_values` stores it: `0` (deleted) or `1 ‖ value`; see [`decode_value`].
fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        Some(val) => {
            let mut enc = Vec::with_capacity(1 + val.len());
            enc.push(1);
            enc.extend_from_slice(val);
            enc
        }
        None => vec![0],
    }
}

fn decode_value(v: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    match v.split_first() {
        Some((0, [])) => Ok(None),
        Some((1, rest)) => Ok(Some(rest.to_vec())),
        _ => anyhow::bail!("stored tree value has a bad tag"),
    }
}

fn read_head<T: ReadableTable<&'static str, &'static [u8]>>(meta: &T) -> Result<Option<Head>, StoreError> {
    match meta.get(HEAD_KEY)? {
        Some(v) => Ok(Some(
            Head::try_from_slice(v.value()).map_err(|e| StoreError::Corrupt(format!("head record: {e}")))?,
        )),
        None => Ok(None),
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`. Fails with [`StoreError::Locked`] when
    /// another process has it open.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::check_options(&opts)?;
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
        Store::init(db, opts)
    }

    /// Opens a store on any storage backend (redb's disk abstraction): an in-memory disk, a
    /// disk that injects faults in tests, or a deterministic runtime's storage. Two opens of one
    /// backend are not detected; the caller owns it.
    pub fn open_on(backend: impl redb::StorageBackend, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::check_options(&opts)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)?;
        Store::init(db, opts)
    }

    fn check_options(opts: &StoreOptions) -> Result<(), StoreError> {
        if let Some(0) = opts.keep_versions {
            return Err(StoreError::Db("keep_versions must be at least 1".into()));
        }
        Ok(())
    }

    fn init(db: Database, opts: StoreOptions) -> Result<Store, StoreError> {
        let store = Store { db, opts };
        let mut txn = store.db.begin_write()?;
        // Every commit saves the allocator state (quick repair): one commit without it would make
        // the next start after a crash scan the whole file (seconds for a large store).
        txn.set_quick_repair(true);
        {
            let mut meta = txn.open_table(META)?;
            let format = meta.get(FORMAT_KEY)?.map(|v| v.value().to_vec());
            match format {
                Some(f) if f != FORMAT => {
                    return Err(StoreError::Format(String::from_utf8_lossy(&f).into_owned()));
                }
                Some(_) => {}
                None => {
                    meta.insert(FORMAT_KEY, FORMAT)?;
                }
            }
            // Create every table so that readers never meet a missing one.
            txn.open_table(BLOCKS)?;
            txn.open_table(TX_INDEX)?;
            txn.open_table(STATE)?;
            txn.open_table(JMT_NODES)?;
            txn.open_table(JMT_VALUES)?;
            txn.open_table(JMT_STALE_NODES)?;
            txn.open_table(JMT_STALE_VALUES)?;
        }
        txn.commit()?;
        Ok(store)
    }

    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        let txn = self.db.begin_read()?;
        read_head(&txn.open_table(META)?)
    }

    /// The genesis hash this store was initialised with.
    pub fn genesis_hash(&self) -> Result<Option<Hash32>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let Some(v) = meta.get(GENESIS_KEY)? else {
            return Ok(None);
        };
        let h: Hash32 = v
            .value()
            .try_into()
            .map_err(|_| StoreError::Corrupt("genesis hash record".into()))?;
        Ok(Some(h))
    }

    /// Writes the genesis state as version 0. `state` must be fresh from genesis: all of its
    /// entries are taken as its change set.
    pub fn init_genesis(&self, state: &mut State, genesis_hash: Hash32) -> Result<Head, StoreError> {
        if let Some(g) = self.genesis_hash()? {
            return Err(StoreError::AlreadyInitialised(hex_string(&g)));
        }
        if state.height != 0 {
            return Err(StoreError::NotNext {
                head: 0,
                got: state.height,
            });
        }
        let changes = state.take_changes();
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        let root = self.write_state(&txn, 0, changes)?;
        let head = Head {
            height: 0,
            block_hash: [0; 32],
            state_root: root,
            time_ms: 0,
        };
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(GENESIS_KEY, genesis_hash.as_slice())?;
            meta.insert(HEAD_KEY, borsh::to_vec(&head).expect("encoding cannot fail").as_slice())?;
        }
        txn.commit()?;
        Ok(head)
    }

    /// A record the node keeps beside the chain data (not part of the state), by name.
    pub fn node_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let key = format!("node/{name}");
        Ok(meta.get(key.as_str())?.map(|v| v.value().to_vec()))
    }

    /// Writes a node record (durably, in its own transaction).
    pub fn set_node_record(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        {
            let mut meta = txn.open_table(META)?;
            let key = format!("node/{name}");
            meta.insert(key.as_str(), value)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Loads the committed state and its head.
    pub fn load_state(&self) -> Result<(State, Head), StoreError> {
        let txn = self.db.begin_read()?;
        let head = read_head(&txn.open_table(META)?)?.ok_or(StoreError::Empty)?;
        let table = txn.open_table(STATE)?;
        let mut restorer = StateRestorer::default();
        for e in table.iter()? {
            let (k, v) = e?;
            restorer.push(k.value(), v.value())?;
        }
        let state = restorer.finish()?;
        if state.height != head.height {
            return Err(StoreError::Corrupt(format!(
                "state is at height {} but the head is {}",
                state.height, head.height
            )));
        }
        Ok((state, head))
    }

    /// Commits a block atomically: the block and its outcome, the transaction index, the state
    /// changes and the new tree version. Returns the new head.
    pub fn commit_block(
        &self,
        block: &Block,
        outcome: &BlockOutcome,
        changes: Vec<StateChange>,
    ) -> Result<Head, StoreError> {
        let height = block.header.height;
        let mut txn = self.db.begin_write()?;
        // Saves the allocator state with each commit so reopening after a crash does not scan
        // the whole file (redb's quick repair): restart time stays flat as the store grows.
        txn.set_quick_repair(true);
        let prev = read_head(&txn.open_table(META)?)?.ok_or(StoreError::Empty)?;
        if height != prev.height + 1 {
            return Err(StoreError::NotNext {
                head: prev.height,
                got: height,
            });
        }
        let root = self.write_state(&txn, height, changes)?;
        let head = Head {
            height,
            block_hash: block.header.hash(),
            state_root: root,
            time_ms: block.header.time_ms,
        };
        {
            let stored = StoredBlockRef {
                block,
                outcome,
                state_root: &root,
            };
            txn.open_table(BLOCKS)?
                .insert(height, borsh::to_vec(&stored).expect("encoding cannot fail").as_slice())?;
            let mut index = txn.open_table(TX_INDEX)?;
            for (i, r) in outcome.receipts.iter().enumerate() {
                // A transaction included twice keeps its first (the one that took effect).
                if index.get(&r.tx_hash)?.is_none() {
                    index.insert(&r.tx_hash, (height, i as u32))?;
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(HEAD_KEY, borsh::to_vec(&head).expect("encoding cannot fail").as_slice())?;
        }
        if self.opts.keep_versions.is_some() {
            prune(&txn, self.first_kept(height))?;
        }
        txn.commit()?;
        Ok(head)
    }

    /// The oldest version a store whose head is `head` keeps: `keep_versions` of them up to the
    /// head (every one, from 0, in an archive). Pruning and the proofs at past versions both
    /// follow it.
    fn first_kept(&self, head: u64) -> u64 {
        self.opts
            .keep_versions
            .map_or(0, |keep| head.saturating_sub(keep.saturating_sub(1)))
    }

    /// The state roots the next blocks would commit, given each one's change set in order,
    /// written nowhere: the versions are built in a write transaction that is then aborted. A
    /// validator checks with it the state root a proposal carries after blocks that consensus
    /// has not finalized yet. Holds the store's one write transaction while it runs.
    pub fn speculative_roots(&self, change_sets: Vec<Vec<StateChange>>) -> Result<Vec<Hash32>, StoreError> {
        if change_sets.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_write()?;
        let head = read_head(&txn.open_table(META)?)?.ok_or(StoreError::Empty)?;
        let mut roots = Vec::with_capacity(change_sets.len());
        for (i, changes) in change_sets.into_iter().enumerate() {
            roots.push(self.write_state(&txn, head.height + 1 + i as u64, changes)?);
        }
        txn.abort()?;
        Ok(roots)
    }

    /// Applies `changes` to the state table and the tree as version `version`; returns the root.
    fn write_state(
        &self,
        txn: &redb::WriteTransaction,
        version: Version,
        changes: Vec<StateChange>,
    ) -> Result<Hash32, StoreError> {
        let mut state = txn.open_table(STATE)?;
        let mut nodes = txn.open_table(JMT_NODES)?;
        let mut values = txn.open_table(JMT_VALUES)?;
        let mut stale_values = txn.open_table(JMT_STALE_VALUES)?;
        let mut set = Vec::with_capacity(changes.len());
        for c in changes {
            match &c.value {
                Some(v) => {
                    state.insert(c.key.as_slice(), v.as_slice())?;
                }
                None => {
                    state.remove(c.key.as_slice())?;
                }
            }
            set.push((KeyHash::with::<Sha256>(&c.key), c.value));
        }
        let (root, batch) = {
            let reader = Reader {
                nodes: &nodes,
                values: &values,
            };
            tree_update(&reader, set, version)?
        };
        for (nk, node) in batch.node_batch.nodes() {
            let k = borsh::to_vec(nk).expect("encoding cannot fail");
            let v = borsh::to_vec(node).expect("encoding cannot fail");
            nodes.insert(k.as_slice(), v.as_slice())?;
        }
        for ((v, kh), value) in batch.node_batch.values() {
            // Remember which older version of this key the new one supersedes, for pruning.
            let lo = value_key(kh, 0);
            let hi = value_key(kh, v.saturating_sub(1));
            let older = if *v == 0 {
                None
            } else {
                match values.range(lo.as_slice()..=hi.as_slice())?.next_back() {
                    Some(e) => {
                        let (k, _) = e?;
                        let k = k.value();
                        Some(u64::from_be_bytes(
                            k[32..40].try_into().expect("value keys are 40 bytes"),
                        ))
                    }
                    None => None,
                }
            };
            if let Some(old) = older {
                let mut sk = Vec::with_capacity(48);
                sk.extend_from_slice(&v.to_be_bytes());
                sk.extend_from_slice(&kh.0);
                sk.extend_from_slice(&old.to_be_bytes());
                stale_values.insert(sk.as_slice(), ())?;
            }
            values.insert(value_key(kh, *v).as_slice(), encode_value(value.as_deref()).as_slice())?;
        }
        let mut stale_nodes = txn.open_table(JMT_STALE_NODES)?;
        for s in &batch.stale_node_index_batch {
            let mut k = s.stale_since_version.to_be_bytes().to_vec();
            borsh::to_writer(&mut k, &s.node_key).expect("encoding cannot fail");
            stale_nodes.insert(k.as_slice(), ())?;
        }
        Ok(root.0)
    }

    pub fn block(&self, height: u64) -> Result<Option<StoredBlock>, StoreError> {
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        let Some(v) = blocks.get(height)? else {
            return Ok(None);
        };
        let b =
            StoredBlock::try_from_slice(v.value()).map_err(|e| StoreError::Corrupt(format!("block {height}: {e}")))?;
        Ok(Some(b))
    }

    /// Where a transaction was committed: (height, index in the block).
    pub fn tx_location(&self, hash: &Hash32) -> Result<Option<(u64, u32)>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(TX_INDEX)?;
        Ok(index.get(hash)?.map(|v| v.value()))
    }

    /// [`Store::tx_location`] of each of `hashes`, in order, read in one read transaction (one
    /// committed version of the index for all of them).
    pub fn tx_locations(&self, hashes: &[Hash32]) -> Result<Vec<Option<(u64, u32)>>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(TX_INDEX)?;
        hashes.iter().map(|h| Ok(index.get(h)?.map(|v| v.value()))).collect()
    }

    /// Reads `key` (a ledger store key) at the latest committed version, with its proof.
    pub fn prove(&self, key: &[u8]) -> Result<Proven, StoreError> {
        let txn = self.db.begin_read()?;
        let head = read_head(&txn.open_table(META)?)?.ok_or(StoreError::Empty)?;
        let nodes = txn.open_table(JMT_NODES)?;
        let values = txn.open_table(JMT_VALUES)?;
        let reader = Reader {
            nodes: &nodes,
            values: &values,
        };
        let (value, proof) = Sha256Jmt::new(&reader)
            .get_with_proof(KeyHash::with::<Sha256>(key), head.height)
            .map_err(tree_err)?;
        Ok(Proven {
            height: head.height,
            root: head.state_root,
            key: key.to_vec(),
            value,
            proof: borsh::to_vec(&proof).expect("encoding cannot fail"),
        })
    }

    /// The tree root of `version`, recomputed from the stored nodes.
    pub fn root_at(&self, version: u64) -> Result<Hash32, StoreError> {
        let txn = self.db.begin_read()?;
        let nodes = txn.open_table(JMT_NODES)?;
        let values = txn.open_table(JMT_VALUES)?;
        let reader = Reader {
            nodes: &nodes,
            values: &values,
        };
        match Sha256Jmt::new(&reader)
            .get_root_hash_option(version)
            .map_err(tree_err)?
        {
            Some(r) => Ok(r.0),
            None => Err(StoreError::Pruned(version)),
        }
    }
}

/// Deletes tree nodes and value versions that no version from `oldest_kept` on needs.
fn prune(txn: &redb::WriteTransaction, oldest_kept: u64) -> Result<(), StoreError> {
    if oldest_kept == 0 {
        return Ok(());
    }
    // Every key starts with its 8-byte big-endian `stale_since`: those below `next` are exactly
    // the ones with `stale_since <= oldest_kept`.
    let next = (oldest_kept + 1).to_be_bytes();
    let mut stale_nodes = txn.open_table(JMT_STALE_NODES)?;
    let mut nodes = txn.open_table(JMT_NODES)?;
    let gone: Vec<Vec<u8>> = stale_nodes
        .range(..&next[..])?
        .map(|e| e.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    for k in &gone {
        nodes.remove(&k[8..])?;
        stale_nodes.remove(k.as_slice())?;
    }
    let mut stale_values = txn.open_table(JMT_STALE_VALUES)?;
    let mut values = txn.open_table(JMT_VALUES)?;
    let gone: Vec<Vec<u8>> = stale_values
        .range(..&next[..])?
        .map(|e| e.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    for k in &gone {
        // k = stale_since ‖ key_hash ‖ old version; the value key is key_hash ‖ old version.
        values.remove(&k[8..48])?;
        stale_values.remove(k.as_slice())?;
    }
    Ok(())
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
    use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
    use proptest::prelude::*;

    use super::tree_update;

    /// A tree kept in memory: the nodes and values every version wrote.
    #[derive(Default)]
    struct Mem {
        nodes: HashMap<NodeKey, Node>,
        values: BTreeMap<(KeyHash, Version), Option<OwnedValue>>,
    }

    impl TreeReader for Mem {
        fn get_node_option(&self, k: &NodeKey) -> anyhow::Result<Option<Node>> {
            Ok(self.nodes.get(k).cloned())
        }
        fn get_value_option(&self, max: Version, kh: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
            Ok(self
                .values
                .range((kh, 0)..=(kh, max))
                .next_back()
                .and_then(|(_, v)| v.clone()))
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            Ok(None)
        }
    }

    impl Mem {
        fn write(&mut self, batch: TreeUpdateBatch) {
            for (k, n) in batch.node_batch.nodes() {
                self.nodes.insert(k.clone(), n.clone());
            }
            for ((v, kh), value) in batch.node_batch.values() {
                self.values.insert((*kh, *v), value.clone());
            }
        }
    }

    fn key(i: u8) -> KeyHash {
        KeyHash::with::<sha2::Sha256>([i])
    }

    proptest! {
        /// The batched insertion gives the root the key-by-key one gives, version after
        /// version, over sets that insert, overwrite and (in some versions) delete keys, and a
        /// key's value read back at each version is the last one written.
        #[test]
        fn batched_tree_updates_give_the_roots_of_key_by_key_updates(
            versions in proptest::collection::vec(
                proptest::collection::vec((0u8..64, proptest::option::weighted(0.9, any::<u8>())), 1..40),
                1..12,
            ),
        ) {
            let (mut fast, mut slow) = (Mem::default(), Mem::default());
            let mut expected: BTreeMap<u8, u8> = BTreeMap::new();
            for (v, changes) in versions.into_iter().enumerate() {
                let version = v as Version;
                // One change per key, as the ledger's change sets have.
                let changes: BTreeMap<u8, Option<u8>> = changes.into_iter().collect();
                let set: Vec<(KeyHash, Option<OwnedValue>)> =
                    changes.iter().map(|(k, val)| (key(*k), val.map(|x| vec![x]))).collect();
                for (k, val) in &changes {
                    match val {
                        Some(x) => expected.insert(*k, *x),
                        None => expected.remove(k),
                    };
                }
                let (r_fast, b_fast) = tree_update(&fast, set.clone(), version).expect("batched update");
                let (r_slow, b_slow) = Sha256Jmt::new(&slow).put_value_set(set, version).expect("key-by-key update");
                prop_assert_eq!(r_fast, r_slow);
                fast.write(b_fast);
                slow.write(b_slow);
                for k in 0u8..64 {
                    let got = Sha256Jmt::new(&fast).get(key(k), version).expect("read");
                    prop_assert_eq!(got, expected.get(&k).map(|x| vec![*x]));
                }
            }
        }
    }
}
