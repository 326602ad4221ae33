//! Many validators: Pazar's node behind commonware's simplex consensus (a block is final with
//! a 2f+1 certificate, about three network hops) and marshal (finalized blocks delivered in
//! height order, at least once, backfilled from peers). The ledger, the store and the node's
//! mempool are unchanged: the node is the application ([`app`]), a block is our block
//! ([`block`]), and [`engine`] wires one validator.

pub mod app;
pub mod block;
pub mod engine;
pub mod epochs;
pub mod evidence;
pub mod gossip;
pub mod handoff;
pub mod net;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sync;

pub use app::{Finalizer, Proposer, Scheme};
pub use block::ChainBlock;
pub use epochs::Epochs;
pub use evidence::{Evidence, Fault, FaultKind};
pub use net::{NetError, Peer, Settings, Simplex};
pub use sync::{HandoffChain, HandoffError, MarshalCertificates, SyncError};
