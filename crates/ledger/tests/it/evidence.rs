//! Evidence on the ledger: commit records count signed and missed commits per validator in
//! height order, double signing is recorded once per (validator, view), a refused record changes
//! nothing, and the same blocks give the same state everywhere (a reference model agrees).

use std::collections::BTreeMap;

use proptest::prelude::*;

use pazar_ledger::evidence::UNATTESTED_AFTER;
use pazar_ledger::{BlockHeader, EvidenceError, Genesis, Params, State, ValidatorKey, ValidatorRecord};
use pazar_types::block::{signer_bitmap, Attestation, Commit, DoubleSign, Evidence, FaultKind};
use pazar_types::records::SetMember;
use pazar_types::{KeyScheme, SigningKey};

const CHAIN: &str = "pazar-evidence-1";

/// A chain whose validator set is `vals` (one epoch covers every height here).
fn state(vals: &[ValidatorKey]) -> State {
    let mut st = State::from_genesis(&Genesis {
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances: vec![],
    })
    .expect("a valid genesis");
    let set = vals.iter().map(|k| SetMember { key: *k, power: 1 }).collect();
    st.set_genesis_validators(set, 1 << 40).expect("a valid set");
    st
}

/// `n` validators' consensus keys, in consensus (key) order.
fn validators(n: u8) -> Vec<ValidatorKey> {
    let mut keys: Vec<ValidatorKey> = (0..n)
        .map(|i| {
            let k = SigningKey::from_secret(KeyScheme::Ed25519, &[i + 1; 32]).expect("a secret");
            k.public_key_bytes().try_into().expect("an ed25519 key")
        })
        .collect();
    keys.sort_unstable();
    keys
}

fn certified(height: u64, n: usize, signers: &[usize]) -> Commit {
    Commit {
        height,
        attestation: Attestation::Certified {
            signers: signer_bitmap(n, signers.iter().copied()),
            certificate: vec![7; 16],
        },
    }
}

fn double_sign(validator: u32, view: u64) -> DoubleSign {
    DoubleSign {
        epoch: 0,
        validator,
        view,
        kind: FaultKind::ConflictingNotarize,
        proof: vec![1; 8],
    }
}

/// Runs an empty block at the next height with `evidence` after it, as a node commits one.
fn block(st: &mut State, evidence: &Evidence) -> Result<(), EvidenceError> {
    let height = st.height + 1;
    st.check_evidence(height, evidence)?;
    st.apply_block(
        &BlockHeader {
            chain_id: CHAIN.into(),
            height,
            time_ms: height,
        },
        &[],
    )
    .expect("an empty block applies");
    st.apply_evidence(height, evidence)
}

fn commits(c: Vec<Commit>) -> Evidence {
    Evidence {
        commits: c,
        double_signs: vec![],
    }
}

#[test]
fn commit_records_count_signed_and_missed_commits_per_validator_in_height_order() {
    let vals = validators(4);
    let mut st = state(&vals);
    block(&mut st, &Evidence::default()).expect("no evidence");
    assert_eq!(st.next_commit_height(), 1);
    block(&mut st, &commits(vec![certified(1, 4, &[0, 1, 2])])).expect("height 1");
    block(&mut st, &Evidence::default()).expect("no evidence");
    // Two heights in one block; validator 3 misses both, validator 0 misses the second.
    block(
        &mut st,
        &commits(vec![certified(2, 4, &[0, 1, 2]), certified(3, 4, &[1, 2, 3])]),
    )
    .expect("heights 2 and 3");
    assert_eq!(st.next_commit_height(), 4);
    let r = |i: usize| st.validator_record(&vals[i]).expect("recorded");
    assert_eq!(
        r(0),
        ValidatorRecord {
            signed: 2,
            missed: 1,
            last_missed: 3,
            double_signs: 0
        }
    );
    assert_eq!(r(1).signed, 3);
    assert_eq!(r(1).missed, 0);
    assert_eq!(
        r(3),
        ValidatorRecord {
            signed: 1,
            missed: 2,
            last_missed: 2,
            double_signs: 0
        }
    );
}

