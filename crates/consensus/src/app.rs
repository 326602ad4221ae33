//! The node behind commonware: [`Proposer`] answers simplex (through marshal's `Inline`
//! wrapper) when this validator leads a view or receives a proposal, and [`Finalizer`] takes the
//! finalized blocks marshal delivers, in height order and at least once.
//!
//! Consensus may build on a parent that is notarized but not final. The ancestry marshal hands
//! over (the block or parent first, then back) is walked down to this node's last finalized
//! block; the blocks above it are the pending chain the node's
//! [`Application`](pazar_node::consensus::Application) runs under a savepoint to know the state
//! and root after the parent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use commonware_actor::Feedback;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::marshal::Update;
use commonware_consensus::simplex::types::Context;
use commonware_consensus::{Heightable, Reporter};
use commonware_cryptography::ed25519::PublicKey;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Digested, Digestible};
use commonware_runtime::{Clock, Metrics, Spawner};
use commonware_utils::Acknowledgement;
use futures_util::StreamExt;

use pazar_node::consensus::{Application, VerifyError};
use pazar_types::Block;

use crate::block::ChainBlock;

/// Votes and certificates are ed25519 signatures: attributable, so two conflicting votes of one
/// validator are evidence anyone can check; no key generation ceremony for a fixed set.
pub type Scheme = commonware_consensus::simplex::scheme::ed25519::Scheme;

/// Most blocks above this node's finalized head that a proposal may build on. A node further
/// behind waits for marshal to deliver what it misses rather than run a long chain.
pub const MAX_PENDING: usize = 256;

/// How long a lagging node waits between looks at its head.
const LAG_POLL: Duration = Duration::from_millis(20);

/// Proposes and verifies blocks with the node's application.
#[derive(Clone)]
pub struct Proposer {
    app: Arc<dyn Application>,
}

impl Proposer {
    pub fn new(app: Arc<dyn Application>) -> Proposer {
        Proposer { app }
    }

    /// The blocks of `ancestry` above this node's finalized head, oldest first, or `None` when
    /// the ancestry leaves the finalized chain (another block at a finalized height) or ends
    /// before reaching it. Waits while the chain is longer than [`MAX_PENDING`].
    async fn pending<E: Clock>(&self, runtime: &E, mut ancestry: impl Ancestry<ChainBlock>) -> Option<Vec<Block>> {
        let mut above = Vec::new();
        loop {
            let head = self.app.parent();
            // Blocks already collected that have since been finalized are no longer pending.
            above.retain(|b: &ChainBlock| b.block().header.height > head.height);
            if let Some(lowest) = above.last() {
                if lowest.block().header.height == head.height + 1 {
                    return (lowest.block().header.parent == head.hash).then(|| oldest_first(&above));
                }
            }
            let next = ancestry.next().await?;
            let b = next.inner().clone();
            let h = b.block().header.height;
            if h <= head.height {
                // The finalized block itself ends the walk; anything else at a finalized
                // height is another chain.
                return (h == head.height && b.hash() == head.hash).then(|| oldest_first(&above));
            }
            above.push(b);
            while above.len() > MAX_PENDING && self.app.parent().height + (MAX_PENDING as u64) < h {
                runtime.sleep(LAG_POLL).await;
            }
        }
    }
}

fn oldest_first(above: &[ChainBlock]) -> Vec<Block> {
    above.iter().rev().map(|b| b.block().clone()).collect()
}

/// The runtime's clock in milliseconds since the Unix epoch (simulated under the deterministic
/// runtime).
pub(crate) fn now_ms<E: Clock>(runtime: &E) -> u64 {
    runtime
        .current()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<E: Clock + Spawner + Metrics> commonware_consensus::Application<E> for Proposer {
    type SigningScheme = Scheme;
    type Context = Context<Digest, PublicKey>;
    type Block = ChainBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, _context): (E, Self::Context),
        ancestry: impl Ancestry<Self::Block>,
        _input: (),
    ) -> Option<Digested<Self::Block>> {
        // The first item is the parent consensus chose.
        let pending = self.pending(&runtime, ancestry).await?;
        loop {
            match self.app.propose(&pending_above(&self.app, &pending), now_ms(&runtime)) {
                Ok(block) => {
                    let block = ChainBlock::new(block);
                    let digest = block.digest();
                    return Some(Digested::precomputed(block, digest));
                }
                // The head moved while proposing: the chain above it is shorter now.
                Err(VerifyError::Stale { .. }) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot propose");
                    return None;
                }
            }
        }
    }

    async fn verify(
        &mut self,
        (runtime, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
    ) -> bool {
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let Some(pending) = self.pending(&runtime, ancestry).await else {
            return false;
        };
        loop {
            match self
                .app
                .verify(&pending_above(&self.app, &pending), block.inner().block())
            {
                Ok(()) => return true,
                Err(VerifyError::Stale { .. }) => continue,
                Err(e) => {
                    tracing::warn!(height = block.inner().block().header.height, error = %e, "refused a proposal");
                    return false;
                }
            }
        }
    }
}

/// The blocks of `pending` still above the node's finalized head.
fn pending_above(app: &Arc<dyn Application>, pending: &[Block]) -> Vec<Block> {
    let head = app.parent().height;
    pending.iter().filter(|b| b.header.height > head).cloned().collect()
}

/// Commits the finalized blocks marshal delivers and acknowledges each once it is durable. A
/// block the node cannot commit (a store failure, or another block at a committed height,
/// which consensus must never produce) is not acknowledged, which stops marshal's delivery,
/// and marks the engine failed.
#[derive(Clone)]
pub struct Finalizer {
    app: Arc<dyn Application>,
    failed: Arc<AtomicBool>,
}

impl Finalizer {
    pub fn new(app: Arc<dyn Application>) -> Finalizer {
        Finalizer {
            app,
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The node it commits to.
    pub(crate) fn app(&self) -> &Arc<dyn Application> {
        &self.app
    }

    /// Whether a finalized block could not be committed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Reporter for Finalizer {
    type Activity = Update<ChainBlock>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match activity {
            Update::Block(block, ack) => {
                let height = block.height().get();
                if height == 0 {
                    ack.acknowledge();
                    return Feedback::Ok;
                }
                match self.app.finalized(block.inner().clone().into_block()) {
                    Ok(()) => ack.acknowledge(),
                    Err(e) => {
                        tracing::error!(height, error = %e, "cannot commit a finalized block; the engine stops");
                        self.failed.store(true, Ordering::SeqCst);
                    }
                }
            }
            Update::Tip(..) => {}
        }
        Feedback::Ok
    }
}
