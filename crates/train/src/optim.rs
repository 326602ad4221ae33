//! AdamW (inner) and Nesterov (outer) optimizers.
