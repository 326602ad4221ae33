//! Bitwise-reproducible CPU kernels.
