//! A small llama-family transformer on the reproducible kernels.
