//! Admission of a batch (a client's `POST /txs/batch`, a peer's gossip): every check of a single
//! submission applies to each transaction, in input order, and each sees those before it in
//! the same batch.

use crate::common;

use common::{key, node, send};
use pazar_node::consensus::Application;
use pazar_node::mempool::MempoolError;
use pazar_node::SubmitError;
use pazar_types::{tx_hash, Coin, Hash32, Msg, TxBody};

/// A transfer of 5 upzr.
fn send5(from: &pazar_types::SigningKey, sequence: u64) -> Vec<u8> {
    send(from, sequence, 5)
}

fn hashes(txs: &[Vec<u8>]) -> Vec<Hash32> {
    txs.iter().map(|t| tx_hash(t)).collect()
}

#[test]
fn a_batch_is_judged_in_order_and_each_transaction_sees_the_ones_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, bob) = (key(1), key(2));
    let n = node(dir.path(), &[&alice, &bob]);
    // Bob's sequence 1 signed by Alice: the key is not the sender's.
    let forged = TxBody {
        chain_id: common::CHAIN.into(),
        sender: bob.address(),
        sequence: 1,
        fee: Coin::new(1_000, common::upzr()),
        msgs: vec![Msg::Send {
            to: alice.address(),
            amount: Coin::new(1, common::upzr()),
        }],
        memo: String::new(),
    }
    .sign(&alice)
    .encode();
    let batch = vec![
        send5(&alice, 0),
        // Follows sequence 0 of the same batch.
        send5(&alice, 1),
        // The same bytes again.
        send5(&alice, 1),
        // Sequence 2 is missing: a gap.
        send5(&alice, 3),
        send5(&bob, 0),
        forged,
        // Payable alone (999,999,500 of 1,000,000,000), not after Bob's pending 1,005.
        send(&bob, 1, 999_998_500),
        b"junk".to_vec(),
        send5(&alice, 2),
    ];
    let want = hashes(&batch);
    let out = n.submit_batch(batch);
    assert_eq!(out.len(), 9);
    for i in [0, 1, 4, 8] {
        assert_eq!(out[i], Ok(want[i]), "transaction {i}");
    }
    assert_eq!(out[2], Err(SubmitError::Mempool(MempoolError::Duplicate)));
    assert_eq!(
        out[3],
        Err(SubmitError::Mempool(MempoolError::SequenceGap { expected: 2, got: 3 }))
    );
    assert!(matches!(out[5], Err(SubmitError::Signature(_))), "{:?}", out[5]);
    assert!(
        matches!(out[6], Err(SubmitError::Mempool(MempoolError::FeeUnpayable { .. }))),
        "{:?}",
        out[6]
    );
    assert!(matches!(out[7], Err(SubmitError::Decode(_))), "{:?}", out[7]);
    assert_eq!(n.mempool_len().0, 4);
}

#[test]
fn a_transaction_committed_meanwhile_is_refused_in_a_batch_from_a_peer_or_a_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = key(1);
    let n = node(dir.path(), &[&alice]);
    let first = send5(&alice, 0);
    n.submit(first.clone()).expect("admitted");
    let block = n.propose(&[], 10).expect("proposes");
    assert_eq!(block.txs, vec![first.clone()]);
    n.finalized(block).expect("commits");

    let next = send5(&alice, 1);
    let from_peer = n.submit_from_peer(vec![first.clone(), next.clone()]);
    assert_eq!(from_peer, vec![Err(SubmitError::Committed(1)), Ok(tx_hash(&next))]);
    let from_client = n.submit_batch(vec![first, next]);
    assert_eq!(from_client[0], Err(SubmitError::Committed(1)));
    assert_eq!(from_client[1], Err(SubmitError::Mempool(MempoolError::Duplicate)));
}
