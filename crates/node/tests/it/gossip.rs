//! The node's side of transaction gossip: what it admitted from its clients is queued for the
//! other validators (and nothing else), what a peer sends goes through the full admission and
//! is not queued again, and a queue nobody reads costs clients nothing but the gossip.

use crate::common;

use common::{key, node};
use pazar_node::SubmitError;
use pazar_types::SigningKey;

/// A transfer of 5 upzr.
fn send(from: &SigningKey, sequence: u64) -> Vec<u8> {
    common::send(from, sequence, 5)
}

/// A transaction whose signature is another key's.
fn forged(from: &SigningKey, sequence: u64) -> Vec<u8> {
    let mut bytes = send(from, sequence);
    let other = send(&key(99), sequence);
    let n = bytes.len();
    bytes[n - 64..].copy_from_slice(&other[other.len() - 64..]);
    bytes
}

fn drain(rx: &mut tokio::sync::mpsc::Receiver<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(tx) = rx.try_recv() {
        out.push(tx);
    }
    out
}

#[test]
fn only_transactions_admitted_from_clients_are_queued_for_gossip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, bob) = (key(1), key(2));
    let n = node(dir.path(), &[&alice, &bob]);
    // Before gossip is on, nothing is queued.
    n.submit(send(&alice, 0)).expect("admitted");
    let mut rx = n.gossip_outbox().expect("the first call turns gossip on");
    assert!(n.gossip_outbox().is_none(), "one engine gossips");

    n.submit(send(&alice, 1)).expect("admitted");
    assert!(n.submit(send(&alice, 1)).is_err(), "a duplicate is refused");
    let batch = n.submit_batch(vec![send(&alice, 2), forged(&alice, 3), send(&alice, 9)]);
    assert!(batch[0].is_ok());
    assert!(matches!(batch[1], Err(SubmitError::Signature(_))), "{:?}", batch[1]);
    assert!(batch[2].is_err(), "a sequence gap is refused");
    assert_eq!(drain(&mut rx), vec![send(&alice, 1), send(&alice, 2)]);

    // A peer's transactions: the same checks, and nothing is queued again.
    let from_peer = n.submit_from_peer(vec![send(&bob, 0), forged(&bob, 1), send(&alice, 2), b"junk".to_vec()]);
    assert!(from_peer[0].is_ok());
    assert!(
        matches!(from_peer[1], Err(SubmitError::Signature(_))),
        "{:?}",
        from_peer[1]
    );
    assert!(from_peer[2].is_err(), "already pending");
    assert!(
        matches!(from_peer[3], Err(SubmitError::Decode(_))),
        "{:?}",
        from_peer[3]
    );
    assert!(n.is_pending(&pazar_types::tx_hash(&send(&bob, 0))));
    assert!(drain(&mut rx).is_empty(), "what a peer sent is not gossiped again");

    let m = &n.metrics;
    assert_eq!(m.gossip_txs_received.get(), 4);
    assert_eq!(m.gossip_txs_admitted.get(), 1);
    assert_eq!(m.gossip_txs_dropped.get(), 0);
    // A peer's refusals are not counted as clients' rejections.
    let text = m.render();
    assert!(!text.contains("reason=\"decode\""), "{text}");
    assert!(text.contains("pazar_gossip_txs_admitted_total 1"), "{text}");
}

#[test]
fn a_gossip_queue_nobody_reads_drops_and_counts_but_clients_are_admitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = key(1);
    let n = node(dir.path(), &[&alice]);
    drop(n.gossip_outbox().expect("gossip turned on"));
    n.submit(send(&alice, 0)).expect("admitted");
    n.submit_batch(vec![send(&alice, 1), send(&alice, 2)])
        .into_iter()
        .for_each(|r| assert!(r.is_ok(), "{r:?}"));
    assert_eq!(n.metrics.gossip_txs_dropped.get(), 3);
    assert_eq!(n.mempool_len().0, 3);
}
