//! Pseudo-gradient compression with error feedback, and the update blob.
