//! State sync, the consensus side: a validator that joins late (or was away long) takes a peer's
//! state at some height H instead of replaying every block, and starts consensus from the
//! finalization of block H + 1, whose header carries the state root after H.
//!
//! What proves the snapshot is this module's check of that finalization: a certificate of 2f+1
//! votes of the validator set of the certificate's epoch, under the chain's namespace, for the
//! block whose header the peer handed over. Nothing the serving peer says is taken on trust: a
//! certificate that does not verify, or that finalizes another block, ends the sync. The
//! snapshot's chunks are then checked against the root in that header
//! ([`pazar_store::Restore`]).
//!
//! The set of a later epoch than genesis names (epochs 0 and 1) is learned by walking the
//! hand-off records ([`pazar_api::sync::Handoff`]) from genesis with a [`HandoffChain`]: the
//! record of epoch `E` is a block that a quorum of the set of `E` finalized and a Merkle proof,
//! under that block's state root, of the set of `E + 1`. A peer cannot forge a link without a
//! quorum of a set the chain before it proved, so a node that knows only its genesis learns
//! every later set ([`crate::handoff`] makes the records).
//!
//! [`MarshalCertificates`] is the serving side: the node's RPC hands out the finalizations
//! marshal archived.

use std::sync::{Arc, Mutex};

use commonware_codec::{Copying, Decode, DecodeExt, Encode};
use commonware_consensus::types::Height;
use commonware_consensus::Epochable;
use commonware_cryptography::ed25519::PublicKey;
use commonware_cryptography::sha256::Digest;
use commonware_utils::ordered::Set;
use rand_010::rngs::{StdRng, SysRng};
use rand_010::SeedableRng;

use pazar_api::sync::Handoff;
use pazar_ledger::validators::{decode_set, MAX_SET};
use pazar_node::consensus::Certificates;
use pazar_node::genesis::ConsensusKey;
use pazar_types::records::SetMember;
use pazar_types::state_key::{store_key, table_id};
use pazar_types::{Hash32, Header};

use crate::app::Scheme;
use crate::engine::{Finalization, Marshal};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the finalization certificate does not decode: {0}")]
    Decode(String),
    #[error("the finalization certificate is not signed by a quorum of this chain's validators")]
    Signatures,
    #[error("the finalization certificate finalizes block {got}, not the block {expected} the peer sent")]
    OtherBlock { expected: String, got: String },
    #[error("genesis validator key {0} is not an ed25519 public key")]
    Validator(ConsensusKey),
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// The namespace of every vote of the chain `chain_id` started from the genesis file hashing to
/// `genesis_hash` (the p2p handshake's too): a vote or certificate of one chain is worthless on
/// another, even one relaunched with the same id and validator keys.
pub fn namespace(chain_id: &str, genesis_hash: &Hash32) -> Vec<u8> {
    let mut n = format!("pazar:{chain_id}:").into_bytes();
    n.extend(genesis_hash.iter().flat_map(|b| format!("{b:02x}").into_bytes()));
    n
}

/// Decodes a finalization certificate of a set of `validators` validators (more signatures than
/// that are refused before they are read).
pub fn decode_finalization(bytes: &[u8], validators: usize) -> Result<Finalization, SyncError> {
    Finalization::decode_cfg(Copying(bytes), &validators).map_err(|e| SyncError::Decode(e.to_string()))
}

/// Checks that `fin` is a certificate of a quorum of `validators` under `namespace` finalizing
/// the block whose header is `header`.
pub fn verify_finalization(
    namespace: &[u8],
    validators: &[ConsensusKey],
    fin: &Finalization,
    header: &Header,
) -> Result<(), SyncError> {
    let expected = Digest::from(header.hash());
    if fin.proposal.payload != expected {
        return Err(SyncError::OtherBlock {
            expected: hex(&expected),
            got: hex(&fin.proposal.payload),
        });
    }
    verify_certificate(namespace, validators, fin)
}

