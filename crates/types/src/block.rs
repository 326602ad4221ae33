//! Blocks as the node produces, stores and serves them.
//!
//! A header commits to its parent, to its transactions and to the state root *after the parent*
//! (the state that its transactions run on), so a client that trusts a header can verify a proof
//! about the state at `height - 1`.

use borsh::io::{Error as IoError, ErrorKind, Read, Write};
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

/// A block: its header, its transactions and the evidence its proposer carries (see
/// [`Evidence`]).
///
/// **Encoding.** A block without evidence encodes exactly as it did before evidence existed
/// (Borsh of the header, then of `txs`), so every stored block still reads and keeps its hash.
/// Evidence travels as one extra, last entry of the transaction list: [`EVIDENCE_TAG`] followed
/// by the Borsh of the [`Evidence`]. No transaction can begin with the tag (a transaction begins
/// with its chain id's `u32` length, and `0xFFFF_FFFF` is far above [`crate::tx`]'s size
/// limit), and a transaction that does is refused by [`Block::is_well_formed`] and cannot be
/// encoded. The header's `txs_root` is computed over the same list ([`body_root`]), so it
/// commits to the evidence too and is unchanged for blocks without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<Vec<u8>>,
    pub evidence: Evidence,
}

/// First bytes of the body entry that carries a block's evidence.
pub const EVIDENCE_TAG: [u8; 4] = [0xFF; 4];

/// Most commit records one block may carry.
pub const MAX_BLOCK_COMMITS: usize = 32;
/// Most double-sign records one block may carry.
pub const MAX_BLOCK_DOUBLE_SIGNS: usize = 16;
/// Most bytes of one record's proof (an ed25519 certificate of a few hundred validators, or two
/// votes).
pub const MAX_PROOF_BYTES: usize = 32 * 1024;
/// Most bytes of a block's encoded evidence.
pub const MAX_EVIDENCE_BYTES: usize = 1 << 20;
const _: () = assert!(MAX_BLOCK_COMMITS * 8 * 1024 <= MAX_EVIDENCE_BYTES);

/// What a block's proposer reports about consensus itself, for the slashing rules to come:
/// which validators signed the commit of each earlier height, and which validators signed two
/// conflicting votes. Each record carries the compact fact the ledger applies and the raw proof
/// (consensus's own encoding) any auditor can check again; validators check the proofs before
/// they vote for the block (the ledger knows nothing of consensus's cryptography).
#[derive(Debug, Clone, PartialEq, Eq, Default, BorshSerialize, BorshDeserialize)]
pub struct Evidence {
    /// Commit records of consecutive heights, the first being the lowest height not yet
    /// recorded on the ledger, all below this block.
    pub commits: Vec<Commit>,
    /// Double signing not yet recorded, at most once per (validator, view).
    pub double_signs: Vec<DoubleSign>,
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.double_signs.is_empty()
    }

    /// Whether the counts and sizes stay within the block limits.
    pub fn within_bounds(&self) -> bool {
        let proofs = self.commits.iter().map(|c| match &c.attestation {
            Attestation::Unattested => 0,
            Attestation::Certified { signers, certificate } => signers.len() + certificate.len(),
        });
        let mut bytes = 0usize;
        for len in proofs.chain(self.double_signs.iter().map(|d| d.proof.len())) {
            if len > MAX_PROOF_BYTES {
                return false;
            }
            bytes += len;
        }
        self.commits.len() <= MAX_BLOCK_COMMITS
            && self.double_signs.len() <= MAX_BLOCK_DOUBLE_SIGNS
            && bytes <= MAX_EVIDENCE_BYTES
    }
}

/// Who signed the commit of the block at `height`.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Commit {
    pub height: u64,
    pub attestation: Attestation,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Attestation {
    /// No certificate of this height is known (a block finalized only through a descendant's
    /// certificate, or whose certificate no proposer kept). Allowed only for a height old
    /// enough that honest proposers would have recorded it; counts nobody as signed or missed.
    Unattested,
    /// A certificate of the block: `signers` is its signer bitmap over the validator set in
    /// consensus order (bit `i` is bit `i % 8` of byte `i / 8`; exactly `ceil(n / 8)` bytes, no
    /// bit at or above `n`), `certificate` the certificate in consensus's encoding.
    Certified { signers: Vec<u8>, certificate: Vec<u8> },
}

/// Which two conflicting votes a validator signed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Two notarize votes for different blocks in one view.
    ConflictingNotarize,
    /// Two finalize votes for different blocks in one view.
    ConflictingFinalize,
    /// A nullify and a finalize vote in one view.
    NullifyFinalize,
}

/// Validator `validator` (its index in the validator set of `epoch`, consensus order) signed
/// two conflicting votes in `view` of that epoch (each epoch's views count from zero); `proof`
/// is both votes in consensus's encoding.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DoubleSign {
    pub epoch: u64,
    pub validator: u32,
    pub view: u64,
    pub kind: FaultKind,
    pub proof: Vec<u8>,
}

