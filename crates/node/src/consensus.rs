//! The seam between block production and the application, shaped after `commonware-consensus`:
//! consensus asks the application to **propose** a block on a parent, to **verify** a block
//! someone else proposed, and delivers **finalized** blocks to it in height order exactly once
//! (what commonware's `marshal` does, with backfill). The single-validator engine here
//! ([`Solo`]) finalizes its own proposals; the multi-validator engine plugs in behind the same
//! trait without touching the ledger or the store.
//!
//! Time comes in through [`Clock`] so that a deterministic runtime can drive the node in tests.

use std::sync::Arc;
use std::time::Duration;

use pazar_types::{Block, Hash32};

/// Wall-clock time, as the proposer stamps it on headers. Never read by the ledger.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// What a proposal builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub height: u64,
    pub hash: Hash32,
    pub state_root: Hash32,
    pub time_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("block height {got} does not follow the parent {parent}")]
    Height { parent: u64, got: u64 },
    #[error("block names parent {got}, expected {expected}")]
    Parent { expected: String, got: String },
    #[error("block carries state root {got}, the state after its parent is {expected}")]
    StateRoot { expected: String, got: String },
    #[error("block is for chain {got}, not {expected}")]
    Chain { expected: String, got: String },
    #[error("block transactions do not match its header or exceed the block limits")]
    Malformed,
    #[error("block time {got} ms is not after its parent's {parent} ms")]
    Time { parent: u64, got: u64 },
}

/// The application side of consensus.
pub trait Application: Send + Sync + 'static {
    /// The last finalized block, which the next proposal builds on.
    fn parent(&self) -> Parent;
    /// Builds a block on `parent` from pending transactions, stamped `time_ms`.
    fn propose(&self, parent: &Parent, time_ms: u64) -> Block;
    /// Checks a proposed block against its parent before consensus votes for it.
    fn verify(&self, parent: &Parent, block: &Block) -> Result<(), VerifyError>;
    /// Executes and durably commits a finalized block. Called in height order, once per height.
    fn finalized(&self, block: Block) -> Result<(), crate::NodeError>;
}

/// A consensus engine: drives an [`Application`] until `shutdown` resolves.
pub trait Consensus: Send + 'static {
    fn run(
        self,
        app: Arc<dyn Application>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Result<(), crate::NodeError>> + Send;
}

/// One validator: proposes a block every `block_time`, verifies it like any proposal, and
/// finalizes it at once (a quorum of one).
pub struct Solo<C: Clock> {
    pub block_time: Duration,
    pub clock: Arc<C>,
}

impl<C: Clock> Consensus for Solo<C> {
    async fn run(
        self,
        app: Arc<dyn Application>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), crate::NodeError> {
        let mut tick = tokio::time::interval(self.block_time);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return Ok(()),
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            let app = app.clone();
            let clock = self.clock.clone();
            // Execution and the fsync are blocking work: keep them off the async workers.
            let r = tokio::task::spawn_blocking(move || {
                let parent = app.parent();
                let time = clock.now_ms().max(parent.time_ms + 1);
                let block = app.propose(&parent, time);
                app.verify(&parent, &block)?;
                app.finalized(block)
            })
            .await
            .map_err(|e| crate::NodeError::Internal(format!("block task failed: {e}")))?;
            r?;
        }
    }
}
