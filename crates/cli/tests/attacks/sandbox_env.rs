//! Attacks of class `sandbox_env` (see main.rs).
