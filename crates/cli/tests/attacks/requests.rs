//! Attacks of class `requests` (see main.rs).
