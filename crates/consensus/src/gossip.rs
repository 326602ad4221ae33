//! Transaction gossip between validators: a transaction one validator admitted from its RPC
//! clients is sent to every other validator, so whoever leads next can include it, and every
//! validator checks each signature once, on admission (a block's transactions that sit in a
//! validator's mempool are not checked again when it votes or commits).
//!
//! - **Send**: the node queues what it admitted from its clients ([`Node::gossip_outbox`],
//!   bounded: when full the node drops the copy, counts it, and the transaction still waits in
//!   its own mempool). [`start`]'s sender task takes from that queue into a [`Batch`] until
//!   [`BATCH_DELAY`] after the batch's first transaction or until the batch is full, then sends
//!   it to all validators at once (a full mesh: nobody forwards). At 10,000 transactions a
//!   second that is about 200 messages a second, each within the channel's [`RATE`].
//! - **Receive**: a peer's batch is as untrusted as a client's request. It must decode within
//!   the batch bounds or the peer is blocked (an honest validator never sends such bytes);
//!   its transactions then go through the node's full admission ([`Node::submit_from_peer`]:
//!   size, encoding, chain, signature, fee, sequence, payability, duplicates). Refusals there
//!   are normal (the transaction was committed meanwhile, or reached this node twice) and cost
//!   the peer nothing. Transactions received are never gossiped again. Admission runs on a
//!   thread of its own, so signature checks never hold up the consensus actors.

pub mod batch;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use commonware_p2p::{Blocker, CheckedSender, LimitedSender, Receiver, Recipients};
use commonware_runtime::{Clock, Handle, Spawner};
use tokio::sync::mpsc;

use pazar_node::Node;

pub use batch::{Batch, BatchError, MAX_BATCH_BYTES, MAX_BATCH_TXS, MAX_MESSAGE};

/// The p2p channel of transaction gossip (0 to 4 are consensus's own).
pub const CHANNEL: u64 = 5;

/// Longest a transaction waits for others to share its message.
pub const BATCH_DELAY: Duration = Duration::from_millis(5);

/// Gossip messages per second each peer may send (and this node sends each peer). A sender
/// makes at most one batch per [`BATCH_DELAY`] unless batches fill up; twice that leaves room
/// for full batches under a burst.
pub const RATE: NonZeroU32 = commonware_utils::NZU32!(400);

const _: () = assert!(RATE.get() as u128 >= 2 * 1_000 / BATCH_DELAY.as_millis());

/// Starts the gossip of `node`'s admitted transactions (taken from `outbox`) over `channel`,
/// and the admission of what peers send on it; `blocker` blocks a peer whose message does not
/// decode. Both tasks run until the network or the node goes away.
pub fn start<E, S, R, B>(
    context: E,
    node: Arc<Node>,
    outbox: mpsc::Receiver<Vec<u8>>,
    (sender, receiver): (S, R),
    blocker: B,
) -> Vec<Handle<()>>
where
    E: Spawner + Clock,
    S: LimitedSender,
    R: Receiver<PublicKey = S::PublicKey>,
    B: Blocker<PublicKey = S::PublicKey>,
{
    let send = context.child("gossip_send").spawn({
        let node = node.clone();
        move |ctx| send_loop(ctx, node, outbox, sender)
    });
    // Admission checks signatures: a thread of its own keeps it off the consensus actors'.
    let receive = context
        .child("gossip_receive")
        .dedicated()
        .spawn(move |_| receive_loop(node, receiver, blocker));
    vec![send, receive]
}

/// Batches what the node queues and sends each batch to every peer.
async fn send_loop<E: Clock, S: LimitedSender>(
    context: E,
    node: Arc<Node>,
    mut outbox: mpsc::Receiver<Vec<u8>>,
    mut sender: S,
) {
    // A transaction that did not fit the last batch starts the next one.
    let mut carry: Option<Vec<u8>> = None;
    loop {
        let first = match carry.take() {
            Some(tx) => tx,
            None => match outbox.recv().await {
                Some(tx) => tx,
                None => return,
            },
        };
        let mut batch = Batch::new();
        batch
            .push(first)
            .expect("an empty batch takes any admitted transaction");
        let deadline = context.current() + BATCH_DELAY;
        let mut timer = std::pin::pin!(context.sleep_until(deadline));
        while !batch.is_full() {
            // Biased: a deterministic runtime must see the same order on every run.
            let next = tokio::select! {
                biased;
                tx = outbox.recv() => tx,
                _ = &mut timer => break,
            };
            // The node is gone: send what is here, the next `recv` ends the task.
            let Some(tx) = next else { break };
            if let Err(tx) = batch.push(tx) {
                carry = Some(tx);
                break;
            }
        }
        send(&context, &mut sender, &node, &batch).await;
    }
}

/// Sends `batch` to every peer the channel's rate lets it reach now, waiting while it reaches
/// none.
async fn send<E: Clock, S: LimitedSender>(context: &E, sender: &mut S, node: &Node, batch: &Batch) {
    let message = batch.encode();
    loop {
        match sender.check(Recipients::All) {
            Ok(checked) => {
                let peers = checked.recipients().len();
                if checked.send(message, false).accepted() {
                    let n = u64::try_from(batch.len() * peers).unwrap_or(u64::MAX);
                    node.metrics.gossip_txs_sent.inc_by(n);
                }
                return;
            }
            Err(until) => context.sleep_until(until).await,
        }
    }
}

/// Admits what peers send; blocks a peer whose message is not a batch.
async fn receive_loop<R: Receiver, B: Blocker<PublicKey = R::PublicKey>>(
    node: Arc<Node>,
    mut receiver: R,
    mut blocker: B,
) {
    while let Ok((peer, message)) = receiver.recv().await {
        match Batch::decode(message.as_ref()) {
            Ok(batch) => {
                // Refusals are normal here (see the module's documentation); the node counts
                // what it admitted.
                let _ = node.submit_from_peer(batch.into_txs());
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "a peer sent a gossip message that is not a batch; blocking it");
                let _ = blocker.block(peer);
            }
        }
    }
}
