//! Attacks of class `exhaustion_ingress` (see main.rs).
