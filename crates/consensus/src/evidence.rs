//! Faults simplex sees: with ed25519 votes, two conflicting votes of one validator in one view
//! are a signed proof anyone can check. Kept here for the node (metrics, and the ledger's
//! slashing rules to come).

use std::sync::{Arc, Mutex};

use commonware_actor::Feedback;
use commonware_consensus::simplex::types::Activity;
use commonware_consensus::{Reporter, Viewable};
use commonware_cryptography::sha256::Digest;

use crate::app::Scheme;

/// One fault: what kind, and in which view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub view: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Two notarize votes for different blocks in one view.
    ConflictingNotarize,
    /// Two finalize votes for different blocks in one view.
    ConflictingFinalize,
    /// A nullify and a finalize vote in one view.
    NullifyFinalize,
}

/// Collects the faults reported by simplex.
#[derive(Clone, Default)]
pub struct Evidence {
    faults: Arc<Mutex<Vec<Fault>>>,
}

impl Evidence {
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

impl Reporter for Evidence {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        let kind = match &activity {
            Activity::ConflictingNotarize(_) => FaultKind::ConflictingNotarize,
            Activity::ConflictingFinalize(_) => FaultKind::ConflictingFinalize,
            Activity::NullifyFinalize(_) => FaultKind::NullifyFinalize,
            _ => return Feedback::Ok,
        };
        let view = activity.view().get();
        tracing::warn!(?kind, view, "a validator signed conflicting votes");
        if let Ok(mut f) = self.faults.lock() {
            f.push(Fault { kind, view });
        }
        Feedback::Ok
    }
}
