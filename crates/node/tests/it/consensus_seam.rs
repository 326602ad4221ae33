//! The application side of consensus against a real store: proposals and verification on blocks
//! that are not final yet (as simplex builds on a notarized parent), the state root such a
//! block commits to computed without committing, nothing a proposer says taken on trust, and
//! finalized blocks delivered more than once applied once.

use crate::common;

use common::{key, node, send, upzr, CHAIN};
use pazar_node::consensus::{Application, VerifyError};
use pazar_node::NodeError;
use pazar_types::block::txs_root;
use pazar_types::{Block, Coin, Msg, SigningKey, TxBody};

/// A transfer of most of `victim`'s funds to `thief` in `victim`'s name, signed by `thief`:
/// what no mempool admits.
fn forged_send(victim: &SigningKey, thief: &SigningKey, sequence: u64) -> pazar_types::Tx {
    let mut tx = TxBody {
        chain_id: CHAIN.into(),
        sender: victim.address(),
        sequence,
        fee: Coin::new(1_000, upzr()),
        msgs: vec![Msg::Send {
            to: thief.address(),
            amount: Coin::new(900_000_000, upzr()),
        }],
        memo: String::new(),
    }
    .sign(thief);
    tx.body.sender = victim.address();
    tx
}

#[test]
fn a_block_on_a_parent_not_yet_final_carries_the_root_the_parent_commits_and_repeats_none_of_its_txs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = key(1);
    let n = node(dir.path(), &[&alice]);
    n.submit(send(&alice, 0, 5)).expect("admitted");
    n.submit(send(&alice, 1, 6)).expect("admitted");

    let a = n.propose(&[], 10).expect("proposes on the finalized head");
    assert_eq!(a.txs.len(), 2);
    n.verify(&[], &a).expect("its own proposal verifies");
    n.submit(send(&alice, 2, 7)).expect("admitted");
    // B builds on A before A is final: it holds only what A does not, and A's state root.
    let b = n
        .propose(std::slice::from_ref(&a), 20)
        .expect("proposes on a pending parent");
    assert_eq!(b.header.height, 2);
    assert_eq!(b.header.parent, a.header.hash());
    assert_eq!(b.txs, vec![send(&alice, 2, 7)]);
    n.verify(std::slice::from_ref(&a), &b)
        .expect("verifies on the pending parent");
    assert_eq!(n.parent().height, 0, "nothing was committed by proposing or verifying");

    // Once A is final, B's root is the one A committed.
    n.finalized(a.clone()).expect("A commits");
    assert_eq!(n.parent().state_root, b.header.state_root);
    n.verify(&[], &b).expect("B verifies on the finalized A");
    // At-least-once delivery: A again is a no-op; another block at its height is refused.
    n.finalized(a.clone()).expect("A again is acknowledged");
    let mut other = a.clone();
    other.header.time_ms += 1;
    assert!(matches!(n.finalized(other), Err(NodeError::Conflict { height: 1, .. })));
    n.finalized(b).expect("B commits");
    assert_eq!(n.parent().height, 2);
    assert_eq!(n.state().account(&alice.address()).sequence, 3);
}

