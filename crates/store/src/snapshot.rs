//! State sync: a node copies the committed state of a peer instead of replaying every block.
//!
//! The serving side ([`Store::snapshot`]) reads the state at its head in one read transaction
//! (a consistent cut while blocks keep committing) and hands it out as a [`SnapshotHead`] and
//! [`SnapshotChunk`]s: entries in the order of their key hashes, each chunk with a Jellyfish
//! Merkle range proof that everything up to its last key is in the tree of the head's root.
//!
//! The receiving side ([`Store::begin_restore`], [`Restore`]) trusts none of it. The caller
//! names the root it expects, which it has checked against a finalized block of consensus (the
//! next block's header carries it); every chunk is checked against that root before it is kept
//! (`jmt`'s restore, made for this), so a lying peer is caught at its first bad chunk, and the
//! restored state must also decode as a ledger state of the expected height. Only then is
//! anything written, in one transaction, into a store that held nothing.
//!
//! On the wire ([`write_frame`], [`read_frame`]) a snapshot is a sequence of length-prefixed
//! Borsh [`Frame`]s, each bounded by [`MAX_FRAME_BYTES`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use borsh::{BorshDeserialize, BorshSerialize};
use jmt::proof::SparseMerkleRangeProof;
use jmt::restore::{JellyfishMerkleRestore, StateSnapshotReceiver};
use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader, TreeWriter};
use jmt::{KeyHash, OwnedValue, RootHash, Sha256Jmt, Version};
use redb::{ReadableDatabase, ReadableTable};
use sha2::Sha256;

use pazar_ledger::StateRestorer;
use pazar_types::Hash32;

use crate::{
    encode_value, read_head, tree_err, value_key, Head, Reader, Store, StoreError, GENESIS_KEY, HEAD_KEY, JMT_NODES,
    JMT_VALUES, META, STATE,
};

/// Entries in one chunk (the last chunk may hold fewer).
pub const CHUNK_ENTRIES: usize = 2_048;

/// Largest frame on the wire: a chunk of [`CHUNK_ENTRIES`] entries of the ledger's sizes fits
/// many times over; a peer's frame above it is refused before it is read.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Meta record of a store restored from a snapshot: the height of the snapshot. Blocks at and
/// below it are not in this store.
const SNAPSHOT_BASE_KEY: &str = "snapshot_base";

/// What a snapshot is of, sent first.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SnapshotHead {
    /// The genesis hash of the chain.
    pub genesis_hash: Hash32,
    /// The height of the state (the last block it includes).
    pub height: u64,
    /// The state root after that block, which the next block's header carries.
    pub state_root: Hash32,
    /// Entries in the whole snapshot.
    pub entries: u64,
}

/// Entries in key-hash order and the proof that everything up to the last one is in the tree.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SnapshotChunk {
    /// (store key, value).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Borsh encoding of a `jmt` sparse Merkle range proof.
    pub proof: Vec<u8>,
}

/// One frame of a snapshot stream: a head, its chunks, then an end.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Frame {
    Head(SnapshotHead),
    Chunk(SnapshotChunk),
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    FrameTooLarge(u64),
    #[error("snapshot frame does not decode: {0}")]
    Decode(String),
    #[error("snapshot stream ended before its end frame")]
    Truncated,
    #[error("snapshot chunk is not in the tree of the expected root: {0}")]
    Proof(String),
    #[error("snapshot holds {got} entries, its head says {expected}")]
    Count { expected: u64, got: u64 },
    #[error("snapshot is of height {got}, expected {expected}")]
    Height { expected: u64, got: u64 },
    #[error("snapshot is of another chain (genesis {0})")]
    Genesis(String),
    #[error("a store that already holds a chain cannot be restored into")]
    NotEmpty,
    #[error("snapshot state does not decode as a ledger state: {0}")]
    State(String),
}

/// Writes one frame: its length (u32, little-endian), then its Borsh encoding.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> std::io::Result<()> {
    let bytes = borsh::to_vec(frame)?;
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame over 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&bytes)
}

/// Reads one frame; `Ok(None)` at a clean end of stream (before a length).
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, SnapshotError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(SnapshotError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(len);
    if len as usize > MAX_FRAME_BYTES {
        return Err(SnapshotError::FrameTooLarge(u64::from(len)));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
        _ => SnapshotError::Io(e),
    })?;
    Frame::try_from_slice(&buf)
        .map(Some)
        .map_err(|e| SnapshotError::Decode(e.to_string()))
}

