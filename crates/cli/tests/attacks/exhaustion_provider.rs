//! Attacks of class `exhaustion_provider` (see main.rs).
