//! The validator set by epoch: genesis fixes epochs 0 and 1; a change that more than two
//! thirds of an epoch's validators vote for within the epoch fixes the set of the epoch after
//! next at the epoch's last block; everyone else's votes, and changes that would empty the set,
//! change nothing; the sets are part of the state commitment.

use pazar_ledger::{BlockHeader, Genesis, GenesisBalance, Params, State};
use pazar_types::records::{Receipt, SetMember};
use pazar_types::{Coin, Denom, Event, KeyScheme, Msg, SigningKey, TxBody};

const CHAIN: &str = "pazar-validators-1";
const EPOCH: u64 = 5;

fn key(n: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[n; 32]).expect("a secret")
}

fn pk(k: &SigningKey) -> [u8; 32] {
    k.public_key_bytes().try_into().expect("an ed25519 key")
}

fn upzr() -> Denom {
    Denom::new("upzr").expect("a denomination")
}

/// A chain of validators 1 to 4 (their accounts funded, and those of 5 and 6).
fn chain() -> State {
    let mut st = State::from_genesis(&Genesis {
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances: (1..=6)
            .map(|n| GenesisBalance {
                address: key(n).address(),
                coins: vec![Coin::new(1_000_000, upzr())],
            })
            .collect(),
    })
    .expect("a valid genesis");
    let set = (1..=4)
        .map(|n| SetMember {
            key: pk(&key(n)),
            power: 10,
        })
        .collect();
    st.set_genesis_validators(set, EPOCH).expect("a valid set");
    st
}

fn keys(st: &State, epoch: u64) -> Vec<[u8; 32]> {
    st.validator_keys(epoch)
}

fn sorted(ns: &[u8]) -> Vec<[u8; 32]> {
    let mut v: Vec<[u8; 32]> = ns.iter().map(|n| pk(&key(*n))).collect();
    v.sort_unstable();
    v
}

/// Runs one block holding `voter`'s votes for `(key, power)` each; returns the receipts and the
/// end-of-block events.
fn block(st: &mut State, votes: &[(u8, [u8; 32], u64)]) -> (Vec<Receipt>, Vec<Event>) {
    let mut sent = std::collections::BTreeMap::<u8, u64>::new();
    let txs: Vec<Vec<u8>> = votes
        .iter()
        .map(|(voter, target, power)| {
            let k = key(*voter);
            let n = sent.entry(*voter).or_default();
            *n += 1;
            TxBody {
                chain_id: CHAIN.into(),
                sender: k.address(),
                sequence: st.account(&k.address()).sequence + *n - 1,
                fee: Coin::new(100, upzr()),
                msgs: vec![Msg::VoteValidator {
                    key: *target,
                    power: *power,
                }],
                memo: String::new(),
            }
            .sign(&k)
            .encode()
        })
        .collect();
    let height = st.height + 1;
    let out = st
        .apply_block(
            &BlockHeader {
                chain_id: CHAIN.into(),
                height,
                time_ms: height,
            },
            &txs,
        )
        .expect("a block at the next height");
    (out.receipts, out.end_block_events)
}

/// Empty blocks up to and including `height`.
fn run_to(st: &mut State, height: u64) {
    while st.height < height {
        block(st, &[]);
    }
}

#[test]
fn genesis_fixes_the_first_two_epochs_and_heights_map_to_epochs() {
    let st = chain();
    assert_eq!(st.epoch_length(), Some(EPOCH));
    assert_eq!(keys(&st, 0), sorted(&[1, 2, 3, 4]));
    assert_eq!(keys(&st, 1), keys(&st, 0));
    assert!(st.validator_set(2).is_none());
    assert_eq!((st.epoch_of(0), st.epoch_of(4), st.epoch_of(5)), (0, 0, 1));
    assert_eq!(st.last_height_of(0), Some(4));
    assert_eq!(st.validator_set(0).expect("set")[0].power, 10);
}

