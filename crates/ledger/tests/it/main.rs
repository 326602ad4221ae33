//! The crate's integration tests as one binary: each file here is a module (one link of
//! the crate and its dependencies instead of one per file, most of CI's test build).
//! `cargo test -p pazar-ledger --test it <module>::` runs one file's tests.

mod common;
mod conservation;
mod escrow_math;
mod evidence;
mod griefing;
mod rules;
mod runway;
mod signatures;
mod training;
mod training_props;
mod validators;
