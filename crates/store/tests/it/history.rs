//! Proofs at past versions (`Store::prove_at`): what a validator records a validator-set
//! hand-off with, a proof against the root a block of the epoch carries, while that version is
//! kept; a version pruned or not yet committed is an error, never a proof against another root.

use pazar_api::proof::verify_proof;
use pazar_ledger::state::{store_key, table_id};
use pazar_store::{StoreError, StoreOptions};
use pazar_types::Address;

use crate::common;

use common::*;

#[test]
fn a_proof_at_a_past_version_verifies_against_that_versions_root_not_the_heads() {
    let (_dir, store, mut state, keys) = setup(StoreOptions { keep_versions: Some(4) });
    let k = store_key(table_id::BALANCES, &(keys[1].address(), upzr()));
    run_blocks(&store, &mut state, &keys, 3);
    let at3 = store.prove(&k).expect("proves").value;
    run_blocks(&store, &mut state, &keys, 2);
    let p = store.prove_at(&k, 3).expect("version 3 is kept");
    assert_eq!((p.height, p.root), (3, store.root_at(3).expect("root of 3")));
    assert_eq!(p.value, at3, "the value as it was at version 3");
    verify_proof(&p.root, &k, p.value.as_deref(), &p.proof).expect("verifies under the root of 3");
    let head = store.head().expect("head").expect("initialised");
    assert_ne!(
        p.value,
        store.prove(&k).expect("proves").value,
        "the balance changed since"
    );
    assert!(verify_proof(&head.state_root, &k, p.value.as_deref(), &p.proof).is_err());
    // The header of block 4 carries the root of version 3.
    assert_eq!(
        store.block(4).expect("reads").expect("kept").block.header.state_root,
        p.root
    );
}

#[test]
fn a_proof_at_a_pruned_or_future_version_is_refused() {
    let (_dir, store, mut state, keys) = setup(StoreOptions { keep_versions: Some(2) });
    run_blocks(&store, &mut state, &keys, 6);
    let k = store_key(table_id::BALANCES, &(keys[0].address(), upzr()));
    assert!(store.prove_at(&k, 5).is_ok());
    assert!(store.prove_at(&k, 6).is_ok());
    assert!(matches!(store.prove_at(&k, 4), Err(StoreError::Pruned(4))));
    assert!(matches!(store.prove_at(&k, 7), Err(StoreError::Pruned(7))));
    // The oldest provable version is the first one kept, for whoever scans versions.
    assert_eq!(store.oldest_provable().expect("the head"), 5);
}

#[test]
fn an_archive_proves_every_version_from_genesis() {
    let (_dir, store, mut state, keys) = setup(StoreOptions { keep_versions: None });
    run_blocks(&store, &mut state, &keys, 3);
    assert_eq!(store.oldest_provable().expect("the head"), 0);
    let k = store_key(table_id::BALANCES, &(keys[0].address(), upzr()));
    assert!(store.prove_at(&k, 0).is_ok());
}

#[test]
fn a_state_entry_reads_alone_as_the_state_holds_it() {
    let (_dir, store, mut state, keys) = setup(StoreOptions::default());
    run_blocks(&store, &mut state, &keys, 2);
    let k = store_key(table_id::BALANCES, &(keys[2].address(), upzr()));
    assert_eq!(
        store.state_value(&k).expect("reads"),
        store.prove(&k).expect("proves").value
    );
    let missing = store_key(table_id::BALANCES, &(Address::Native([0xee; 20]), upzr()));
    assert_eq!(store.state_value(&missing).expect("reads"), None);
}
