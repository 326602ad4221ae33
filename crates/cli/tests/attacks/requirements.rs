//! Attacks of class `requirements` (see main.rs).
