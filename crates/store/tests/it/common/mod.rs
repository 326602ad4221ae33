//! The store tests' chain: a genesis of funded accounts and blocks of transfers among them,
//! committed to a store.
#![allow(dead_code)]

use pazar_ledger::{BlockHeader, BlockOutcome, Genesis, GenesisBalance, Params, State};
use pazar_store::{Store, StoreOptions};
use pazar_types::block::txs_root;
use pazar_types::{Address, Block, Coin, Denom, Header, KeyScheme, Msg, SigningKey, TxBody};

pub const CHAIN: &str = "store-test";

pub fn upzr() -> Denom {
    Denom::new("upzr").expect("valid")
}

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[n; 32]).expect("valid secret")
}

pub fn genesis(keys: &[SigningKey]) -> Genesis {
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
pub fn run_blocks(store: &Store, state: &mut State, keys: &[SigningKey], blocks: u64) {
    for _ in 0..blocks {
        let (block, outcome) = next_block(store, state, keys);
        store
            .commit_block(&block, &outcome, state.take_changes())
            .expect("commits");
    }
}

/// Builds and applies (in memory only) the next block of sends.
pub fn next_block(store: &Store, state: &mut State, keys: &[SigningKey]) -> (Block, BlockOutcome) {
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

pub fn setup(opts: StoreOptions) -> (tempfile::TempDir, Store, State, Vec<SigningKey>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db"), opts).expect("opens");
    let keys: Vec<SigningKey> = (1..=4).map(key).collect();
    let mut state = State::from_genesis(&genesis(&keys)).expect("genesis");
    store.init_genesis(&mut state, [9; 32]).expect("init");
    (dir, store, state, keys)
}
