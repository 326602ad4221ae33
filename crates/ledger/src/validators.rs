//! The validator set, one per epoch, and how it changes.
//!
//! Heights are cut into epochs of [`State::epoch_length`] blocks: epoch `e` is heights
//! `e × length .. (e + 1) × length` (epoch 0 holds genesis), as commonware's `FixedEpocher`
//! cuts them. The set of an epoch is fixed before the epoch before it starts: genesis fixes
//! the sets of epochs 0 and 1, and the last block of epoch `e` fixes the set of epoch `e + 2`.
//! So every validator knows, a whole epoch ahead, who signs from which height on, and a set
//! is always proven by blocks that the set before it finalized (state sync walks that chain).
//!
//! Until staking lands (it will write the set from stake), the set changes by the vote of its
//! own validators: a validator of epoch `e` sends [`Msg::VoteValidator`] `{key, power}` from
//! its account (the address of its consensus key); when more than two thirds of epoch `e`'s
//! validators (simplex's quorum) have voted for the same `(key, power)` by the end of the
//! epoch, the set of epoch `e + 2` is the set of epoch `e + 1` with that change (power 0
//! removes). Every vote of an epoch ends with it. A change that would empty the set or grow it
//! beyond [`MAX_SET`] is dropped, with the set announced as it is.
//!
//! Consensus counts every member's vote once (simplex is not weighted); the power is recorded
//! for the staking rules to come.
//!
//! [`Msg::VoteValidator`]: pazar_types::Msg::VoteValidator

use pazar_types::records::SetMember;
use pazar_types::{Address, Event};

use crate::error::ValidatorError;
use crate::evidence::{ValidatorKey, MAX_VALIDATORS};
use crate::state::GenesisError;
use crate::{Ctx, State};

/// Most validators one set may hold: a commit record (a certificate of up to every member's
/// 64-byte signature, its bitmap and framing) must fit one proof, and a block's most commit
/// records with its most double-sign proofs must fit the block's evidence.
pub const MAX_SET: usize = 200;

const _: () = {
    use pazar_types::block::{MAX_BLOCK_COMMITS, MAX_BLOCK_DOUBLE_SIGNS, MAX_EVIDENCE_BYTES, MAX_PROOF_BYTES};
    let record = 64 * MAX_SET + MAX_SET.div_ceil(8) + 256;
    assert!(MAX_SET <= MAX_VALIDATORS);
    assert!(record <= MAX_PROOF_BYTES);
    assert!(MAX_BLOCK_COMMITS * record + MAX_BLOCK_DOUBLE_SIGNS * MAX_PROOF_BYTES <= MAX_EVIDENCE_BYTES);
};

/// Most changes one validator may have open (voted for) in one epoch: each costs its voter a
/// fee, and one validator cannot crowd out the others' changes or grow the table beyond
/// `MAX_SET × MAX_OPEN_VOTES`.
pub const MAX_OPEN_VOTES: usize = 8;

/// Shortest epoch: commonware's epocher needs two heights (epoch 0 would hold only genesis).
pub const MIN_EPOCH_LENGTH: u64 = 2;

/// Votes a change needs among `n` validators: more than two thirds, as simplex's quorum
/// (`n − f` with `f = ⌊(n − 1) / 3⌋`).
pub fn quorum(n: usize) -> usize {
    n - n.saturating_sub(1) / 3
}

/// A validator set as the state stores it (the value of its entry in the `VALIDATOR_SETS`
/// table), e.g. read from a verified snapshot; `None` if the bytes are not one.
pub fn decode_set(bytes: &[u8]) -> Option<Vec<SetMember>> {
    borsh::from_slice(bytes).ok()
}

/// The name of a validator set: the SHA-256 of its entry in the `VALIDATOR_SETS` table
/// (`stored`, as [`decode_set`] reads it; the ledger writes one encoding of a set: members in key
/// order, once each). `GET /validators` shows it; an operator gives a node one as the trust
/// anchor of a state sync (`state_sync_trust`).
pub fn set_hash(stored: &[u8]) -> pazar_types::Hash32 {
    use sha2::Digest;
    sha2::Sha256::digest(stored).into()
}

