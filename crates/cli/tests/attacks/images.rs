//! Attacks of class `images` (see main.rs).
