//! Block space: a sender cannot queue transactions it cannot pay for. The mempool counts every
//! pending transaction's fee *and* the tokens its messages move out, per sender and
//! denomination, against the committed balance; a sender whose transfer empties its account
//! cannot follow it with a stream of fee-paying transactions that would fail in the block.

use serde_json::json;

use pazar_types::{Coin, Denom, KeyScheme, Msg, SigningKey, TxBody};

use crate::common;

fn upzr(n: u128) -> Coin {
    Coin::new(n, Denom::new("upzr").expect("valid denom"))
}

#[test]
fn a_sender_cannot_fill_the_mempool_with_transactions_its_balance_cannot_pay_together() {
    let net = common::devnet(300);
    let rpc = net.rpc();
    let chain = rpc.chain_id().expect("chain id");
    let spammer = SigningKey::generate(KeyScheme::Ed25519, &mut rand_core::OsRng);
    let fee = 10_000u128;
    let funds = 1_000_000u128;
    net.tx_ok(&[
        "tx",
        "send",
        &spammer.address().to_string(),
        &format!("{funds}upzr"),
        "--from",
        "bob",
    ]);
    let alice = net.address("alice");
    let sign = |sequence: u64, amount: u128| {
        let body = TxBody {
            chain_id: chain.clone(),
            sender: spammer.address(),
            sequence,
            fee: upzr(fee),
            msgs: vec![Msg::Send {
                to: alice.parse().expect("address"),
                amount: upzr(amount),
            }],
            memo: String::new(),
        };
        hex::encode(body.sign(&spammer).encode())
    };
    // First: a transfer of everything but one fee. Then 50 more, each with a fee of its own.
    let mut txs = vec![sign(0, funds - fee - 1)];
    txs.extend((1..=50).map(|s| sign(s, 1)));
    let out = rpc
        .post("/txs/batch", &json!({"txs": txs, "mode": "sync"}))
        .expect("the batch endpoint answers");
    let results = out["results"].as_array().expect("results");
    assert_eq!(results[0]["status"], "pending", "{}", results[0]);
    // The first is unpayable; the rest would follow it, so they would leave a gap: both refused.
    assert_eq!(results[1]["error"]["code"], "fee_unpayable", "{}", results[1]);
    for r in &results[1..] {
        assert_eq!(r["status"], "refused", "an unpayable transaction was admitted: {r}");
        let code = r["error"]["code"].as_str().unwrap_or("");
        assert!(code == "fee_unpayable" || code == "sequence_gap", "{r}");
    }
    // The transfer commits; the account keeps exactly the one base unit it did not send.
    let h = net.height();
    net.wait_height(h + 3);
    let v = rpc
        .get(&format!("/accounts/{}/balances/upzr", spammer.address()))
        .expect("balance");
    assert_eq!(common::amount(&v["amount"]), 1);
    assert_eq!(
        rpc.sequence(&spammer.address()).expect("sequence"),
        1,
        "only the transfer was executed"
    );
}