/// [`set_hash`] of a set as the state holds it.
pub fn set_hash_of(set: &[SetMember]) -> pazar_types::Hash32 {
    set_hash(&borsh::to_vec(set).expect("encoding a set into memory cannot fail"))
}

impl State {
    /// Gives a genesis state its validator set (consensus key and power each) and epoch
    /// length: the set of epochs 0 and 1. A chain without one (a single validator that signs
    /// no votes) has a single epoch and no set on the ledger.
    pub fn set_genesis_validators(&mut self, mut set: Vec<SetMember>, epoch_length: u64) -> Result<(), GenesisError> {
        if self.height != 0 || self.epoch_length.get(&()).is_some() {
            return Err(GenesisError::Validators("the set is given once, at genesis".into()));
        }
        if epoch_length < MIN_EPOCH_LENGTH {
            return Err(GenesisError::Validators(format!(
                "epoch length {epoch_length}: at least {MIN_EPOCH_LENGTH} blocks"
            )));
        }
        if set.is_empty() || set.len() > MAX_SET {
            return Err(GenesisError::Validators(format!(
                "{} validators: 1 to {MAX_SET}",
                set.len()
            )));
        }
        set.sort();
        for (i, m) in set.iter().enumerate() {
            if m.power == 0 {
                return Err(GenesisError::Validators(format!("{} has zero power", hex(&m.key))));
            }
            if i > 0 && set[i - 1].key == m.key {
                return Err(GenesisError::Validators(format!("{} is listed twice", hex(&m.key))));
            }
            if !pazar_types::keys::is_ed25519_public_key(&m.key) {
                return Err(GenesisError::Validators(format!(
                    "{} is not an ed25519 public key",
                    hex(&m.key)
                )));
            }
        }
        self.epoch_length.insert((), epoch_length);
        self.validator_sets.insert(0, set.clone());
        self.validator_sets.insert(1, set);
        self.commit();
        Ok(())
    }

    /// Blocks per epoch, or `None` for a chain with no validator set (one epoch).
    pub fn epoch_length(&self) -> Option<u64> {
        self.epoch_length.get(&()).copied()
    }

