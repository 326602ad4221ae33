//! Proofs at past versions (`Store::prove_at`): what a validator records a validator-set
//! hand-off with, a proof against the root a block of the epoch carries, while that version is
//! kept; a version pruned or not yet committed is an error, never a proof against another root.

use pazar_api::proof::verify_proof;
use pazar_ledger::state::{store_key, table_id};
use pazar_ledger::{BlockHeader, BlockOutcome, Genesis, GenesisBalance, Params, State};
use pazar_store::{Store, StoreError, StoreOptions};
use pazar_types::block::txs_root;
use pazar_types::{Address, Block, Coin, Denom, Header, KeyScheme, Msg, SigningKey, TxBody};

const CHAIN: &str = "store-test";

fn upzr() -> Denom {
    Denom::new("upzr").expect("valid")
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[n; 32]).expect("valid secret")
}

fn genesis(keys: &[SigningKey]) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances: keys
            .iter()
            .map(|k| GenesisBalance {
                address: k.address(),
                coins: vec![Coin::new(1_000_000_000, upzr())],
            })
            .collect(),
    }
}

/// Runs `blocks` blocks of sends between `keys` on `state`, committing each to `store`.
fn run_blocks(store: &Store, state: &mut State, keys: &[SigningKey], blocks: u64) {
    for _ in 0..blocks {
        let (block, outcome) = next_block(store, state, keys);
        store
            .commit_block(&block, &outcome, state.take_changes())
            .expect("commits");
    }
}

/// Builds and applies (in memory only) the next block of sends.
fn next_block(store: &Store, state: &mut State, keys: &[SigningKey]) -> (Block, BlockOutcome) {
    {
        let height = state.height + 1;
        let head = store.head().expect("head").expect("initialised");
        let txs: Vec<Vec<u8>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let to = Address::Native([(height as u8).wrapping_add(i as u8); 20]);
                TxBody {
                    chain_id: CHAIN.into(),
                    sender: k.address(),
                    sequence: state.account(&k.address()).sequence,
                    fee: Coin::new(100, upzr()),
                    msgs: vec![Msg::Send {
                        to,
                        amount: Coin::new(1 + height as u128, upzr()),
                    }],
                    memo: String::new(),
                }
                .sign(k)
                .encode()
            })
            .collect();
        let header = Header {
            chain_id: CHAIN.into(),
            height,
            time_ms: height * 1000,
            parent: head.block_hash,
            state_root: head.state_root,
            txs_root: txs_root(&txs),
            proposer: keys[0].address(),
        };
        let lh = BlockHeader {
            chain_id: CHAIN.into(),
            height,
            time_ms: header.time_ms,
        };
        let outcome = state.apply_block(&lh, &txs).expect("applies");
        assert!(outcome.receipts.iter().all(|r| r.is_ok()), "{:?}", outcome.receipts);
        (
            Block {
                header,
                txs,
                evidence: Default::default(),
            },
            outcome,
        )
    }
}

fn setup(opts: StoreOptions) -> (tempfile::TempDir, Store, State, Vec<SigningKey>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db"), opts).expect("opens");
    let keys: Vec<SigningKey> = (1..=4).map(key).collect();
    let mut state = State::from_genesis(&genesis(&keys)).expect("genesis");
    store.init_genesis(&mut state, [9; 32]).expect("init");
    (dir, store, state, keys)
}

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
