//! Attacks of class `mempool` (see main.rs).