/// Checks that `fin` is a certificate of a quorum of `validators` under `namespace` (of whatever
/// block it names: [`finalized_hash`]).
pub fn verify_certificate(namespace: &[u8], validators: &[ConsensusKey], fin: &Finalization) -> Result<(), SyncError> {
    let mut set = Vec::with_capacity(validators.len());
    for v in validators {
        set.push(PublicKey::decode(Copying(&v.0[..])).map_err(|_| SyncError::Validator(*v))?);
    }
    let validators = Set::from_iter_dedup(set);
    let scheme = Scheme::verifier(namespace, validators);
    // Batch verification needs randomness an attacker cannot predict.
    let mut rng = StdRng::try_from_rng(&mut SysRng).map_err(|e| SyncError::Random(e.to_string()))?;
    if !fin.verify(&mut rng, &scheme, &commonware_parallel::Sequential) {
        return Err(SyncError::Signatures);
    }
    Ok(())
}

/// The epoch a finalization certificate was made in (its signers are that epoch's set).
pub fn certificate_epoch(fin: &Finalization) -> u64 {
    fin.epoch().get()
}

/// The hash of the block header a finalization certificate names.
pub fn finalized_hash(fin: &Finalization) -> pazar_types::Hash32 {
    let mut h = [0u8; 32];
    h.copy_from_slice(fin.proposal.payload.as_ref());
    h
}

fn hex(d: &Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Most bytes the state entry of a validator set may take: [`MAX_SET`] members of a 32-byte key
/// and an 8-byte power, after Borsh's 4-byte length. A longer entry is refused unread.
pub const MAX_SET_BYTES: usize = 4 + MAX_SET * (32 + 8);

/// Why a hand-off record is refused: each a peer's lie or a broken record, named.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("expected the hand-off record of epoch {expected}, got one of epoch {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("the hand-off record of epoch {epoch} is of chain {got}, not {expected}")]
    Chain { epoch: u64, expected: String, got: String },
    #[error("the hand-off record of epoch {epoch} names block {height}, of epoch {block_epoch}")]
    BlockEpoch { epoch: u64, height: u64, block_epoch: u64 },
    #[error("the hand-off record of epoch {epoch} carries a certificate of epoch {got}")]
    CertificateEpoch { epoch: u64, got: u64 },
    #[error("the hand-off record of epoch {epoch}: {source}")]
    Certificate { epoch: u64, source: SyncError },
    #[error(
        "the hand-off record of epoch {epoch}: the set of epoch {next} takes {bytes} bytes, more than a \
         set of {MAX_SET} validators"
    )]
    SetBytes { epoch: u64, next: u64, bytes: usize },
    #[error(
        "the hand-off record of epoch {epoch}: the set of epoch {next} is not proven under the block's \
         state root: {reason}"
    )]
    Proof { epoch: u64, next: u64, reason: String },
    #[error("the hand-off record of epoch {epoch}: the set of epoch {next} is not a validator set: {reason}")]
    Set { epoch: u64, next: u64, reason: String },
    #[error("the chain's epochs have no length (a chain without a validator set has one epoch)")]
    NoEpochs,
}

/// The validator sets of epochs `0 ..= known()`: those of genesis, then each one a hand-off
/// record proved. Records are accepted only in epoch order, each checked with the set the
/// chain already holds; the accepted records are kept for the node to store and serve.
#[derive(Debug, Clone)]
pub struct HandoffChain {
    namespace: Vec<u8>,
    chain_id: String,
    epoch_length: u64,
    /// The set of each epoch from 0, consensus keys in key order.
    sets: Vec<Vec<ConsensusKey>>,
    records: Vec<Handoff>,
}

impl HandoffChain {
    /// The chain of the genesis whose validators are `genesis` (the set of epochs 0 and 1) and
    /// whose epochs are `epoch_length` blocks, for votes under `namespace`.
    pub fn new(
        namespace: &[u8],
        chain_id: &str,
        epoch_length: u64,
        genesis: &[ConsensusKey],
    ) -> Result<HandoffChain, HandoffError> {
        if epoch_length == 0 {
            return Err(HandoffError::NoEpochs);
        }
        let mut set = genesis.to_vec();
        set.sort_unstable_by_key(|k| k.0);
        set.dedup();
        Ok(HandoffChain {
            namespace: namespace.to_vec(),
            chain_id: chain_id.to_string(),
            epoch_length,
            sets: vec![set.clone(), set],
            records: Vec::new(),
        })
    }

    /// The last epoch whose set is known; the next record to accept is this epoch's.
    pub fn known(&self) -> u64 {
        self.sets.len() as u64 - 1
    }

    /// The set of `epoch` (in key order), if known.
    pub fn set(&self, epoch: u64) -> Option<&[ConsensusKey]> {
        self.sets.get(usize::try_from(epoch).ok()?).map(Vec::as_slice)
    }

