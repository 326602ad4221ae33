//! The crate's integration tests as one binary: each file here is a module (one link of
//! the crate and its dependencies instead of one per file, most of CI's test build).
//! `cargo test -p pazar-node --test it <module>::` runs one file's tests.

mod batch_admission;
mod common;
mod consensus_seam;
mod gossip;
mod openapi;
mod solo_epochs;
mod train_rpc;