#[test]
fn commit_records_that_skip_repeat_or_reach_the_block_are_refused_and_change_nothing() {
    let vals = validators(4);
    let mut st = state(&vals);
    block(&mut st, &Evidence::default()).expect("empty");
    block(&mut st, &Evidence::default()).expect("empty");
    let before = st.state_hash();
    let height = st.height + 1; // block 3 may record heights 1 and 2
    let check = |st: &State, ev: Evidence| st.check_evidence(height, &ev);
    assert_eq!(
        check(&st, commits(vec![certified(2, 4, &[0, 1, 2])])),
        Err(EvidenceError::CommitHeight { expected: 1, got: 2 })
    );
    assert_eq!(
        check(
            &st,
            commits(vec![certified(1, 4, &[0, 1, 2]), certified(1, 4, &[0, 1, 2])])
        ),
        Err(EvidenceError::CommitHeight { expected: 2, got: 1 })
    );
    assert_eq!(
        check(
            &st,
            commits(vec![
                certified(1, 4, &[0]),
                certified(2, 4, &[0]),
                certified(3, 4, &[0])
            ])
        ),
        Err(EvidenceError::CommitAhead { commit: 3, block: 3 })
    );
    // A bitmap of another set's size, or naming a validator past the set.
    let wrong = Commit {
        height: 1,
        attestation: Attestation::Certified {
            signers: vec![0, 0],
            certificate: vec![],
        },
    };
    assert_eq!(check(&st, commits(vec![wrong])), Err(EvidenceError::Signers(1)));
    let past = Commit {
        height: 1,
        attestation: Attestation::Certified {
            signers: vec![0b1_0000],
            certificate: vec![],
        },
    };
    assert_eq!(check(&st, commits(vec![past])), Err(EvidenceError::Signers(1)));
    // Applying a refused record changes nothing.
    let mut refused = st.clone();
    let _ = refused.take_changes();
    assert!(refused
        .apply_evidence(height, &commits(vec![certified(2, 4, &[0])]))
        .is_err());
    assert_eq!(refused.state_hash(), before);
    assert!(refused.take_changes().iter().all(|c| c.key == [0]));
}

#[test]
fn a_height_may_go_unattested_only_once_honest_proposers_had_time_to_record_it() {
    let vals = validators(4);
    let mut st = state(&vals);
    for _ in 0..UNATTESTED_AFTER {
        block(&mut st, &Evidence::default()).expect("empty");
    }
    let unattested = || {
        commits(vec![Commit {
            height: 1,
            attestation: Attestation::Unattested,
        }])
    };
    // Block UNATTESTED_AFTER is too soon for height 1; the block after may.
    assert_eq!(
        st.check_evidence(UNATTESTED_AFTER, &unattested()),
        Err(EvidenceError::UnattestedTooSoon {
            commit: 1,
            block: UNATTESTED_AFTER
        })
    );
    block(&mut st, &unattested()).expect("old enough");
    assert_eq!(st.next_commit_height(), 2);
    // Nobody is counted for an unattested height.
    assert_eq!(st.validator_records().count(), 0);
}

#[test]
fn double_signing_is_recorded_once_per_validator_and_view() {
    let vals = validators(4);
    let mut st = state(&vals);
    let ev = Evidence {
        commits: vec![],
        double_signs: vec![double_sign(2, 9), double_sign(2, 10)],
    };
    block(&mut st, &ev).expect("recorded");
    let rec = st.double_sign(&vals[2], 0, 9).expect("recorded");
    assert_eq!(rec.kind, FaultKind::ConflictingNotarize);
    assert_eq!(rec.height, 1);
    assert_eq!(st.validator_record(&vals[2]).expect("recorded").double_signs, 2);
    // Again in a later block, twice in one block, or of a validator outside the set: refused.
    let again = Evidence {
        commits: vec![],
        double_signs: vec![double_sign(2, 9)],
    };
    assert_eq!(
        st.check_evidence(2, &again),
        Err(EvidenceError::DoubleSignRecorded {
            index: 2,
            epoch: 0,
            view: 9
        })
    );
    let twice = Evidence {
        commits: vec![],
        double_signs: vec![double_sign(1, 9), double_sign(1, 9)],
    };
    assert_eq!(
        st.check_evidence(2, &twice),
        Err(EvidenceError::DoubleSignRecorded {
            index: 1,
            epoch: 0,
            view: 9
        })
    );
    let outside = Evidence {
        commits: vec![],
        double_signs: vec![double_sign(4, 9)],
    };
    assert_eq!(
        st.check_evidence(2, &outside),
        Err(EvidenceError::UnknownValidator {
            index: 4,
            validators: 4
        })
    );
}

