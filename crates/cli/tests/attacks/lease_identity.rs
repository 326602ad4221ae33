//! Attacks of class `lease_identity` (see main.rs).
