//! Attacks of class `paging` (see main.rs).
