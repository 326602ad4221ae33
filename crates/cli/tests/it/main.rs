//! The `pazar` command's integration tests as one binary: each file here is a module, and
//! `attacks/` one with a module per class of attack (one link of the CLI and its dependencies
//! instead of one per file, most of CI's test build). The tests run on parallel threads of one
//! process: a test that starts several validator processes holds
//! `common::one_testnet_at_a_time()`. `cargo test -p pazar --test it <module>::` runs one file's
//! tests (`attacks::egress::` one attack's).

mod attacks;
mod bench_ledger;
mod bench_testnet;
mod cli_surface;
mod common;
mod crash;
mod demo;
mod devnet;
mod dry_run;
mod failover;
mod manifest;
mod node_config;
mod provider;
mod runway;
mod sdl;
mod testnet;
mod testnet_handoff;
mod train;
mod update;
mod why_no_bids;
