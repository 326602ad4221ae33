//! State sync, the consensus side: a validator that joins late (or was away long) takes a peer's
//! state at some height H instead of replaying every block, and starts consensus from the
//! finalization of block H + 1, whose header carries the state root after H.
//!
//! What proves the snapshot is this module's check of that finalization: a certificate of 2f+1
//! votes of the validator set of the node's own genesis, under the chain's namespace, for the
//! block whose header the peer handed over. Nothing the serving peer says is taken on trust: a
//! certificate that does not verify, or that finalizes another block, ends the sync. The
//! snapshot's chunks are then checked against the root in that header
//! ([`pazar_store::Restore`]).
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

use pazar_node::consensus::Certificates;
use pazar_node::genesis::ConsensusKey;
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
