//! Attacks of class `manifest` (see main.rs).
