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

/// Most store keys one `POST /state/proofs` names.
pub const MAX_PROOF_KEYS: usize = 256;
/// Longest store key `POST /state/proofs` takes (a table id and a Borsh-encoded key).
pub const MAX_STORE_KEY_BYTES: usize = 512;
/// Largest body of `POST /state/proofs`: the most keys, each the longest, in hex JSON.
pub const MAX_PROOFS_BODY_BYTES: usize = 64 + MAX_PROOF_KEYS * (2 * MAX_STORE_KEY_BYTES + 4);

/// A raw store key ([`pazar_types::state_key::store_key`]), hex in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = pazar_types::openapi::HexBytes))]
#[serde(transparent)]
pub struct StoreKey(#[serde(with = "hex::serde")] pub Vec<u8>);

/// `POST /state/proofs`: proofs of several state entries at one height, so that records that
/// refer to each other (a checkpoint, its rounds, its job and dataset) are proven against one
/// state root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProofsRequest {
    /// 1 to [`MAX_PROOF_KEYS`] store keys, each at most [`MAX_STORE_KEY_BYTES`] bytes.
    pub keys: Vec<StoreKey>,
}

impl ProofsRequest {
    /// Checks the counts and sizes; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.keys.is_empty() || self.keys.len() > MAX_PROOF_KEYS {
            return Err(format!(
                "{} keys: name 1 to {MAX_PROOF_KEYS} store keys",
                self.keys.len()
            ));
        }
        if let Some((i, k)) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.0.is_empty() || k.0.len() > MAX_STORE_KEY_BYTES)
        {
            return Err(format!(
                "key {i} has {} bytes: a store key has 1 to {MAX_STORE_KEY_BYTES}",
                k.0.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some((i, _)) = self.keys.iter().enumerate().find(|(_, k)| !seen.insert(&k.0)) {
            return Err(format!("key {i} is named twice"));
        }
        Ok(())
    }
}

/// The answer: one proof per key, in the request's order, all at `height` (verify them against
/// the `state_root` of the header of block `height + 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProofsResponse {
    pub height: u64,
    pub proofs: Vec<Proof>,
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
