//! The crate's integration tests as one binary: each file here is a module (one link of
//! the crate and its dependencies instead of one per file, most of CI's test build).
//! `cargo test -p pazar-consensus --features sim --test it <module>::` runs one file's tests.
//! The simulations (`sim`, `gossip`) run on the harness of feature `sim`; without it they are
//! left out of the build.

#[cfg(feature = "sim")]
mod gossip;
mod handoff;
#[cfg(feature = "sim")]
mod sim;
mod wire_and_settings;