#[test]
fn a_change_voted_by_a_quorum_in_an_epoch_fixes_the_set_of_the_epoch_after_next() {
    let mut st = chain();
    let five = pk(&key(5));
    // Three of four is simplex's quorum of four.
    let (receipts, _) = block(&mut st, &[(1, five, 7), (2, five, 7)]);
    assert!(receipts.iter().all(|r| r.is_ok()), "{receipts:?}");
    run_to(&mut st, 3);
    let (receipts, _) = block(&mut st, &[(3, five, 7)]);
    assert!(receipts[0].is_ok(), "{:?}", receipts[0]);
    assert_eq!(st.height, EPOCH - 1, "the epoch's last block");
    assert_eq!(keys(&st, 2), sorted(&[1, 2, 3, 4, 5]));
    assert_eq!(
        keys(&st, 1),
        sorted(&[1, 2, 3, 4]),
        "the next epoch's set was fixed before"
    );
    let five_power = st
        .validator_set(2)
        .expect("set")
        .iter()
        .find(|m| m.key == five)
        .map(|m| m.power);
    assert_eq!(five_power, Some(7));
    assert_eq!(st.validator_votes().count(), 0, "the epoch's votes end with it");
}

#[test]
fn a_change_short_of_a_quorum_lapses_with_its_epoch() {
    let mut st = chain();
    let five = pk(&key(5));
    block(&mut st, &[(1, five, 1), (2, five, 1)]);
    run_to(&mut st, EPOCH - 1);
    assert_eq!(keys(&st, 2), sorted(&[1, 2, 3, 4]));
    // The third vote in the next epoch counts alone.
    block(&mut st, &[(3, five, 1)]);
    run_to(&mut st, 2 * EPOCH - 1);
    assert_eq!(keys(&st, 3), sorted(&[1, 2, 3, 4]));
}

#[test]
fn only_the_epochs_validators_vote_once_each_on_a_real_change() {
    let mut st = chain();
    let five = pk(&key(5));
    let one = pk(&key(1));
    let (r, _) = block(&mut st, &[(5, five, 1)]);
    assert_eq!((r[0].codespace.as_str(), r[0].code), ("validators", 2), "{}", r[0].log);
    let (r, _) = block(&mut st, &[(1, five, 1), (1, five, 1)]);
    assert!(r[0].is_ok());
    assert_eq!((r[1].codespace.as_str(), r[1].code), ("validators", 4), "{}", r[1].log);
    let (r, _) = block(&mut st, &[(2, one, 10)]);
    assert_eq!((r[0].codespace.as_str(), r[0].code), ("validators", 3), "{}", r[0].log);
    let (r, _) = block(&mut st, &[(2, five, 0)]);
    assert_eq!(
        (r[0].codespace.as_str(), r[0].code),
        ("validators", 3),
        "removing a non-member"
    );
}

#[test]
fn one_validator_cannot_crowd_out_the_others_changes() {
    let mut st = chain();
    let one = pk(&key(1));
    // Validator 1 opens as many junk changes as it may, then one more.
    let junk: Vec<(u8, [u8; 32], u64)> = (1..=9u64).map(|p| (1u8, pk(&key(6)), p)).collect();
    let (r, _) = block(&mut st, &junk);
    assert!(r[..8].iter().all(|r| r.is_ok()));
    assert_eq!((r[8].codespace.as_str(), r[8].code), ("validators", 5), "{}", r[8].log);
    // The others still vote it out.
    let (r, _) = block(&mut st, &[(2, one, 0), (3, one, 0), (4, one, 0)]);
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    run_to(&mut st, EPOCH - 1);
    assert_eq!(keys(&st, 2), sorted(&[2, 3, 4]));
}