    /// The epoch holding `height`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        self.epoch_length().map_or(0, |l| height / l)
    }

    /// The last height of `epoch` (`None`: no such height, or a single epoch).
    pub fn last_height_of(&self, epoch: u64) -> Option<u64> {
        let l = self.epoch_length()?;
        epoch.checked_add(1)?.checked_mul(l)?.checked_sub(1)
    }

    /// The first height of `epoch` (`None`: no such height, or a single epoch past 0).
    pub fn first_height_of(&self, epoch: u64) -> Option<u64> {
        match epoch.checked_sub(1) {
            None => Some(0),
            Some(before) => self.last_height_of(before)?.checked_add(1),
        }
    }

    /// The validator set of `epoch`, in key order (consensus order: signer bitmaps and
    /// double-sign indices count in it), if fixed yet.
    pub fn validator_set(&self, epoch: u64) -> Option<&[SetMember]> {
        self.validator_sets.get(&epoch).map(Vec::as_slice)
    }

    /// The consensus keys of `epoch`'s set, in consensus order (empty: not fixed, or no set).
    pub fn validator_keys(&self, epoch: u64) -> Vec<ValidatorKey> {
        self.validator_set(epoch)
            .map(|s| s.iter().map(|m| m.key).collect())
            .unwrap_or_default()
    }

    /// Every fixed set, by epoch.
    pub fn validator_sets(&self) -> impl Iterator<Item = (u64, &[SetMember])> {
        self.validator_sets.iter().map(|(e, s)| (*e, s.as_slice()))
    }

    /// The changes voted on in the current epoch: `(key, power)` and who voted, in order.
    pub fn validator_votes(&self) -> impl Iterator<Item = (&(ValidatorKey, u64), &Vec<ValidatorKey>)> {
        self.validator_votes.iter()
    }

    pub(crate) fn exec_vote_validator(
        &mut self,
        ctx: &mut Ctx,
        key: ValidatorKey,
        power: u64,
    ) -> Result<(), ValidatorError> {
        if self.epoch_length().is_none() {
            return Err(ValidatorError::NoSet);
        }
        let epoch = self.epoch_of(ctx.height);
        let current = self.validator_set(epoch).ok_or(ValidatorError::NoSet)?;
        let voter = current
            .iter()
            .find(|m| Address::from_ed25519(&m.key) == ctx.sender)
            .map(|m| m.key)
            .ok_or(ValidatorError::NotValidator(ctx.sender))?;
        let needed = quorum(current.len());
        // The change is to the last set fixed, the next epoch's.
        let next = self.validator_set(epoch + 1).ok_or(ValidatorError::NoSet)?;
        let now = next.iter().find(|m| m.key == key).map_or(0, |m| m.power);
        if now == power {
            return Err(ValidatorError::NoChange { power });
        }
        let open = self.validator_votes.iter().filter(|(_, v)| v.contains(&voter)).count();
        if open >= MAX_OPEN_VOTES {
            return Err(ValidatorError::TooManyProposals(MAX_OPEN_VOTES));
        }
        let mut voters = self.validator_votes.get(&(key, power)).cloned().unwrap_or_default();
        match voters.binary_search(&voter) {
            Ok(_) => return Err(ValidatorError::AlreadyVoted),
            Err(at) => voters.insert(at, voter),
        }
        let votes = voters.len();
        self.validator_votes.insert((key, power), voters);
        ctx.events.push(Event::ValidatorVoted {
            voter,
            key,
            power,
            votes: votes as u32,
            needed: needed as u32,
        });
        Ok(())
    }

    /// At the end of the last block of an epoch `e`: fixes the set of epoch `e + 2` (the set of
    /// `e + 1` with the changes that passed in `e`) and ends `e`'s votes. Any other height:
    /// nothing.
    pub(crate) fn end_epoch(&mut self, events: &mut Vec<Event>) {
        let epoch = self.epoch_of(self.height);
        if self.last_height_of(epoch) != Some(self.height) {
            return;
        }
        let (Some(voting), Some(next)) = (self.validator_set(epoch), self.validator_set(epoch + 1)) else {
            return;
        };
        let needed = quorum(voting.len());
        let mut set = next.to_vec();
        let passed: Vec<(ValidatorKey, u64)> = self
            .validator_votes
            .iter()
            .filter(|(_, voters)| voters.len() >= needed)
            .map(|(change, _)| *change)
            .collect();
        // In (key, power) order; of two changes to one key that both passed, the later wins.
        for (key, power) in passed {
            let at = set.binary_search_by(|m| m.key.cmp(&key));
            match (at, power) {
                (Ok(i), 0) if set.len() > 1 => {
                    set.remove(i);
                }
                (Ok(i), p) if p > 0 => set[i].power = p,
                (Err(i), p) if p > 0 && set.len() < MAX_SET => set.insert(i, SetMember { key, power: p }),
                // Would empty the set, or grow it beyond its bound, or remove a non-member.
                _ => {}
            }
        }
        let keys: Vec<(ValidatorKey, u64)> = self.validator_votes.iter().map(|(k, _)| *k).collect();
        for k in keys {
            self.validator_votes.remove(&k);
        }
        let scheduled = epoch + 2;
        let first_height = self.first_height_of(scheduled).unwrap_or(u64::MAX);
        self.validator_sets.insert(scheduled, set.clone());
        events.push(Event::ValidatorSetScheduled {
            epoch: scheduled,
            first_height,
            validators: set,
        });
    }
}

fn hex(key: &ValidatorKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_is_simplexs_more_than_two_thirds() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(3), 3);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 4);
        assert_eq!(quorum(7), 5);
        assert_eq!(quorum(10), 7);
        for n in 1..200 {
            assert!(3 * quorum(n) > 2 * n, "{n}");
        }
    }
}
