//! The event follower: the node's committed blocks from where the daemon left off, in order
//! and each once (the client's `EventStream` resumes after the node says the reader lagged; a
//! broken connection is retried here), and the dispatch of each block's events to the
//! reactions they call for, by `pazar_types::Event` variant. Every `withdraw_every_blocks` it
//! asks for the earnings.
//!
//! Must not know: how to bid or run a lease (the reactions, `bids` and `leases`), nor the
//! stream's wire format (Server-Sent Events, the client's).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use pazar_api::events::BlockEvents;
use pazar_client::Rpc;
use pazar_types::Event;

use super::Daemon;

/// Wait before reconnecting after the stream broke (the node restarting, say).
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Blocks read ahead of the reactions.
const READ_AHEAD: usize = 256;

/// Follows the node's blocks from height `from` on a thread, reconnecting after any failure
/// and resuming after the last block delivered; blocks arrive in order, each once. The thread
/// ends when the receiver is dropped.
pub fn follow(rpc: &Rpc, from: u64) -> mpsc::Receiver<BlockEvents> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let mut stream = rpc.events(from);
    std::thread::spawn(move || {
        // One line per outage, not one per retry.
        let mut failing = false;
        loop {
            match stream.next_block() {
                Ok(block) => {
                    failing = false;
                    if tx.blocking_send(block).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if tx.is_closed() {
                        return;
                    }
                    if !failing {
                        tracing::warn!(
                            "the event stream broke at height {} ({e}); reconnecting",
                            stream.next_height()
                        );
                        failing = true;
                    }
                    std::thread::sleep(RECONNECT_DELAY);
                }
            }
        }
    });
    rx
}

impl Daemon {
    /// Acts on every block from height `from` on, for as long as the process runs.
    pub(super) async fn follow_chain(self: &Arc<Self>, from: u64) {
        self.log(&format!("following the chain from height {from}"));
        let mut rx = follow(&self.rpc, from);
        while let Some(block) = rx.recv().await {
            for ev in block.events() {
                self.dispatch(ev).await;
            }
            self.metrics.block(block.height, block.time_ms);
            let every = self.cfg.withdraw_every_blocks;
            if every > 0 && block.height % every == 0 {
                self.withdraw_all().await;
            }
        }
    }

    /// The reaction one event calls for; events of other providers' bids and leases, and every
    /// other kind, call for none.
    async fn dispatch(self: &Arc<Self>, ev: &Event) {
        let mine = |provider: &pazar_types::Address| *provider == self.address;
        match ev {
            Event::OrderCreated { id } => self.order_created(id).await,
            Event::BidClosed { id, .. } if mine(&id.provider) => self.bid_closed(id),
            Event::LeaseCreated { id, .. } if mine(&id.provider) => self.lease_created(id),
            Event::LeaseGrace { id, until } if mine(&id.provider) => self.lease_grace(id, *until).await,
            Event::LeaseResumed { id } if mine(&id.provider) => self.lease_resumed(id).await,
            Event::LeaseClosed { id, reason } if mine(&id.provider) => self.lease_closed(id, *reason).await,
            _ => {}
        }
    }
}
