//! The provider side of the market: what a machine can sell ([`inventory`]), which orders it
//! bids on and at what price ([`bidding`]), the daemon that sells it and follows the chain
//! ([`daemon`]), and the tenant endpoint ([`server`]). Leases run through `pazar_runtime`
//! (Docker or the sandbox, volumes, firewall, ingress), which knows nothing of the chain.

pub mod bidding;
pub mod daemon;
pub mod inventory;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod tls;