    /// The epoch holding `height`, as the ledger and marshal's epocher cut heights.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.epoch_length
    }

    /// The records accepted so far, in epoch order (from epoch 1).
    pub fn records(&self) -> &[Handoff] {
        &self.records
    }

    /// Checks `record` with the set of its epoch, which must be [`HandoffChain::known`], and
    /// learns the set of the epoch after it. The cheap checks come first; the certificate is
    /// decoded only up to as many signatures as the set has members, and the proven set only
    /// up to [`MAX_SET_BYTES`].
    pub fn accept(&mut self, record: Handoff) -> Result<(), HandoffError> {
        let epoch = self.known();
        if record.epoch != epoch {
            return Err(HandoffError::OutOfOrder {
                expected: epoch,
                got: record.epoch,
            });
        }
        let next = epoch + 1;
        if record.header.chain_id != self.chain_id {
            return Err(HandoffError::Chain {
                epoch,
                expected: self.chain_id.clone(),
                got: record.header.chain_id.clone(),
            });
        }
        let block_epoch = self.epoch_of(record.header.height);
        if block_epoch != epoch {
            return Err(HandoffError::BlockEpoch {
                epoch,
                height: record.header.height,
                block_epoch,
            });
        }
        if record.next_set.len() > MAX_SET_BYTES {
            return Err(HandoffError::SetBytes {
                epoch,
                next,
                bytes: record.next_set.len(),
            });
        }
        let set = self.set(epoch).expect("the known epoch's set is held");
        let certificate = |source| HandoffError::Certificate { epoch, source };
        let fin = decode_finalization(&record.finalization, set.len()).map_err(certificate)?;
        if certificate_epoch(&fin) != epoch {
            return Err(HandoffError::CertificateEpoch {
                epoch,
                got: certificate_epoch(&fin),
            });
        }
        verify_finalization(&self.namespace, set, &fin, &record.header).map_err(certificate)?;
        let key = store_key(table_id::VALIDATOR_SETS, &next);
        pazar_api::proof::verify_proof(&record.header.state_root, &key, Some(&record.next_set), &record.proof)
            .map_err(|e| HandoffError::Proof {
                epoch,
                next,
                reason: e.to_string(),
            })?;
        let members = check_set(&record.next_set).map_err(|reason| HandoffError::Set { epoch, next, reason })?;
        self.sets.push(members.iter().map(|m| ConsensusKey(m.key)).collect());
        self.records.push(record);
        Ok(())
    }
}

/// A validator set as the ledger stores it, within the ledger's bounds: 1 to [`MAX_SET`]
/// members, in strict key order, each an ed25519 key, each with power.
pub fn check_set(bytes: &[u8]) -> Result<Vec<SetMember>, String> {
    if bytes.len() > MAX_SET_BYTES {
        return Err(format!("{} bytes", bytes.len()));
    }
    let set = decode_set(bytes).ok_or("it does not decode")?;
    if set.is_empty() || set.len() > MAX_SET {
        return Err(format!("{} members, not 1 to {MAX_SET}", set.len()));
    }
    for (i, m) in set.iter().enumerate() {
        if i > 0 && set[i - 1].key >= m.key {
            return Err("its keys are not in strict key order".into());
        }
        if m.power == 0 || !pazar_types::keys::is_ed25519_public_key(&m.key) {
            return Err(format!(
                "member {} has no power or is not an ed25519 key",
                ConsensusKey(m.key)
            ));
        }
    }
    Ok(set)
}

/// The finalizations marshal archived, for the node's RPC to serve; empty until the engine
/// has started.
#[derive(Clone, Default)]
pub struct MarshalCertificates {
    marshal: Arc<Mutex<Option<Marshal>>>,
}

impl MarshalCertificates {
    pub(crate) fn set(&self, m: Marshal) {
        if let Ok(mut g) = self.marshal.lock() {
            *g = Some(m);
        }
    }
}

impl Certificates for MarshalCertificates {
    fn finalization(
        &self,
        height: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send + '_>> {
        let marshal = self.marshal.lock().ok().and_then(|g| g.clone());
        Box::pin(async move {
            let f = marshal?.get_finalization(Height::new(height)).await?;
            Some(f.encode().to_vec())
        })
    }
}
