//! Attacks of class `keys` (see main.rs).
