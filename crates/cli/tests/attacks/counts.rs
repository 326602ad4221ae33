//! Attacks of class `counts` (see main.rs).
