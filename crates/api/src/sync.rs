//! State sync across validator-set changes: the hand-off records a node walks from its genesis
//! to learn the validator set of any later epoch without trusting the peer that serves them.
//!
//! The record of epoch `E` (`E ≥ 1`) is a block of epoch `E`, the finalization certificate
//! that epoch's set signed for it, and the set of epoch `E + 1` as the state under that block's
//! header (its `state_root`, the state after the block before it) stores it, with its Merkle
//! proof. Genesis names the sets of epochs 0 and 1; the record of epoch 1, checked with the
//! genesis set, proves the set of epoch 2; the record of epoch 2, checked with that, proves
//! the set of epoch 3; and so on (the ledger fixes the set of `E + 1` by the end of epoch
//! `E − 1`, so the state under any block of `E` holds it).

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use pazar_types::Header;

/// Most records one answer of `GET /sync/handoffs` carries; a node that needs more asks again
/// from the epoch after the last one it got.
pub const MAX_HANDOFFS: usize = 64;

/// One hand-off: epoch `epoch`'s validators finalized `header`, whose state holds the set of
/// epoch `epoch + 1`. Every field comes from a peer: the receiver checks all of it
/// (`pazar_consensus::sync::HandoffChain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Handoff {
    /// The epoch whose validators signed the certificate.
    pub epoch: u64,
    /// The header of a block of `epoch`.
    pub header: Header,
    /// The consensus engine's encoding of the block's finalization certificate.
    #[serde(with = "hex::serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::HexBytes))]
    pub finalization: Vec<u8>,
    /// The value of the state entry of the validator set of `epoch + 1` (the ledger's encoding
    /// of the set).
    #[serde(with = "hex::serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::HexBytes))]
    pub next_set: Vec<u8>,
    /// Borsh encoding of the `jmt` sparse Merkle proof of that entry under `header.state_root`.
    #[serde(with = "hex::serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::HexBytes))]
    pub proof: Vec<u8>,
}

impl Handoff {
    /// The name of the node record (beside the chain data in the store) holding the record of
    /// `epoch`, Borsh-encoded.
    pub fn record_name(epoch: u64) -> String {
        format!("handoff/{epoch}")
    }

    /// The record as a node keeps it (Borsh).
    pub fn to_record(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding into a Vec cannot fail")
    }

    /// A record a node kept ([`Handoff::to_record`]); `None` if the bytes are not one.
    pub fn from_record(bytes: &[u8]) -> Option<Handoff> {
        borsh::from_slice(bytes).ok()
    }
}

/// `GET /sync/handoffs?from=E`: the records of epochs `E, E + 1, …` this node holds, in order,
/// without a gap, at most [`MAX_HANDOFFS`]; fewer (or none) where its records end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Handoffs {
    pub handoffs: Vec<Handoff>,
}
