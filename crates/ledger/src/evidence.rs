//! What consensus proves about its validators, kept for the slashing rules to come: how many
//! commits each validator signed and missed, and every double signing, once per (validator,
//! view).
//!
//! A block's [`Evidence`] is applied after its transactions. The ledger checks what it can know
//! without consensus's cryptography (records in order, each once, within the validator set and
//! the block limits); the proofs the records carry were checked by every validator before it
//! voted for the block. Validators are named by their consensus key; a commit record's bitmap
//! counts in the set of the epoch of its height, a double signing's index in the set of the
//! epoch of the block that records it ([`crate::validators`]), in consensus (key) order.
//!
//! Commit records cover every height once, in order: a block records the heights after the
//! last recorded one, each below the block itself. A height may be recorded as
//! [`Attestation::Unattested`] only once it is [`UNATTESTED_AFTER`] blocks old, so a proposer
//! cannot erase a fresh commit that honest proposers would record, and the chain is never stuck
//! on a height nobody holds a certificate of.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::Serialize;

use pazar_types::block::{bitmap_signers, Attestation, DoubleSign, Evidence, FaultKind};

use crate::State;

/// A validator's consensus public key (ed25519).
pub type ValidatorKey = [u8; 32];

/// How many blocks old a height must be before a block may record it without a certificate.
pub const UNATTESTED_AFTER: u64 = 16;

/// Most validators the records may name (the bitmap of a larger set would exceed a proof).
pub const MAX_VALIDATORS: usize = 8 * pazar_types::block::MAX_PROOF_BYTES;

/// What the ledger knows of one validator's conduct.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct ValidatorRecord {
    /// Commits whose certificate holds this validator's vote.
    pub signed: u64,
    /// Commits whose certificate does not.
    pub missed: u64,
    /// Height of the last commit it missed (0: none).
    pub last_missed: u64,
    /// Views in which it signed conflicting votes.
    pub double_signs: u64,
}

/// A double signing as the ledger keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct DoubleSignRecord {
    pub kind: FaultKind,
    /// The block that recorded it.
    pub height: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("the block's evidence exceeds the block limits")]
    Bounds,
    #[error("the validator set has {0} validators; at most {MAX_VALIDATORS} and at least one")]
    ValidatorSet(usize),
    #[error("commit record of height {got}; the next height to record is {expected}")]
    CommitHeight { expected: u64, got: u64 },
    #[error("commit record of height {commit} in block {block}: only heights below the block can be recorded")]
    CommitAhead { commit: u64, block: u64 },
    #[error("height {commit} recorded without a certificate in block {block}: allowed only {UNATTESTED_AFTER} blocks after it")]
    UnattestedTooSoon { commit: u64, block: u64 },
    #[error("commit record of height {0}: its signer bitmap does not fit the validator set")]
    Signers(u64),
    #[error("double-sign record names validator {index}; the set has {validators}")]
    UnknownValidator { index: u32, validators: usize },
    #[error("double signing of validator {index} in view {view} of epoch {epoch} is already recorded")]
    DoubleSignRecorded { index: u32, epoch: u64, view: u64 },
    #[error("double signing in epoch {epoch}, after the epoch of block {block}")]
    FutureEpoch { epoch: u64, block: u64 },
}

/// A commit record after its checks: the height and, if certified, who signed.
struct CheckedCommit {
    height: u64,
    /// Each validator of the height's set, and whether it signed.
    signers: Option<Vec<(ValidatorKey, bool)>>,
}

impl State {
    /// The lowest height whose commit is not recorded yet.
    pub fn next_commit_height(&self) -> u64 {
        self.commit_cursor.get(&()).copied().unwrap_or(0) + 1
    }

    /// What the ledger knows of the validator with consensus key `key`.
    pub fn validator_record(&self, key: &ValidatorKey) -> Option<ValidatorRecord> {
        self.validator_records.get(key).copied()
    }

    /// Every validator the ledger has a record of, in key order.
    pub fn validator_records(&self) -> impl Iterator<Item = (&ValidatorKey, &ValidatorRecord)> {
        self.validator_records.iter()
    }

    /// The double signing of validator `key` in `view` of `epoch`, if recorded.
    pub fn double_sign(&self, key: &ValidatorKey, epoch: u64, view: u64) -> Option<DoubleSignRecord> {
        self.double_signs.get(&(*key, epoch, view)).copied()
    }

