//! Pazar's shared vocabulary: what the ledger, the node, providers and clients all speak.
//!
//! This crate knows nothing of storage, networking or clocks. Everything here that crosses a
//! trust boundary (transactions, market specs) is validated when it is decoded.

pub mod address;
pub mod auth;
pub mod block;
pub mod coin;
pub mod event;
pub mod keys;
pub mod market;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod records;
pub mod state_key;
pub mod train;
pub mod tx;

pub use address::{Address, AddressError};
pub use block::{Block, Header};
pub use coin::{Coin, CoinError, Dec, Denom, Price, DEC_SCALE};
pub use event::Event;
pub use keys::{KeyScheme, SignatureError, SigningKey, TxSignature};
pub use market::{Attribute, BidId, DeploymentId, GroupId, LeaseId, OrderId};
pub use tx::{tx_hash, verify_signatures, DecodeError, Hash32, Msg, ProviderInfo, Tx, TxBody};
