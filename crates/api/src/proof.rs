//! Merkle proofs of the ledger's state, checked by clients against a block header's state root:
//! a light client trusts a header (and, with many validators, its signatures), not the node
//! that answered. The key layout is [`pazar_types::state_key`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use pazar_types::tx::hex_array;
use pazar_types::Hash32;

/// A proof that `key` maps to `value` (or is absent) in the state committed at `height`.
/// The root that commits to it is in the header of block `height + 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Proof {
    /// The version (block height) proven against.
    pub height: u64,
    /// The root the node says the state had at `height`; [`Proof::verify`] checks it against a
    /// trusted header, never trusts it.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub state_root: Hash32,
    #[serde(with = "hex::serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::HexBytes))]
    pub key: Vec<u8>,
    #[serde(with = "opt_hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<pazar_types::openapi::HexBytes>))]
    pub value: Option<Vec<u8>>,
    /// Borsh encoding of a `jmt` sparse Merkle proof.
    #[serde(with = "hex::serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::HexBytes))]
    pub proof: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof is about another key")]
    OtherKey,
    #[error("the node's root {claimed} differs from the trusted root {trusted}")]
    OtherRoot { claimed: String, trusted: String },
    #[error("proof bytes are not a sparse Merkle proof: {0}")]
    Malformed(String),
    #[error("proof does not verify against the root: {0}")]
    Mismatch(String),
}

impl Proof {
    /// Checks this proof is about `expected_key` and verifies under `trusted_root` (the state
    /// root of the header of block `height + 1`). Returns the proven value (`None`: absent).
    pub fn verify(&self, trusted_root: &Hash32, expected_key: &[u8]) -> Result<Option<&[u8]>, ProofError> {
        if self.key != expected_key {
            return Err(ProofError::OtherKey);
        }
        if self.state_root != *trusted_root {
            return Err(ProofError::OtherRoot {
                claimed: hex::encode(self.state_root),
                trusted: hex::encode(trusted_root),
            });
        }
        verify_proof(trusted_root, &self.key, self.value.as_deref(), &self.proof)?;
        Ok(self.value.as_deref())
    }
}

/// Checks that `key` maps to `value` (or is absent when `None`) under `root`.
pub fn verify_proof(root: &Hash32, key: &[u8], value: Option<&[u8]>, proof: &[u8]) -> Result<(), ProofError> {
    let proof: jmt::proof::SparseMerkleProof<Sha256> =
        borsh::from_slice(proof).map_err(|e| ProofError::Malformed(e.to_string()))?;
    proof
        .verify(jmt::RootHash(*root), jmt::KeyHash::with::<Sha256>(key), value)
        .map_err(|e| ProofError::Mismatch(e.to_string()))
}

mod opt_hex {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}
