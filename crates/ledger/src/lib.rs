//! Pazar's ledger: the pure, deterministic state machine of the compute market.
//!
//! `State::apply_block(header, txs)` is the only way blocks change state. The ledger knows
//! nothing of clocks, networks, disks or randomness: the same blocks give the same
//! [`State::state_hash`] on every machine. Modules: [`bank`](crate::bank), provider and audit,
//! deployment and market, [`escrow`](crate::escrow), fees (in `apply`).

mod apply;
mod bank;
pub mod error;
pub mod escrow;
pub mod evidence;
pub mod invariants;
mod market;
mod provider;
mod runway;
pub mod state;
pub mod table;
mod training;
pub mod validators;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::Serialize;

use pazar_types::{Address, Event};

pub use error::{BlockError, TxError};
pub use escrow::EscrowView;
pub use evidence::{DoubleSignRecord, EvidenceError, ValidatorKey, ValidatorRecord};
pub use runway::TOP_UP_RETRY_BLOCKS;
pub use state::{Genesis, GenesisBalance, Params, Pending, RestoreError, State, StateRestorer};
pub use table::StateChange;

/// What the ledger needs of a block header. Time is informational: the ledger never reads it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct BlockHeader {
    pub chain_id: String,
    pub height: u64,
    pub time_ms: u64,
}

pub use pazar_types::records::{BlockOutcome, Receipt};

/// What a message handler knows of its transaction.
pub(crate) struct Ctx<'a> {
    pub height: u64,
    pub sender: Address,
    pub events: &'a mut Vec<Event>,
}
