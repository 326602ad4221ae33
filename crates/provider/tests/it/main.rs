//! The crate's integration tests as one binary: each file here is a module (one link of
//! the crate and its dependencies instead of one per file, most of CI's test build).
//! `cargo test -p pazar-provider --test it <module>::` runs one file's tests. The sandbox's
//! tests stay a binary of their own (`tests/sandbox.rs`): one of them bounds the growth of the
//! process's resident memory during a log flood, which the Docker tests would share here.

#[path = "../common/mod.rs"]
mod common;
mod docker;
mod isolation;
mod matching;
mod rollout;
mod snapshots;
mod storage;
