//! Attacks of class `races` (see main.rs).
