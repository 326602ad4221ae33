//! Transaction gossip between validators, on the harness of `pazar_consensus::sim` (feature
//! `sim`: commonware's deterministic runtime and simulated network, each validator a real node
//! (ledger, mempool, redb store) behind simplex and marshal) with `pazar_consensus::gossip` on
//! channel 5: a transaction submitted to one validator is committed in blocks the others
//! propose, once; a peer that sends bytes that are not a batch is blocked, one whose
//! transactions are refused by admission is not.

use std::time::Duration;

use commonware_p2p::{Recipients, Sender as _};
use commonware_runtime::{Clock, Quota, Runner as _};

use pazar_consensus::gossip::{self, Batch};
use pazar_consensus::sim::{good, gossiping_cluster, transfer, tx_location, user, wait_all, wait_committed};

/// Simulated time a scenario may take before the runtime gives up on it.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Clients send only to validator 0, one transaction per user and round, for eight rounds of
/// rotating leaders: every transaction is committed once, at the same place on all four, and
/// validators other than 0 proposed blocks holding some of them (without gossip, only validator
/// 0's blocks could). Each of the others received every one of them once, and gossiped none on.
#[test]
fn a_transaction_submitted_to_one_validator_is_committed_in_blocks_others_propose() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_path_buf();
    pazar_consensus::sim::runner(1, TIMEOUT).start(|context| async move {
        let (vals, _, _) = gossiping_cluster(&context, &root_path, 4, &good(), &[])
            .await
            .expect("the validators open");
        let all = [0, 1, 2, 3];
        wait_all(&context, &vals, &all, 2).await;
        let mut proposers = Vec::new();
        let mut hashes = Vec::new();
        for round in 0..8u64 {
            let mut this_round = Vec::new();
            for n in 1..=4u8 {
                let h = vals[0].node().submit(transfer(&user(n), round)).expect("admitted");
                this_round.push(h);
            }
            for h in &this_round {
                wait_committed(&context, &vals, &all, h).await.expect("the stores read");
                let (height, _) = tx_location(&vals, 0, h).expect("reads").expect("committed");
                let block = vals[0].node().store().block(height).expect("reads").expect("stored");
                proposers.push(block.block.header.proposer);
            }
            hashes.extend(this_round);
        }
        for h in &hashes {
            let at: Vec<_> = (0..vals.len())
                .map(|i| tx_location(&vals, i, h).expect("reads"))
                .collect();
            assert!(
                at.iter().all(|a| a.is_some() && *a == at[0]),
                "validators disagree on a transaction"
            );
        }
        assert!(
            proposers.iter().any(|p| *p != vals[0].proposer),
            "every transaction submitted to validator 0 waited for its own blocks: {proposers:?}"
        );
        let sent = vals[0].node().metrics.gossip_txs_sent.get();
        assert_eq!(
            sent,
            3 * hashes.len() as u64,
            "each transaction went to the three others once"
        );
        for v in &vals[1..] {
            let m = &v.node().metrics;
            assert_eq!(m.gossip_txs_received.get(), hashes.len() as u64);
            assert_eq!(m.gossip_txs_sent.get(), 0, "what was received is not gossiped again");
            assert!(
                m.gossip_txs_admitted.get() > 0,
                "a peer admitted none of the gossiped transactions"
            );
        }
        assert_eq!(vals[0].node().metrics.gossip_txs_dropped.get(), 0);
    });
}

/// Validator 3 is not running consensus but is connected: it gossips a well-formed batch of
/// transactions admission refuses (already committed, twice, and bytes that are no
/// transaction), and nobody blocks it; then bytes that are not a batch, and all three block it.
/// The three keep finalizing.
#[test]
fn a_peer_sending_undecodable_gossip_is_blocked_and_one_sending_refused_transactions_is_not() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_path_buf();
    pazar_consensus::sim::runner(2, TIMEOUT).start(|context| async move {
        let (vals, pks, oracle) = gossiping_cluster(&context, &root_path, 4, &good(), &[3])
            .await
            .expect("the validators open");
        let live = [0, 1, 2];
        wait_all(&context, &vals, &live, 2).await;
        let tx = transfer(&user(1), 0);
        let h = vals[0].node().submit(tx.clone()).expect("admitted");
        wait_committed(&context, &vals, &live, &h)
            .await
            .expect("the stores read");

        let rogue = pks.iter().nth(3).expect("four").clone();
        let (mut sender, _receiver) = oracle
            .control(rogue.clone())
            .register(gossip::CHANNEL, Quota::per_second(gossip::RATE))
            .await
            .expect("a channel");
        let mut refused = Batch::new();
        for t in [tx.clone(), tx, b"not a transaction".to_vec()] {
            refused.push(t).expect("room");
        }
        let before: Vec<u64> = vals
            .iter()
            .map(|v| v.node().metrics.gossip_txs_received.get())
            .collect();
        assert_eq!(sender.send(Recipients::All, refused.encode(), false).len(), 3);
        context.sleep(Duration::from_secs(1)).await;
        for i in live {
            let m = &vals[i].node().metrics;
            assert_eq!(
                m.gossip_txs_received.get(),
                before[i] + 3,
                "validator {i} did not read the batch"
            );
        }
        assert!(
            oracle.blocked().await.expect("the oracle answers").is_empty(),
            "a peer was blocked for transactions admission refused"
        );

        let mut garbage = refused.encode();
        garbage.push(0);
        sender.send(Recipients::All, garbage, false);
        context.sleep(Duration::from_secs(1)).await;
        let blocked = oracle.blocked().await.expect("the oracle answers");
        assert_eq!(blocked.len(), 3, "{blocked:?}");
        assert!(blocked.iter().all(|(_, b)| *b == rogue), "{blocked:?}");

        let target = vals[0].height() + 3;
        wait_all(&context, &vals, &live, target).await;
    });
}
