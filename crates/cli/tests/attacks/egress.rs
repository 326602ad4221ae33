//! Attacks of class `egress` (see main.rs).
