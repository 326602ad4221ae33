//! Attacks of class `expiry` (see main.rs).
