//! The provider side of the market: what a machine can sell ([`inventory`]), which orders it
//! bids on and at what price ([`bidding`]), the daemon that sells it ([`daemon`]), where
//! leases run ([`runtime`]), the tenant endpoint ([`server`]) and the HTTP ingress
//! ([`ingress`]).

pub mod bidding;
pub mod daemon;
pub mod image;
pub mod ingress;
pub mod inventory;
pub mod runtime;
pub mod server;
pub mod tenant;
pub mod tls;