#[test]
fn a_proposal_with_a_wrong_root_a_forged_signature_or_a_stale_parent_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, mallory) = (key(1), key(2));
    let n = node(dir.path(), &[&alice, &mallory]);
    n.submit(send(&alice, 0, 5)).expect("admitted");
    let a = n.propose(&[], 10).expect("proposes");
    let b = n.propose(std::slice::from_ref(&a), 20).expect("proposes");

    // The root after A, claimed wrongly.
    let mut wrong_root = b.clone();
    wrong_root.header.state_root = [9; 32];
    let err = n.verify(std::slice::from_ref(&a), &wrong_root).expect_err("refused");
    assert!(matches!(err, VerifyError::StateRoot { .. }), "{err}");

    // A transaction in alice's name signed by mallory, which no mempool would have admitted.
    let forged_tx = forged_send(&alice, &mallory, 1);
    let txs = vec![forged_tx.encode()];
    let mut forged = b.clone();
    forged.header.txs_root = txs_root(&txs);
    forged.txs = txs;
    let err = n.verify(std::slice::from_ref(&a), &forged).expect_err("refused");
    assert!(matches!(err, VerifyError::Transaction { index: 0, .. }), "{err}");

    // Garbage bytes as a transaction.
    let junk = Block {
        header: pazar_types::Header {
            txs_root: txs_root(&[vec![1, 2, 3]]),
            ..b.header.clone()
        },
        txs: vec![vec![1, 2, 3]],
        evidence: Default::default(),
    };
    assert!(matches!(
        n.verify(std::slice::from_ref(&a), &junk),
        Err(VerifyError::Transaction { index: 0, .. })
    ));

    // After A is final, a pending chain that starts at A is stale.
    n.finalized(a.clone()).expect("commits");
    assert!(matches!(
        n.verify(std::slice::from_ref(&a), &b),
        Err(VerifyError::Stale { .. })
    ));
    // B skipping its parent (claiming height 1) does not follow.
    let mut skipped = b.clone();
    skipped.header.height = 1;
    assert!(n.verify(&[], &skipped).is_err());
}

#[test]
fn transactions_a_proposal_brings_from_outside_the_mempool_are_checked_and_a_forged_one_among_them_never_passes() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (alice, mallory) = (key(1), key(2));
    // Two validators of one chain: the proposer holds alice's transfer, the verifier does not.
    let proposer = node(d1.path(), &[&alice, &mallory]);
    let verifier = node(d2.path(), &[&alice, &mallory]);
    proposer.submit(send(&alice, 0, 5)).expect("admitted");
    let a = proposer.propose(&[], 10).expect("proposes");
    assert_eq!(a.txs.len(), 1);

    // Mallory's transfer in alice's name (sequence 1) rides along with the valid one.
    let forged_tx = forged_send(&alice, &mallory, 1);
    let with_forged = |mut b: Block| {
        b.txs.push(forged_tx.encode());
        b.header.txs_root = txs_root(&b.txs);
        b
    };
    let err = verifier.verify(&[], &with_forged(a.clone())).expect_err("refused");
    assert!(matches!(err, VerifyError::Transaction { index: 1, .. }), "{err}");

    // The valid block verifies, and commits with its transfer applied.
    verifier.verify(&[], &a).expect("verifies");
    verifier.finalized(a.clone()).expect("commits");
    assert_eq!(verifier.state().account(&alice.address()).sequence, 1);
    proposer.finalized(a.clone()).expect("commits");
    assert_eq!(verifier.parent().state_root, proposer.parent().state_root);

    // The forged transfer is refused again on its own: checking the others left no trace of it.
    let b = proposer.propose(&[], 20).expect("proposes");
    let err = verifier.verify(&[], &with_forged(b)).expect_err("refused");
    assert!(matches!(err, VerifyError::Transaction { index: 0, .. }), "{err}");
}

#[test]
fn a_transaction_already_waiting_or_committed_is_refused_as_such_however_often_it_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = key(1);
    let n = node(dir.path(), &[&alice]);
    let tx = send(&alice, 0, 5);
    n.submit(tx.clone()).expect("admitted");
    let dup = n.submit_batch(vec![tx.clone(), tx.clone()]);
    assert!(dup.iter().all(|r| matches!(
        r,
        Err(pazar_node::SubmitError::Mempool(
            pazar_node::mempool::MempoolError::Duplicate
        ))
    )));
    let a = n.propose(&[], 10).expect("proposes");
    n.finalized(a).expect("commits");
    assert!(matches!(
        n.submit(tx.clone()),
        Err(pazar_node::SubmitError::Committed(1))
    ));
    let again = n.submit_from_peer(vec![tx]);
    assert!(matches!(again[0], Err(pazar_node::SubmitError::Committed(1))));
}