impl Store {
    /// The state at the head, in one read transaction: the head, then chunks of up to
    /// `chunk_entries` entries in key-hash order with their range proofs. `emit` returns
    /// `false` to stop early (the reader went away).
    pub fn snapshot(&self, chunk_entries: usize, mut emit: impl FnMut(Frame) -> bool) -> Result<(), StoreError> {
        let chunk_entries = chunk_entries.clamp(1, CHUNK_ENTRIES);
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let head = read_head(&meta)?.ok_or(StoreError::Empty)?;
        let genesis_hash: Hash32 = meta
            .get(GENESIS_KEY)?
            .ok_or(StoreError::Empty)?
            .value()
            .try_into()
            .map_err(|_| StoreError::Corrupt("genesis hash record".into()))?;
        let state = txn.open_table(STATE)?;
        let mut keys: Vec<(KeyHash, Vec<u8>)> = Vec::new();
        for e in state.iter()? {
            let (k, _) = e?;
            let k = k.value().to_vec();
            keys.push((KeyHash::with::<Sha256>(&k), k));
        }
        keys.sort_unstable_by_key(|(h, _)| *h);
        let nodes = txn.open_table(JMT_NODES)?;
        let values = txn.open_table(JMT_VALUES)?;
        let reader = Reader {
            nodes: &nodes,
            values: &values,
        };
        let tree = Sha256Jmt::new(&reader);
        if !emit(Frame::Head(SnapshotHead {
            genesis_hash,
            height: head.height,
            state_root: head.state_root,
            entries: keys.len() as u64,
        })) {
            return Ok(());
        }
        for chunk in keys.chunks(chunk_entries) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (_, k) in chunk {
                let v = state
                    .get(k.as_slice())?
                    .ok_or_else(|| StoreError::Corrupt("state key vanished in a read transaction".into()))?;
                entries.push((k.clone(), v.value().to_vec()));
            }
            let last = chunk.last().map(|(h, _)| *h).expect("chunks are not empty");
            let proof = tree.get_range_proof(last, head.height).map_err(tree_err)?;
            let proof = borsh::to_vec(&proof).expect("encoding cannot fail");
            if !emit(Frame::Chunk(SnapshotChunk { entries, proof })) {
                return Ok(());
            }
        }
        emit(Frame::End);
        Ok(())
    }

    /// Starts restoring a snapshot whose head is `head` and whose root the caller has checked
    /// against consensus, into this store, which must hold nothing yet.
    pub fn begin_restore(&self, head: &SnapshotHead) -> Result<Restore, StoreError> {
        if self.genesis_hash()?.is_some() {
            return Err(StoreError::Snapshot(SnapshotError::NotEmpty));
        }
        let tree = Arc::new(MemTree::default());
        let restore = JellyfishMerkleRestore::<Sha256>::new(tree.clone(), head.height, RootHash(head.state_root))
            .map_err(tree_err)?;
        Ok(Restore {
            head: head.clone(),
            tree,
            restore,
            entries: BTreeMap::new(),
        })
    }

    /// The height of the snapshot this store was restored from, if it was: blocks at and below
    /// it are not here.
    pub fn snapshot_base(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        match meta.get(SNAPSHOT_BASE_KEY)? {
            Some(v) => {
                let b: [u8; 8] = v
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("snapshot base record".into()))?;
                Ok(Some(u64::from_be_bytes(b)))
            }
            None => Ok(None),
        }
    }
}

