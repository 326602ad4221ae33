//! The validator-set hand-off records ([`pazar_api::sync::Handoff`]) this validator makes, so
//! that a node knowing only the genesis can learn the set of any later epoch from it
//! ([`crate::sync::HandoffChain`]).
//!
//! The record of epoch `E` needs a block of `E` with a finalization certificate of its own in
//! marshal's archive (some blocks are finalized only through a descendant's), and the Merkle
//! proof of the set of `E + 1` at the version before that block, which the store keeps only
//! for its last `keep_versions` versions. So the recorder looks every [`POLL`] whether the node
//! has entered an epoch it holds no record of, and makes the record from the first block of
//! that epoch that has a certificate, as soon as it has one. An epoch whose versions are gone
//! before a record could be made (a node down for longer than that) is skipped: its record
//! must come from another node. Records are node records of the store, which the RPC serves.

use std::sync::Arc;
use std::time::Duration;

use commonware_codec::Encode;
use commonware_consensus::types::Height;
use commonware_runtime::{Clock, Handle, Spawner};

use pazar_api::sync::Handoff;
use pazar_node::Node;
use pazar_types::state_key::{store_key, table_id};

use crate::engine::Marshal;
use crate::sync::{certificate_epoch, finalized_hash};

/// How often the recorder looks for an epoch to record.
pub const POLL: Duration = Duration::from_secs(1);

/// Starts the recorder of `node`'s hand-off records, from marshal's certificates. It never
/// ends by itself.
pub fn start<E: Clock + Spawner>(context: E, node: Arc<Node>, marshal: Marshal) -> Handle<()> {
    context.spawn(move |context| async move {
        let mut recorder = Recorder {
            node,
            marshal,
            epoch: 1,
            from: None,
        };
        loop {
            recorder.tick().await;
            context.sleep(POLL).await;
        }
    })
}

struct Recorder {
    node: Arc<Node>,
    marshal: Marshal,
    /// The first epoch that may lack its record.
    epoch: u64,
    /// The height of `epoch` to try next, where a scan of it stopped.
    from: Option<u64>,
}

/// What one height of an epoch gave.
enum Tried {
    Recorded,
    /// No certificate of its own, or not one usable here: the next height may do.
    Next,
    /// The block or the state version is not here (below a snapshot, or pruned).
    Gone,
}

impl Recorder {
    async fn tick(&mut self) {
        let Some(length) = self.node.state().epoch_length().filter(|l| *l > 0) else {
            return;
        };
        let committed = self.node.head().height;
        let current = committed / length;
        while self.epoch <= current {
            let epoch = self.epoch;
            match self.node.store().node_record(&Handoff::record_name(epoch)) {
                Ok(Some(_)) => {
                    self.advance();
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(epoch, error = %e, "cannot read the hand-off records");
                    return;
                }
            }
            let first = epoch.saturating_mul(length);
            let last = first.saturating_add(length - 1);
            let upto = last.min(committed);
            // Heights whose parent version is no longer kept are skipped unread (a node that
            // started with a long chain and no records would otherwise try each of them).
            let oldest = match self.node.store().oldest_provable() {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(epoch, error = %e, "cannot read the store's head");
                    return;
                }
            };
            let start = self.from.unwrap_or(first).max(first);
            let mut height = start.max(oldest.saturating_add(1));
            let mut gone = height > start;
            while height <= upto {
                match self.try_height(epoch, height).await {
                    Ok(Tried::Recorded) => {
                        tracing::info!(epoch, height, "recorded the validator-set hand-off of the epoch");
                        self.advance();
                        break;
                    }
                    Ok(Tried::Next) => height += 1,
                    Ok(Tried::Gone) => {
                        gone = true;
                        height += 1;
                    }
                    Err(e) => {
                        tracing::warn!(epoch, height, error = %e, "cannot record the epoch's hand-off; retrying");
                        self.from = Some(height);
                        return;
                    }
                }
            }
            if self.epoch != epoch {
                continue;
            }
            if upto < last {
                // The epoch goes on: its next blocks may have certificates.
                self.from = Some(height);
                return;
            }
            // Every height of the finished epoch was tried.
            if gone {
                tracing::debug!(
                    epoch,
                    "the epoch's blocks or state are not kept here: no hand-off record"
                );
            } else {
                tracing::warn!(
                    epoch,
                    "no block of the epoch has a certificate of its own here: no hand-off record"
                );
            }
            self.advance();
        }
    }

    fn advance(&mut self) {
        self.epoch += 1;
        self.from = None;
    }

    /// Makes the record of `epoch` from the block at `height` if it can.
    async fn try_height(&self, epoch: u64, height: u64) -> Result<Tried, String> {
        if height == 0 {
            return Ok(Tried::Next);
        }
        let store = self.node.store();
        let key = store_key(table_id::VALIDATOR_SETS, &(epoch + 1));
        // The version is checked first: an old epoch's heights are refused without reading
        // marshal's archive.
        let proven = match store.prove_at(&key, height - 1) {
            Ok(p) => p,
            Err(pazar_store::StoreError::Pruned(_)) => return Ok(Tried::Gone),
            Err(e) => return Err(e.to_string()),
        };
        let Some(block) = store.block(height).map_err(|e| e.to_string())? else {
            return Ok(Tried::Gone);
        };
        let Some(fin) = self.marshal.get_finalization(Height::new(height)).await else {
            return Ok(Tried::Next);
        };
        let header = block.block.header;
        if finalized_hash(&fin) != header.hash() || certificate_epoch(&fin) != epoch {
            return Ok(Tried::Next);
        }
        if proven.root != header.state_root {
            return Err(format!(
                "the store's root of version {} is not the one block {height} carries",
                height - 1
            ));
        }
        let Some(next_set) = proven.value else {
            return Err(format!(
                "the state before block {height} holds no set of epoch {}",
                epoch + 1
            ));
        };
        let record = Handoff {
            epoch,
            header,
            finalization: fin.encode().to_vec(),
            next_set,
            proof: proven.proof,
        };
        store
            .set_node_record(&Handoff::record_name(epoch), &record.to_record())
            .map_err(|e| e.to_string())?;
        Ok(Tried::Recorded)
    }
}