/// The bitmap of `signers` (validator indices) over `n` validators, as [`Attestation::Certified`]
/// carries it.
pub fn signer_bitmap(n: usize, signers: impl IntoIterator<Item = usize>) -> Vec<u8> {
    let mut out = vec![0u8; n.div_ceil(8)];
    for i in signers {
        assert!(i < n, "signer {i} of {n} validators");
        out[i / 8] |= 1 << (i % 8);
    }
    out
}

/// The validator indices a bitmap names, or `None` unless it is the canonical bitmap of a set of
/// `n` validators (its length, no bit at or above `n`).
pub fn bitmap_signers(n: usize, bitmap: &[u8]) -> Option<Vec<usize>> {
    if bitmap.len() != n.div_ceil(8) {
        return None;
    }
    let mut out = Vec::new();
    for (byte, b) in bitmap.iter().enumerate() {
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                let i = byte * 8 + bit;
                if i >= n {
                    return None;
                }
                out.push(i);
            }
        }
    }
    Some(out)
}

/// SHA-256 over the count and the hash of every transaction, in order.
pub fn txs_root(txs: &[Vec<u8>]) -> Hash32 {
    entries_root(txs.iter().map(Vec::as_slice), txs.len())
}

fn entries_root<'a>(entries: impl Iterator<Item = &'a [u8]>, count: usize) -> Hash32 {
    let mut h = Sha256::new();
    h.update(b"pazar/txs/v1");
    h.update((count as u64).to_le_bytes());
    for e in entries {
        h.update(tx_hash(e));
    }
    h.finalize().into()
}

/// The root a header's `txs_root` carries: [`txs_root`] of the transactions, with the evidence
/// entry (see [`Block`]) as one more, last entry when there is evidence.
pub fn body_root(txs: &[Vec<u8>], evidence: &Evidence) -> Hash32 {
    if evidence.is_empty() {
        return txs_root(txs);
    }
    let entry = evidence_entry(evidence);
    entries_root(
        txs.iter().map(Vec::as_slice).chain(std::iter::once(entry.as_slice())),
        txs.len() + 1,
    )
}

fn evidence_entry(evidence: &Evidence) -> Vec<u8> {
    let mut entry = EVIDENCE_TAG.to_vec();
    BorshSerialize::serialize(evidence, &mut entry).expect("writing into a Vec cannot fail");
    entry
}

impl Block {
    /// Whether the header's `txs_root` matches the transactions and the evidence, and the size
    /// bounds hold.
    pub fn is_well_formed(&self) -> bool {
        self.txs.len() <= MAX_BLOCK_TXS
            && self.txs.iter().map(Vec::len).sum::<usize>() <= MAX_BLOCK_BYTES
            && !self.txs.iter().any(|t| t.starts_with(&EVIDENCE_TAG))
            && self.evidence.within_bounds()
            && body_root(&self.txs, &self.evidence) == self.header.txs_root
    }
}

impl BorshSerialize for Block {
    fn serialize<W: Write>(&self, w: &mut W) -> Result<(), IoError> {
        if self.txs.iter().any(|t| t.starts_with(&EVIDENCE_TAG)) {
            return Err(IoError::new(
                ErrorKind::InvalidData,
                "a transaction begins with the evidence tag",
            ));
        }
        BorshSerialize::serialize(&self.header, w)?;
        let evidence = (!self.evidence.is_empty()).then(|| evidence_entry(&self.evidence));
        let count = self.txs.len() + usize::from(evidence.is_some());
        let count = u32::try_from(count).map_err(|_| IoError::new(ErrorKind::InvalidData, "too many transactions"))?;
        BorshSerialize::serialize(&count, w)?;
        for t in self.txs.iter().chain(evidence.as_ref()) {
            BorshSerialize::serialize(t, w)?;
        }
        Ok(())
    }
}

impl BorshDeserialize for Block {
    fn deserialize_reader<R: Read>(r: &mut R) -> Result<Block, IoError> {
        let header = Header::deserialize_reader(r)?;
        let mut txs = Vec::<Vec<u8>>::deserialize_reader(r)?;
        let bad = |what: &str| IoError::new(ErrorKind::InvalidData, what.to_string());
        let mut evidence = Evidence::default();
        if txs.last().is_some_and(|t| t.starts_with(&EVIDENCE_TAG)) {
            let entry = txs.pop().expect("checked non-empty");
            evidence = Evidence::try_from_slice(&entry[EVIDENCE_TAG.len()..])?;
            if evidence.is_empty() {
                return Err(bad("an evidence entry without evidence"));
            }
        }
        if txs.iter().any(|t| t.starts_with(&EVIDENCE_TAG)) {
            return Err(bad("an evidence entry before the last body entry"));
        }
        Ok(Block { header, txs, evidence })
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
        let b = Block {
            header: h,
            txs: vec![],
            evidence: Evidence::default(),
        };
        assert!(b.is_well_formed());
        let bad = Block {
            txs: vec![vec![1]],
            ..b
        };
        assert!(!bad.is_well_formed());
    }

    fn header(txs_root: Hash32) -> Header {
        Header {
            chain_id: "c".into(),
            height: 7,
            time_ms: 2,
            parent: [3; 32],
            state_root: [4; 32],
            txs_root,
            proposer: Address::module("p"),
        }
    }