/// A restore under way: chunks are checked as they come and kept in memory until
/// [`Restore::finish`] writes them.
pub struct Restore {
    head: SnapshotHead,
    tree: Arc<MemTree>,
    restore: JellyfishMerkleRestore<Sha256>,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Restore {
    /// Checks a chunk against the expected root (its keys follow the previous chunk's in
    /// key-hash order, and the range proof holds) and keeps it.
    pub fn add_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), StoreError> {
        let proof_err = |e: String| StoreError::Snapshot(SnapshotError::Proof(e));
        if chunk.entries.is_empty() {
            return Err(proof_err("an empty chunk".into()));
        }
        let proof = SparseMerkleRangeProof::<Sha256>::try_from_slice(&chunk.proof)
            .map_err(|e| proof_err(format!("the range proof does not decode: {e}")))?;
        let mut leaves: Vec<(KeyHash, OwnedValue)> = Vec::with_capacity(chunk.entries.len());
        for (k, v) in &chunk.entries {
            leaves.push((KeyHash::with::<Sha256>(k), v.clone()));
        }
        // `jmt` asserts on some malformed inputs: a peer's bytes must not end the process.
        let restore = &mut self.restore;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| restore.add_chunk(leaves, proof)))
            .map_err(|_| proof_err("the chunk broke the tree's restore".into()))?
            .map_err(|e| proof_err(format!("{e:#}")))?;
        for (k, v) in chunk.entries {
            self.entries.insert(k, v);
        }
        if self.entries.len() as u64 > self.head.entries {
            return Err(StoreError::Snapshot(SnapshotError::Count {
                expected: self.head.entries,
                got: self.entries.len() as u64,
            }));
        }
        Ok(())
    }

    /// Completes the tree (its root must be the expected one), checks that the entries are a
    /// ledger state of the snapshot's height, and writes state, tree and head in one
    /// transaction. `head` is the store head to record: the block at the snapshot's height
    /// (its hash and time), which the caller has checked against the finalized chain.
    /// `records` are node records (see [`Store::node_record`]) written in the same transaction,
    /// such as the proof the caller checked the snapshot with.
    pub fn finish(self, store: &Store, head: Head, records: &[(&str, &[u8])]) -> Result<Head, StoreError> {
        let Restore {
            head: snap,
            tree,
            restore,
            entries,
        } = self;
        // A ledger state is never empty, and `jmt` cannot finish an empty restore.
        if entries.is_empty() || entries.len() as u64 != snap.entries {
            return Err(StoreError::Snapshot(SnapshotError::Count {
                expected: snap.entries,
                got: entries.len() as u64,
            }));
        }
        if head.height != snap.height || head.state_root != snap.state_root {
            return Err(StoreError::Snapshot(SnapshotError::Height {
                expected: head.height,
                got: snap.height,
            }));
        }
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| restore.finish()))
            .map_err(|_| StoreError::Snapshot(SnapshotError::Proof("the tree's restore broke".into())))?
            .map_err(|e| StoreError::Snapshot(SnapshotError::Proof(format!("{e:#}"))))?;
        // The tree is complete; its root must be the one every chunk was checked against.
        {
            let root = Sha256Jmt::new(tree.as_ref())
                .get_root_hash(snap.height)
                .map_err(tree_err)?;
            if root.0 != snap.state_root {
                return Err(StoreError::Snapshot(SnapshotError::Proof(
                    "the restored tree has another root".into(),
                )));
            }
        }
        let mut restorer = StateRestorer::default();
        for (k, v) in &entries {
            restorer
                .push(k, v)
                .map_err(|e| StoreError::Snapshot(SnapshotError::State(e.to_string())))?;
        }
        let state = restorer
            .finish()
            .map_err(|e| StoreError::Snapshot(SnapshotError::State(e.to_string())))?;
        if state.height != snap.height {
            return Err(StoreError::Snapshot(SnapshotError::Height {
                expected: snap.height,
                got: state.height,
            }));
        }

        let mut txn = store.db.begin_write()?;
        txn.set_quick_repair(true);
        {
            let mut meta = txn.open_table(META)?;
            if meta.get(GENESIS_KEY)?.is_some() {
                return Err(StoreError::Snapshot(SnapshotError::NotEmpty));
            }
            let mut st = txn.open_table(STATE)?;
            for (k, v) in &entries {
                st.insert(k.as_slice(), v.as_slice())?;
            }
            let batch = tree
                .batch
                .lock()
                .map_err(|_| StoreError::Tree("restore tree lock poisoned".into()))?;
            let mut nodes = txn.open_table(JMT_NODES)?;
            for (nk, node) in batch.nodes() {
                let k = borsh::to_vec(nk).expect("encoding cannot fail");
                let v = borsh::to_vec(node).expect("encoding cannot fail");
                nodes.insert(k.as_slice(), v.as_slice())?;
            }
            let mut values = txn.open_table(JMT_VALUES)?;
            for ((v, kh), value) in batch.values() {
                values.insert(value_key(kh, *v).as_slice(), encode_value(value.as_deref()).as_slice())?;
            }
            meta.insert(GENESIS_KEY, snap.genesis_hash.as_slice())?;
            meta.insert(HEAD_KEY, borsh::to_vec(&head).expect("encoding cannot fail").as_slice())?;
            meta.insert(SNAPSHOT_BASE_KEY, snap.height.to_be_bytes().as_slice())?;
            for (name, value) in records {
                let key = format!("node/{name}");
                meta.insert(key.as_str(), *value)?;
            }
        }
        txn.commit()?;
        Ok(head)
    }
}

/// The tree being restored, in memory: `jmt`'s restore writes frozen nodes and values here.
#[derive(Default)]
struct MemTree {
    batch: Mutex<NodeBatch>,
}

impl TreeWriter for MemTree {
    fn write_node_batch(&self, batch: &NodeBatch) -> anyhow::Result<()> {
        let mut b = self
            .batch
            .lock()
            .map_err(|_| anyhow::anyhow!("restore tree lock poisoned"))?;
        b.merge(batch.clone());
        Ok(())
    }
}

impl TreeReader for MemTree {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let b = self
            .batch
            .lock()
            .map_err(|_| anyhow::anyhow!("restore tree lock poisoned"))?;
        Ok(b.get_node(node_key).cloned())
    }

    fn get_value_option(&self, max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        let b = self
            .batch
            .lock()
            .map_err(|_| anyhow::anyhow!("restore tree lock poisoned"))?;
        Ok(b.values()
            .range((0, key_hash)..=(max_version, key_hash))
            .rfind(|((_, k), _)| *k == key_hash)
            .and_then(|(_, v)| v.clone()))
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // A restore always starts on an empty tree here: nothing is resumed.
        Ok(None)
    }
}
