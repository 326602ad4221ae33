//! The provider side of the market: what a machine can sell ([`inventory`]), which orders it
//! bids on and at what price ([`bidding`]).

pub mod bidding;
pub mod daemon;
pub mod image;
pub mod inventory;
pub mod runtime;
pub mod server;
pub mod tenant;
pub mod tls;
