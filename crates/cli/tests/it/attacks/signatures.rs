//! Signatures: on every path into the real devnet (single submit, batch submit, and the block
//! built from the mempool), a transaction runs only if its signature verifies *and* the signing
//! key is the sender's. The attack that broke the batch path: one correctly signed transaction
//! of the attacker's plus one whose `sender` is someone else (a user, a module account) signed
//! with the attacker's own key, in one `POST /txs/batch`.

use std::time::Duration;

use serde_json::json;

use pazar_client::keyring::Keyring;
use pazar_types::{Address, Coin, Denom, KeyScheme, Msg, SigningKey, TxBody};

use crate::common;

fn signer(net: &common::Devnet, name: &str) -> SigningKey {
    Keyring::new(net.home.path())
        .signer(name, &|_, _| None)
        .expect("devnet key")
}

fn upzr(n: u128) -> Coin {
    Coin::new(n, Denom::new("upzr").expect("valid denom"))
}

fn balance(net: &common::Devnet, a: &Address) -> u128 {
    let v = net.rpc().get(&format!("/accounts/{a}/balances/upzr")).expect("balance");
    common::amount(&v["amount"])
}

/// A transfer of `amount` from `sender` to `to`, signed by `key` (which may not be the sender's).
fn send(chain: &str, key: &SigningKey, sender: Address, sequence: u64, to: Address, amount: u128) -> String {
    let body = TxBody {
        chain_id: chain.into(),
        sender,
        sequence,
        fee: upzr(10_000),
        msgs: vec![Msg::Send {
            to,
            amount: upzr(amount),
        }],
        memo: String::new(),
    };
    hex::encode(body.sign(key).encode())
}

#[test]
fn a_transaction_whose_sender_is_not_the_signer_is_refused_on_every_submission_path() {
    let net = common::devnet(100);
    let rpc = net.rpc();
    let chain = rpc.chain_id().expect("chain id");
    let bob = signer(&net, "bob");
    let alice = signer(&net, "alice");
    let eth = SigningKey::generate(KeyScheme::Eth, &mut rand_core::OsRng);
    let fee_pool = Address::module("fee_pool");
    let victims = [alice.address(), fee_pool];
    let before: Vec<u128> = victims.iter().map(|v| balance(&net, v)).collect();
    let bob_seq = rpc.sequence(&bob.address()).expect("sequence");

    // Batch: bob's honest transfer, then forgeries whose senders are alice and a module
    // account, signed by bob's ed25519 key and by an Ethereum key.
    let batch = vec![
        send(&chain, &bob, bob.address(), bob_seq, alice.address(), 1),
        send(&chain, &bob, alice.address(), 0, bob.address(), before[0] / 2),
        send(&chain, &bob, fee_pool, 0, bob.address(), 1),
        send(&chain, &eth, alice.address(), 0, eth.address(), 1_000),
    ];
    let out = rpc
        .post("/txs/batch", &json!({"txs": batch, "mode": "commit"}))
        .expect("the batch endpoint answers");
    let results = out["results"].as_array().expect("results");
    assert_eq!(results[0]["status"], "committed", "{out}");
    for r in &results[1..] {
        assert_eq!(r["status"], "refused", "a forgery was admitted: {out}");
        assert_eq!(r["error"]["code"], "signature", "{out}");
        let msg = r["error"]["message"].as_str().expect("message");
        assert!(msg.contains("not the sender's"), "unclear reason: {msg}");
    }

    // Single submission: the same forgery alone.
    let single = send(&chain, &bob, alice.address(), 0, bob.address(), 5);
    let err = rpc
        .post("/txs", &json!({"tx": single, "mode": "commit"}))
        .expect_err("a forged single submission is refused");
    assert_eq!(err.code(), Some(pazar_api::ErrorCode::Signature), "{err}");

    // A few more blocks: nothing forged ever reaches a block.
    let h = net.height();
    net.wait_height(h + 3);
    std::thread::sleep(Duration::from_millis(50));
    let after: Vec<u128> = victims.iter().map(|v| balance(&net, v)).collect();
    assert_eq!(
        after[0],
        before[0] + 1,
        "alice received bob's honest 1 upzr and lost nothing"
    );
    assert!(after[1] >= before[1], "the fee pool only grows");
    assert_eq!(
        rpc.sequence(&alice.address()).expect("sequence"),
        0,
        "alice's sequence was never used"
    );
    for forged in batch[1..].iter().chain([&single]) {
        let bytes = hex::decode(forged).expect("hex");
        let hash = pazar_client::hash_hex(&bytes);
        let err = rpc
            .get(&format!("/txs/{hash}"))
            .expect_err("a forged transaction is in no block");
        assert_eq!(err.code(), Some(pazar_api::ErrorCode::NotFound), "{err}");
    }
}
