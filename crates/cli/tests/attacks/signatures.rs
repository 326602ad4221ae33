//! Attacks of class `signatures` (see main.rs).
