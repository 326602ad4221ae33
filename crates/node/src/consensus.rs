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

use pazar_types::block::{Attestation, DoubleSign};
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
    #[error("transaction {index} of the block is not one a proposer may include: {reason}")]
    Transaction { index: usize, reason: String },
    #[error("block {height} is at or below the finalized height {finalized}: it cannot extend the chain")]
    Stale { height: u64, finalized: u64 },
    #[error("the state after the pending blocks cannot be computed: {0}")]
    Execution(String),
    #[error("the block's evidence is refused: {0}")]
    Evidence(String),
}

/// The application side of consensus.
///
/// Consensus may build on a block that is not final yet (simplex proposes on a notarized
/// parent). `pending` is then the chain of such blocks from the one after the last finalized
/// block up to the parent, in height order, each verified before; empty when the parent is the
/// last finalized block. The application runs them under a savepoint (the ledger's
/// [`State::speculate`](pazar_ledger::State::speculate)) to know the state and the state root
/// after the parent, and undoes them.
pub trait Application: Send + Sync + 'static {
    /// The last finalized block.
    fn parent(&self) -> Parent;
    /// Builds a block on the last block of `pending` (or the last finalized one) from pending
    /// transactions not in `pending`, stamped `time_ms` (raised above the parent's time).
    fn propose(&self, pending: &[Block], time_ms: u64) -> Result<Block, VerifyError>;
    /// Checks a proposed block before consensus votes for it: that it follows its parent (the
    /// last of `pending`, or the last finalized block), carries the state root after that
    /// parent, and holds only transactions a proposer may include (decodable, for this chain,
    /// validly signed). It trusts nothing the proposer says.
    fn verify(&self, pending: &[Block], block: &Block) -> Result<(), VerifyError>;
    /// Executes and durably commits a finalized block. Called in height order; a block may be
    /// delivered again (after a restart): one already committed at its height with the same
    /// hash is a no-op, one with another hash is a safety violation and an error.
    fn finalized(&self, block: Block) -> Result<(), crate::NodeError>;
    /// Blocks per epoch of the ledger's validator sets (`None`: the chain has no set on the
    /// ledger, one epoch).
    fn epoch_length(&self) -> Option<u64>;
    /// The validator set of `epoch` as the committed ledger fixed it: consensus keys in
    /// consensus (key) order; `None` while not fixed (or without a set).
    fn validator_set(&self, epoch: u64) -> Option<Vec<[u8; 32]>>;
    /// The hash of the finalized block at `height`, if this node holds it.
    fn block_hash(&self, height: u64) -> Option<Hash32>;
    /// Hands the application the consensus engine's [`Attestor`], so that its proposals carry
    /// evidence and its verification checks the evidence of others' proposals. Without one
    /// (a single validator) blocks carry no evidence and a block with evidence is refused.
    fn set_attestor(&self, attestor: Arc<dyn Attestor>);
}

/// What a consensus engine proves about itself, for the evidence blocks carry
/// ([`pazar_types::block::Evidence`]): which validators signed each commit, and which signed
/// conflicting votes. The engine holds the certificates and votes and checks their signatures;
/// the node decides which records a block needs and the ledger applies them.
///
/// Validators are those of the ledger's set of each record's epoch
/// ([`pazar_ledger::validators`]), in consensus (key) order: the order of signer bitmaps and
/// of double-sign indices.
pub trait Attestor: Send + Sync + 'static {
    /// A certificate of the block `hash` (at height `height`) this engine holds, as a record.
    fn commit(&self, height: u64, hash: &Hash32) -> Option<Attestation>;
    /// The double signings this engine holds proofs of, oldest first (at most
    /// [`pazar_types::block::MAX_BLOCK_DOUBLE_SIGNS`]` × 4`), each with its epoch.
    fn double_signs(&self) -> Vec<DoubleSign>;
    /// Whether `attestation` is a valid certificate of a quorum of the validators (of the
    /// epoch of `height`) finalizing the block `hash` at `height`, signed by exactly the
    /// validators its bitmap names.
    fn check_commit(&self, height: u64, attestation: &Attestation, hash: &Hash32) -> Result<(), String>;
    /// Whether `record`'s proof is two conflicting votes of that validator in that view, of the
    /// record's kind, validly signed.
    fn check_double_sign(&self, record: &DoubleSign) -> Result<(), String>;
    /// These double signings (epoch, validator index, view) are on the ledger now: their
    /// proofs need not be kept.
    fn recorded(&self, double_signs: &[(u64, u32, u64)]);
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
                solo_may_propose(app.as_ref())?;
                let block = app.propose(&[], clock.now_ms())?;
                app.verify(&[], &block)?;
                app.finalized(block)
            })
            .await
            .map_err(|e| crate::NodeError::Internal(format!("block task failed: {e}")))?;
            r?;
        }
    }
}

/// A single validator finalizes alone only while the ledger's set for the next block's epoch is
/// one validator (or there is none): once its validators voted others in, blocks need their
/// votes, and going on alone would silently drop the set the chain agreed on.
fn solo_may_propose(app: &dyn Application) -> Result<(), crate::NodeError> {
    let next = app.parent().height + 1;
    let Some(length) = app.epoch_length().filter(|l| *l > 0) else {
        return Ok(());
    };
    let epoch = next / length;
    match app.validator_set(epoch) {
        Some(set) if set.len() > 1 => Err(crate::NodeError::Internal(format!(
            "the validator set of epoch {epoch} (from height {next}) has {} validators: a single \
             validator cannot finalize for them; run the node with consensus = \"simplex\" and \
             their peers",
            set.len()
        ))),
        _ => Ok(()),
    }
}

/// Where a node finds the certificates its consensus engine made, to hand them to a peer that
/// syncs its state from this node: the peer checks the state it receives against a block that
/// a certificate proves final. Encoded the engine's way; the node only passes them on.
pub trait Certificates: Send + Sync + 'static {
    /// The encoded finalization certificate of the block at `height`, if this node holds one
    /// (a block finalized only through a descendant's certificate has none of its own).
    fn finalization(
        &self,
        height: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send + '_>>;
}