    fn evidence() -> Evidence {
        Evidence {
            commits: vec![
                Commit {
                    height: 5,
                    attestation: Attestation::Certified {
                        signers: signer_bitmap(4, [0, 2, 3]),
                        certificate: vec![9; 40],
                    },
                },
                Commit {
                    height: 6,
                    attestation: Attestation::Unattested,
                },
            ],
            double_signs: vec![DoubleSign {
                epoch: 2,
                validator: 1,
                view: 11,
                kind: FaultKind::ConflictingNotarize,
                proof: vec![8; 30],
            }],
        }
    }

    /// The encoding blocks had before evidence existed: Borsh of the header, then of the list.
    #[derive(BorshSerialize, BorshDeserialize)]
    struct OldBlock {
        header: Header,
        txs: Vec<Vec<u8>>,
    }

    #[test]
    fn a_block_without_evidence_encodes_and_hashes_as_before_evidence_existed() {
        let txs = vec![vec![1, 2, 3], vec![4; 10]];
        let old = OldBlock {
            header: header(txs_root(&txs)),
            txs: txs.clone(),
        };
        let old_bytes = borsh::to_vec(&old).expect("encodes");
        let block = Block::try_from_slice(&old_bytes).expect("an old block still decodes");
        assert_eq!(block.evidence, Evidence::default());
        assert_eq!(borsh::to_vec(&block).expect("encodes"), old_bytes);
        assert_eq!(body_root(&txs, &Evidence::default()), txs_root(&txs));
        assert!(block.is_well_formed());
    }

    #[test]
    fn evidence_round_trips_as_the_last_body_entry_and_the_header_commits_to_it() {
        let txs = vec![vec![1, 2, 3]];
        let ev = evidence();
        let block = Block {
            header: header(body_root(&txs, &ev)),
            txs: txs.clone(),
            evidence: ev.clone(),
        };
        assert!(block.is_well_formed());
        let bytes = borsh::to_vec(&block).expect("encodes");
        assert_eq!(Block::try_from_slice(&bytes).expect("decodes"), block);
        // Read the old way, the evidence is one more, last entry, and the root covers it.
        let old = OldBlock::try_from_slice(&bytes).expect("the same layout");
        assert_eq!(old.txs.len(), 2);
        assert!(old.txs[1].starts_with(&EVIDENCE_TAG));
        assert_eq!(txs_root(&old.txs), block.header.txs_root);
        // Other evidence, or none, does not match the header.
        let mut other = block.clone();
        other.evidence.double_signs[0].view += 1;
        assert!(!other.is_well_formed());
        let none = Block {
            evidence: Evidence::default(),
            ..block
        };
        assert!(!none.is_well_formed());
    }

    #[test]
    fn an_evidence_tag_anywhere_but_the_last_entry_or_an_empty_evidence_entry_is_refused() {
        let mut entry = EVIDENCE_TAG.to_vec();
        entry.extend(borsh::to_vec(&evidence()).expect("encodes"));
        let mut empty = EVIDENCE_TAG.to_vec();
        empty.extend(borsh::to_vec(&Evidence::default()).expect("encodes"));
        for txs in [vec![entry.clone(), vec![1]], vec![empty], vec![entry.clone(), entry]] {
            let old = OldBlock {
                header: header(txs_root(&txs)),
                txs,
            };
            let bytes = borsh::to_vec(&old).expect("encodes");
            assert!(Block::try_from_slice(&bytes).is_err());
        }
        // A transaction cannot pose as evidence.
        let block = Block {
            header: header(txs_root(&[EVIDENCE_TAG.to_vec()])),
            txs: vec![EVIDENCE_TAG.to_vec()],
            evidence: Evidence::default(),
        };
        assert!(!block.is_well_formed());
        assert!(borsh::to_vec(&block).is_err());
    }

    #[test]
    fn evidence_over_its_bounds_is_not_well_formed() {
        let mut ev = evidence();
        ev.double_signs = vec![ev.double_signs[0].clone(); MAX_BLOCK_DOUBLE_SIGNS + 1];
        assert!(!ev.within_bounds());
        let mut ev = evidence();
        ev.double_signs[0].proof = vec![0; MAX_PROOF_BYTES + 1];
        assert!(!ev.within_bounds());
        let mut ev = evidence();
        ev.commits = vec![ev.commits[1].clone(); MAX_BLOCK_COMMITS + 1];
        assert!(!ev.within_bounds());
        assert!(evidence().within_bounds());
    }

    #[test]
    fn signer_bitmaps_are_canonical() {
        let b = signer_bitmap(10, [0, 9]);
        assert_eq!(b, vec![0b1, 0b10]);
        assert_eq!(bitmap_signers(10, &b), Some(vec![0, 9]));
        // Wrong length, or a bit past the last validator.
        assert_eq!(bitmap_signers(10, &[1]), None);
        assert_eq!(bitmap_signers(10, &[1, 0b100]), None);
        assert_eq!(bitmap_signers(10, &[1, 0, 0]), None);
        assert_eq!(bitmap_signers(4, &[0]), Some(vec![]));
    }
}
