//! Reads of past versions of the state commitment and of single state entries: what a
//! validator needs to record a validator-set hand-off (a proof against the state root that a
//! block of the epoch carries) while the version is still kept ([`StoreOptions::keep_versions`]).

use jmt::{KeyHash, Sha256Jmt};
use redb::ReadableDatabase;
use sha2::Sha256;

use crate::{read_head, tree_err, Proven, Reader, Store, StoreError, JMT_NODES, JMT_VALUES, META, STATE};

impl Store {
    /// The oldest version [`Store::prove_at`] may still prove: `keep_versions` below the head (0
    /// in an archive), and not below the snapshot this store was restored from.
    pub fn oldest_provable(&self) -> Result<u64, StoreError> {
        let head = {
            let txn = self.db.begin_read()?;
            let h = read_head(&txn.open_table(META)?)?.ok_or(StoreError::Empty)?;
            h.height
        };
        Ok(self.first_kept(head).max(self.snapshot_base()?.unwrap_or(0)))
    }

    /// Reads `key` (a ledger store key) as it was at version `version` (the state after block
    /// `version`, whose root the header of block `version + 1` carries), with its proof against
    /// that version's root. [`StoreError::Pruned`] when the version is not kept any more (older
    /// than `keep_versions` below the head, or below a restored snapshot) or not committed yet.
    pub fn prove_at(&self, key: &[u8], version: u64) -> Result<Proven, StoreError> {
        let txn = self.db.begin_read()?;
        let head = read_head(&txn.open_table(META)?)?.ok_or(StoreError::Empty)?;
        if version > head.height {
            return Err(StoreError::Pruned(version));
        }
        if version < self.first_kept(head.height) {
            return Err(StoreError::Pruned(version));
        }
        let nodes = txn.open_table(JMT_NODES)?;
        let values = txn.open_table(JMT_VALUES)?;
        let reader = Reader {
            nodes: &nodes,
            values: &values,
        };
        let tree = Sha256Jmt::new(&reader);
        let root = match tree.get_root_hash_option(version).map_err(tree_err)? {
            Some(r) => r.0,
            None => return Err(StoreError::Pruned(version)),
        };
        let (value, proof) = tree
            .get_with_proof(KeyHash::with::<Sha256>(key), version)
            .map_err(tree_err)?;
        Ok(Proven {
            height: version,
            root,
            key: key.to_vec(),
            value,
            proof: borsh::to_vec(&proof).expect("encoding cannot fail"),
        })
    }

    /// The value of the state entry `key` (a ledger store key) at the latest committed version,
    /// without a proof: one read, where loading the whole state would be wasteful.
    pub fn state_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let state = txn.open_table(STATE)?;
        Ok(state.get(key)?.map(|v| v.value().to_vec()))
    }
}
