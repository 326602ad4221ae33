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
pub mod invariants;
mod market;
mod provider;
pub mod state;
pub mod table;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::Serialize;

use pazar_types::{Address, Coin, Event, Hash32};

pub use error::{BlockError, TxError};
pub use escrow::EscrowView;
pub use state::{Genesis, GenesisBalance, Params, RestoreError, State, StateRestorer};
pub use table::StateChange;

/// What the ledger needs of a block header. Time is informational: the ledger never reads it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct BlockHeader {
    pub chain_id: String,
    pub height: u64,
    pub time_ms: u64,
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Receipt {
    #[serde(with = "pazar_types::tx::hex_array")]
    pub tx_hash: Hash32,
    /// 0 on success, else the error's code within `codespace`.
    pub code: u32,
    pub codespace: String,
    pub log: String,
    /// The fee charged (`None` when the transaction was refused before paying it).
    pub fee: Option<Coin>,
    pub events: Vec<Event>,
}

/// Receipts of a block's transactions and the events of its end-of-block work.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct BlockOutcome {
    pub receipts: Vec<Receipt>,
    pub events: Vec<Event>,
}

/// What a message handler knows of its transaction.
pub(crate) struct Ctx<'a> {
    pub height: u64,
    pub sender: Address,
    pub events: &'a mut Vec<Event>,
}
