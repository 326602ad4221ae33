//! Attacks of class `exhaustion` (see main.rs).
