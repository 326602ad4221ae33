//! What the node's integration tests share: a node on a genesis of its own that funds the given
//! keys, and signed transfers on that chain.

use std::path::Path;
use std::sync::Arc;

use pazar_node::genesis::GenesisOnDisk;
use pazar_node::{Node, NodeConfig};
use pazar_types::{Address, Coin, Denom, KeyScheme, Msg, SigningKey, TxBody};
use serde_json::json;

/// Chain id of the tests' genesis.
pub const CHAIN: &str = "node-test";

/// The ed25519 key whose secret is `seed` repeated.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[seed; 32]).expect("a valid secret")
}

/// The chain's native denomination.
pub fn upzr() -> Denom {
    Denom::new("upzr").expect("valid")
}

/// Writes a genesis funding each of `funded` with 1,000,000,000 upzr into `dir` and opens a node
/// on it (its store in `dir/db`).
pub fn node(dir: &Path, funded: &[&SigningKey]) -> Arc<Node> {
    let balances: Vec<_> = funded
        .iter()
        .map(|k| json!({"address": k.address(), "coins": [{"denom": "upzr", "amount": "1000000000"}]}))
        .collect();
    let genesis = json!({
        "genesis_time_ms": 1,
        "chain_id": CHAIN,
        "params": pazar_ledger::Params::devnet("upzr", "uusd"),
        "balances": balances,
        "validators": [{"name": "v", "address": Address::module("v"), "power": 1}],
    });
    let path = dir.join("genesis.json");
    std::fs::write(&path, serde_json::to_vec(&genesis).expect("JSON")).expect("genesis written");
    let genesis = GenesisOnDisk::open(&path).expect("genesis reads");
    Node::open(&dir.join("db"), &genesis, Address::module("v"), NodeConfig::default()).expect("node opens")
}

/// `amount` upzr from `from` (at `sequence`) to a fixed address, signed and encoded.
pub fn send(from: &SigningKey, sequence: u64, amount: u128) -> Vec<u8> {
    TxBody {
        chain_id: CHAIN.into(),
        sender: from.address(),
        sequence,
        fee: Coin::new(1_000, upzr()),
        msgs: vec![Msg::Send {
            to: Address::Native([7; 20]),
            amount: Coin::new(amount, upzr()),
        }],
        memo: String::new(),
    }
    .sign(from)
    .encode()
}
