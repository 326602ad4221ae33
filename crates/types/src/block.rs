//! Blocks as the node produces, stores and serves them.
//!
//! A header commits to its parent, to its transactions and to the state root *after the parent*
//! (the state that its transactions run on), so a client that trusts a header can verify a proof
//! about the state at `height - 1`.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tx::{hex_array, tx_hash, Hash32};
use crate::Address;

/// Most transactions one block may carry.
pub const MAX_BLOCK_TXS: usize = 50_000;
/// Most bytes of transactions one block may carry.
pub const MAX_BLOCK_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Header {
    pub chain_id: String,
    pub height: u64,
    /// Proposer's wall clock, milliseconds since the Unix epoch; informational only.
    pub time_ms: u64,
    /// Hash of the previous header (zero for height 1).
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub parent: Hash32,
    /// Root of the state commitment after block `height - 1` (after genesis for height 1).
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub state_root: Hash32,
    /// [`txs_root`] of this block's transactions.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub txs_root: Hash32,
    pub proposer: Address,
}

impl Header {
    pub fn hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"pazar/header/v1");
        h.update(borsh::to_vec(self).expect("encoding into a Vec cannot fail"));
        h.finalize().into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<Vec<u8>>,
}

/// SHA-256 over the count and the hash of every transaction, in order.
pub fn txs_root(txs: &[Vec<u8>]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(b"pazar/txs/v1");
    h.update((txs.len() as u64).to_le_bytes());
    for tx in txs {
        h.update(tx_hash(tx));
    }
    h.finalize().into()
}

impl Block {
    /// Whether the header's `txs_root` matches the transactions and the size bounds hold.
    pub fn is_well_formed(&self) -> bool {
        self.txs.len() <= MAX_BLOCK_TXS
            && self.txs.iter().map(Vec::len).sum::<usize>() <= MAX_BLOCK_BYTES
            && txs_root(&self.txs) == self.header.txs_root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_hash_changes_with_every_field() {
        let h = Header {
            chain_id: "c".into(),
            height: 1,
            time_ms: 2,
            parent: [3; 32],
            state_root: [4; 32],
            txs_root: txs_root(&[]),
            proposer: Address::module("p"),
        };
        let mut other = h.clone();
        other.state_root[0] ^= 1;
        assert_ne!(h.hash(), other.hash());
        let b = Block { header: h, txs: vec![] };
        assert!(b.is_well_formed());
        let bad = Block {
            txs: vec![vec![1]],
            ..b
        };
        assert!(!bad.is_well_formed());
    }
}