#[test]
fn removals_apply_but_never_empty_the_set() {
    let mut st = chain();
    let targets: Vec<[u8; 32]> = (1..=4).map(|n| pk(&key(n))).collect();
    let votes: Vec<(u8, [u8; 32], u64)> = (1..=3u8)
        .flat_map(|voter| targets.iter().map(move |t| (voter, *t, 0)))
        .collect();
    let (r, _) = block(&mut st, &votes);
    assert!(r.iter().all(|r| r.is_ok()));
    run_to(&mut st, EPOCH - 1);
    let left = keys(&st, 2);
    assert_eq!(left.len(), 1, "three removals passed, the last would empty the set");
    assert_eq!(left, vec![*sorted(&[1, 2, 3, 4]).last().expect("four")]);
}

#[test]
fn a_chain_without_a_set_refuses_votes_and_sets_are_in_the_state_commitment() {
    let mut bare = State::from_genesis(&Genesis {
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances: vec![GenesisBalance {
            address: key(1).address(),
            coins: vec![Coin::new(1_000_000, upzr())],
        }],
    })
    .expect("a valid genesis");
    let (r, _) = block(&mut bare, &[(1, pk(&key(5)), 1)]);
    assert_eq!((r[0].codespace.as_str(), r[0].code), ("validators", 1), "{}", r[0].log);

    let mut a = chain();
    let mut b = chain();
    block(&mut a, &[(1, pk(&key(5)), 1)]);
    block(&mut b, &[(1, pk(&key(6)), 1)]);
    assert_ne!(a.state_hash(), b.state_hash(), "votes are state");
    let restored = State::restore(
        a.dump()
            .iter()
            .filter_map(|c| Some((c.key.as_slice(), c.value.as_deref()?))),
    )
    .expect("restores");
    assert_eq!(restored.state_hash(), a.state_hash());
    assert_eq!(restored.validator_keys(1), keys(&a, 1));
    assert_eq!(restored.epoch_length(), Some(EPOCH));
}

#[test]
fn genesis_sets_are_checked() {
    let st = || chain_without_set();
    let m = |n: u8, power| SetMember {
        key: pk(&key(n)),
        power,
    };
    assert!(st().set_genesis_validators(vec![], 10).is_err(), "empty");
    assert!(
        st().set_genesis_validators(vec![m(1, 1)], 1).is_err(),
        "epoch of one block"
    );
    assert!(st().set_genesis_validators(vec![m(1, 0)], 10).is_err(), "zero power");
    assert!(
        st().set_genesis_validators(vec![m(1, 1), m(1, 2)], 10).is_err(),
        "twice"
    );
    // y = 2 has no x on the curve.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let bad = vec![SetMember {
        key: not_a_point,
        power: 1,
    }];
    assert!(st().set_genesis_validators(bad, 10).is_err(), "not a point");
    let mut once = st();
    once.set_genesis_validators(vec![m(1, 1)], 10).expect("valid");
    assert!(once.set_genesis_validators(vec![m(2, 1)], 10).is_err(), "only once");
}

fn chain_without_set() -> State {
    State::from_genesis(&Genesis {
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances: vec![],
    })
    .expect("a valid genesis")
}

#[test]
fn a_sets_hash_names_the_bytes_its_state_entry_holds() {
    let mut st = chain();
    let key0 = pazar_types::state_key::store_key(pazar_types::state_key::table_id::VALIDATOR_SETS, &0u64);
    let stored = st
        .take_changes()
        .into_iter()
        .find(|c| c.key == key0)
        .and_then(|c| c.value)
        .expect("the genesis writes the set of epoch 0");
    let set = st.validator_set(0).expect("a set").to_vec();
    assert_eq!(pazar_ledger::validators::decode_set(&stored).as_deref(), Some(&set[..]));
    assert_eq!(
        pazar_ledger::validators::set_hash(&stored),
        pazar_ledger::validators::set_hash_of(&set)
    );
    // Another set has another name.
    let mut other = set.clone();
    other[0].power += 1;
    assert_ne!(
        pazar_ledger::validators::set_hash_of(&other),
        pazar_ledger::validators::set_hash_of(&set)
    );
}
