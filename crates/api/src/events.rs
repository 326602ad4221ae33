//! The node's event stream (`GET /events`, Server-Sent Events): one `block` event per committed
//! block with every receipt and end-of-block event, its id the block height (so a reconnecting
//! client resumes with `Last-Event-ID`), and `lagged` when a reader fell too far behind.

use serde::{Deserialize, Serialize};

use pazar_types::records::Receipt;
use pazar_types::tx::hex_array;
use pazar_types::{Event, Hash32};

/// The SSE event name of a [`BlockEvents`].
pub const BLOCK_EVENT: &str = "block";
/// The SSE event name of a [`Lagged`].
pub const LAGGED_EVENT: &str = "lagged";

/// One committed block as the event stream publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockEvents {
    pub height: u64,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub hash: Hash32,
    pub time_ms: u64,
    /// The block's transactions' receipts (each with its events), in order.
    pub receipts: Vec<Receipt>,
    /// Events of the end-of-block work (escrow depletion, expiries, auto-accepted bids).
    pub end_block_events: Vec<Event>,
}

impl BlockEvents {
    /// Every event of the block in the order the ledger made them: each transaction's, then
    /// the end-of-block work's.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.receipts
            .iter()
            .flat_map(|r| r.events.iter())
            .chain(self.end_block_events.iter())
    }
}

/// The reader fell behind the live stream: reconnect with `?from=resume_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lagged {
    pub resume_from: u64,
}
