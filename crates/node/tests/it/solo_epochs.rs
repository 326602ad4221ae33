//! A single validator whose ledger votes another validator in stops at the epoch where the set
//! holds two, with the reason, instead of finalizing alone for a set that needs both votes.

// This test writes its own genesis (a validator with a consensus key): it uses the shared keys only.
#[allow(dead_code)]
use crate::common;

use std::sync::Arc;
use std::time::Duration;

use pazar_node::consensus::{Application, Consensus, Solo, SystemClock};
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::{Node, NodeConfig};
use pazar_types::{Coin, Msg, TxBody};
use serde_json::json;

use common::{key, upzr, CHAIN};

#[test]
fn a_solo_validator_stops_where_the_voted_set_needs_another_validator() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let me = key(9);
    let other = key(8);
    let pk = |k: &pazar_types::SigningKey| hex::encode(k.public_key_bytes());
    let genesis = json!({
        "genesis_time_ms": 1,
        "chain_id": CHAIN,
        "params": pazar_ledger::Params::devnet("upzr", "uusd"),
        "balances": [{"address": me.address(), "coins": [{"denom": "upzr", "amount": "1000000000"}]}],
        "validators": [{"name": "v", "address": me.address(), "power": 1, "consensus_key": pk(&me)}],
        "epoch_length": 3,
    });
    let path = dir.path().join("genesis.json");
    std::fs::write(&path, serde_json::to_vec(&genesis).expect("JSON")).expect("genesis written");
    let genesis = GenesisOnDisk::open(&path).expect("genesis reads");
    let node = Node::open(&dir.path().join("db"), &genesis, me.address(), NodeConfig::default()).expect("node opens");
    // The one validator votes the other in (its vote alone is the quorum of one) before the
    // end of epoch 0, so the set of epoch 2 (from height 6) holds both.
    let vote = TxBody {
        chain_id: CHAIN.into(),
        sender: me.address(),
        sequence: 0,
        fee: Coin::new(1_000, upzr()),
        msgs: vec![Msg::VoteValidator {
            key: other.public_key_bytes().try_into().expect("an ed25519 key"),
            power: 1,
        }],
        memo: String::new(),
    }
    .sign(&me)
    .encode();
    node.submit(vote).expect("the vote is admitted");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let engine = Solo {
        block_time: Duration::from_millis(20),
        clock: Arc::new(SystemClock),
    };
    let app: Arc<dyn Application> = node.clone();
    let result = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), engine.run(app, shutdown)).await });
    let err = result
        .expect("the engine stops by itself")
        .expect_err("it stops with an error");
    assert!(err.to_string().contains("epoch 2"), "{err}");
    assert!(err.to_string().contains("2 validators"), "{err}");
    assert_eq!(
        node.parent().height,
        5,
        "every block of epochs 0 and 1, none of epoch 2"
    );
    assert_eq!(node.state().validator_keys(2).len(), 2);
}