    /// Every recorded double signing, by validator, epoch, then view.
    pub fn double_signs(&self) -> impl Iterator<Item = (&(ValidatorKey, u64, u64), &DoubleSignRecord)> {
        self.double_signs.iter()
    }

    /// Checks the evidence of block `height` (whose transactions may or may not have run yet:
    /// they touch none of this module's tables, and a block changes no set it is checked
    /// against) against the state and its validator sets.
    pub fn check_evidence(&self, height: u64, evidence: &Evidence) -> Result<(), EvidenceError> {
        self.checked(height, evidence).map(|_| ())
    }

    /// The set a record counts in, in consensus order.
    fn set_of(&self, height: u64) -> Result<Vec<ValidatorKey>, EvidenceError> {
        let set = self.validator_keys(self.epoch_of(height));
        if set.is_empty() || set.len() > MAX_VALIDATORS {
            return Err(EvidenceError::ValidatorSet(set.len()));
        }
        Ok(set)
    }

    fn checked(&self, height: u64, evidence: &Evidence) -> Result<Vec<CheckedCommit>, EvidenceError> {
        if evidence.is_empty() {
            return Ok(Vec::new());
        }
        if !evidence.within_bounds() {
            return Err(EvidenceError::Bounds);
        }
        let mut commits = Vec::with_capacity(evidence.commits.len());
        for (next, c) in (self.next_commit_height()..).zip(&evidence.commits) {
            if c.height != next {
                return Err(EvidenceError::CommitHeight {
                    expected: next,
                    got: c.height,
                });
            }
            if c.height >= height {
                return Err(EvidenceError::CommitAhead {
                    commit: c.height,
                    block: height,
                });
            }
            let signers = match &c.attestation {
                Attestation::Unattested => {
                    if c.height + UNATTESTED_AFTER > height {
                        return Err(EvidenceError::UnattestedTooSoon {
                            commit: c.height,
                            block: height,
                        });
                    }
                    None
                }
                Attestation::Certified { signers, .. } => {
                    let set = self.set_of(c.height)?;
                    let n = set.len();
                    let idx = bitmap_signers(n, signers).ok_or(EvidenceError::Signers(c.height))?;
                    let mut signed = vec![false; n];
                    for i in idx {
                        signed[i] = true;
                    }
                    Some(set.into_iter().zip(signed).collect())
                }
            };
            commits.push(CheckedCommit {
                height: c.height,
                signers,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &evidence.double_signs {
            let key = self.double_signer(height, d)?;
            if self.double_signs.contains(&(key, d.epoch, d.view)) || !seen.insert((key, d.epoch, d.view)) {
                return Err(EvidenceError::DoubleSignRecorded {
                    index: d.validator,
                    epoch: d.epoch,
                    view: d.view,
                });
            }
        }
        Ok(commits)
    }

    /// The key of the validator a double signing recorded in block `height` names: its index
    /// in the set of the proof's epoch, which is this block's or an earlier one.
    fn double_signer(&self, height: u64, d: &DoubleSign) -> Result<ValidatorKey, EvidenceError> {
        if d.epoch > self.epoch_of(height) {
            return Err(EvidenceError::FutureEpoch {
                epoch: d.epoch,
                block: height,
            });
        }
        let set = self.validator_keys(d.epoch);
        set.get(d.validator as usize)
            .copied()
            .ok_or(EvidenceError::UnknownValidator {
                index: d.validator,
                validators: set.len(),
            })
    }

    /// Applies the evidence of block `height`: checks it whole first, and changes nothing when
    /// it is refused. A validator that verified the block has already checked it the same way.
    pub fn apply_evidence(&mut self, height: u64, evidence: &Evidence) -> Result<(), EvidenceError> {
        let commits = self.checked(height, evidence)?;
        for c in &commits {
            if let Some(signed) = &c.signers {
                for &(key, s) in signed {
                    let mut r = self.validator_record(&key).unwrap_or_default();
                    if s {
                        r.signed += 1;
                    } else {
                        r.missed += 1;
                        r.last_missed = c.height;
                    }
                    self.validator_records.insert(key, r);
                }
            }
            self.commit_cursor.insert((), c.height);
        }
        for d in &evidence.double_signs {
            let key = self.double_signer(height, d)?;
            self.double_signs
                .insert((key, d.epoch, d.view), DoubleSignRecord { kind: d.kind, height });
            let mut r = self.validator_record(&key).unwrap_or_default();
            r.double_signs += 1;
            self.validator_records.insert(key, r);
        }
        self.commit();
        Ok(())
    }
}
