//! Verifiable distributed training (DiLoCo-style) for Pazar.
//!
//! Every operation that reaches a model's weights runs on [`ops`], kernels whose result is the
//! same bits on every machine and for every thread count: each output element is reduced in one
//! fixed order, no fused multiply-add, `exp`/`ln`/`sin`/`cos` from the pure-Rust `libm`. That is
//! what lets any auditor replay a worker's steps and compare hashes.

pub mod blobs;
pub mod compress;
pub mod data;
pub mod model;
pub mod node_chain;
pub mod ops;
pub mod optim;
pub mod round;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
pub mod worker;