#[test]
fn evidence_tables_are_in_the_state_commitment_and_survive_a_restore() {
    let vals = validators(3);
    let mut st = state(&vals);
    let base = st.state_hash();
    let _ = st.take_changes();
    block(
        &mut st,
        &Evidence {
            commits: vec![],
            double_signs: vec![double_sign(0, 4)],
        },
    )
    .expect("recorded");
    block(&mut st, &commits(vec![certified(1, 3, &[1, 2])])).expect("recorded");
    assert_ne!(st.state_hash(), base);
    let changes = st.take_changes();
    // Three tables are written: records, double signs and the cursor (plus the metadata).
    let tables: std::collections::BTreeSet<u8> = changes.iter().map(|c| c.key[0]).collect();
    assert!(tables.is_superset(&[0, 19, 20, 21].into_iter().collect()));
    let restored = State::restore(
        st.dump()
            .iter()
            .filter_map(|c| Some((c.key.as_slice(), c.value.as_deref()?))),
    )
    .expect("restores");
    assert_eq!(restored.state_hash(), st.state_hash());
    assert_eq!(restored.next_commit_height(), 2);
    assert_eq!(restored.double_sign(&vals[0], 0, 4).map(|r| r.height), Some(1));
}

/// One block's evidence drawn at random: a few commit records from the next height (sometimes
/// off by one), a few double signings (sometimes repeated).
/// One block's draw: the offset of its first commit height, who signed each commit, and
/// (validator, view) of each double signing.
type BlockDraw = (i8, Vec<Vec<bool>>, Vec<(u32, u64)>);

fn evidence_strategy(n: usize) -> impl Strategy<Value = Vec<BlockDraw>> {
    let commit = proptest::collection::vec(any::<bool>(), n);
    let block = (
        prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)],
        proptest::collection::vec(commit, 0..4),
        proptest::collection::vec((0..n as u32 + 1, 0..6u64), 0..3),
    );
    proptest::collection::vec(block, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a plain model: a block's evidence is applied whole exactly when it is in order,
    /// new and within the set, and the counters equal the model's; two states fed the same
    /// blocks have the same hash.
    #[test]
    fn counters_match_a_reference_model_and_replays_agree(blocks in evidence_strategy(4)) {
        let vals = validators(4);
        let mut st = state(&vals);
        let mut twin = state(&vals);
        let mut model: BTreeMap<usize, ValidatorRecord> = BTreeMap::new();
        let mut recorded = std::collections::BTreeSet::new();
        let mut next = 1u64;
        for (offset, signed, doubles) in blocks {
            let height = st.height + 1;
            let first = next.saturating_add_signed(offset.into());
            let ev = Evidence {
                commits: signed
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let who: Vec<usize> = (0..4).filter(|&v| s[v]).collect();
                        certified(first + i as u64, 4, &who)
                    })
                    .collect(),
                double_signs: doubles.iter().map(|&(v, view)| double_sign(v, view)).collect(),
            };
            let mut in_block = std::collections::BTreeSet::new();
            let ok = (signed.is_empty() || (offset == 0 && first + signed.len() as u64 <= height))
                && doubles
                    .iter()
                    .all(|&(v, view)| v < 4 && !recorded.contains(&(v, view)) && in_block.insert((v, view)));
            let r = block(&mut st, &ev);
            prop_assert_eq!(r.is_ok(), ok, "{:?}", r);
            let _ = block(&mut twin, &ev);
            if ok {
                for (i, s) in signed.iter().enumerate() {
                    for (v, &signed_it) in s.iter().enumerate() {
                        let m = model.entry(v).or_default();
                        if signed_it {
                            m.signed += 1;
                        } else {
                            m.missed += 1;
                            m.last_missed = first + i as u64;
                        }
                    }
                }
                next += signed.len() as u64;
                for &(v, view) in &doubles {
                    recorded.insert((v, view));
                    model.entry(v as usize).or_default().double_signs += 1;
                }
            }
            prop_assert_eq!(st.next_commit_height(), next);
            for (v, key) in vals.iter().enumerate() {
                prop_assert_eq!(st.validator_record(key), model.get(&v).copied());
            }
            prop_assert_eq!(st.state_hash(), twin.state_hash());
        }
    }
}
