//! The inner optimizer (AdamW with global-norm clipping) and the outer one (SGD with Nesterov
//! momentum on pseudo-gradients), both element-wise in a fixed order so that a replay gives the
//! same bits. Powers of β are kept as running products (no `powi`, whose implementation is the
//! compiler's).

use crate::ops;

/// AdamW's constants; the learning rate and weight decay come from the job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Gradients whose global L2 norm exceeds this are scaled down to it (0 disables).
    pub clip: f32,
}

impl AdamW {
    pub fn new(lr: f32, weight_decay: f32) -> AdamW {
        AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
            clip: 1.0,
        }
    }
}

/// AdamW's moments and step count.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u32,
    /// β1^step and β2^step, kept as running products.
    pub b1t: f32,
    pub b2t: f32,
}

impl AdamState {
    pub fn new(n: usize) -> AdamState {
        AdamState {
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
            b1t: 1.0,
            b2t: 1.0,
        }
    }
}

/// One AdamW step on `params` with `grad` (which is clipped in place).
pub fn adamw_step(opt: &AdamW, st: &mut AdamState, params: &mut [f32], grad: &mut [f32]) {
    if opt.clip > 0.0 {
        let norm = ops::dot(grad, grad).sqrt();
        if norm > opt.clip {
            let s = opt.clip / norm;
            for g in grad.iter_mut() {
                *g *= s;
            }
        }
    }
    st.step += 1;
    st.b1t *= opt.beta1;
    st.b2t *= opt.beta2;
    let c1 = 1.0 / (1.0 - st.b1t);
    let c2 = 1.0 / (1.0 - st.b2t);
    let (b1, b2) = (opt.beta1, opt.beta2);
    for (((p, &g), m), v) in params
        .iter_mut()
        .zip(grad.iter())
        .zip(st.m.iter_mut())
        .zip(st.v.iter_mut())
    {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let mhat = *m * c1;
        let vhat = *v * c2;
        *p -= opt.lr * (mhat / (vhat.sqrt() + opt.eps) + opt.weight_decay * *p);
    }
}

/// The outer optimizer: SGD with Nesterov momentum on the averaged pseudo-gradient
/// `g = θ_start − θ_end` (PyTorch's convention, as DiLoCo uses it):
/// `u ← μ·u + g`, `θ ← θ − lr·(g + μ·u)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nesterov {
    pub lr: f32,
    pub momentum: f32,
}

pub fn nesterov_step(opt: &Nesterov, params: &mut [f32], momentum: &mut [f32], g: &[f32]) {
    let mu = opt.momentum;
    for ((p, u), &gv) in params.iter_mut().zip(momentum.iter_mut()).zip(g) {
        *u = mu * *u + gv;
        *p -= opt.lr * (gv + mu * *u);
    }
}

/// SHA-256 of a domain tag and f32 vectors' little-endian bytes, each prefixed by its length
/// (so that moving a value from one vector to the next changes the hash).
pub fn hash_f32s(tag: &str, parts: &[&[f32]]) -> [u8; 32] {
    pazar_types::train::f32s_hash(tag, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_minimises_a_quadratic() {
        let opt = AdamW {
            lr: 0.05,
            clip: 0.0,
            ..AdamW::new(0.05, 0.0)
        };
        let mut st = AdamState::new(3);
        let mut p = vec![3.0f32, -2.0, 0.5];
        for _ in 0..500 {
            let mut g: Vec<f32> = p.iter().map(|x| 2.0 * (x - 1.0)).collect();
            adamw_step(&opt, &mut st, &mut p, &mut g);
        }
        for x in p {
            assert!((x - 1.0).abs() < 1e-2, "{x}");
        }
    }

    #[test]
    fn clipping_bounds_the_first_step() {
        let opt = AdamW::new(0.1, 0.0);
        let mut st = AdamState::new(2);
        let mut p = vec![0.0f32, 0.0];
        let mut g = vec![300.0f32, 400.0];
        adamw_step(&opt, &mut st, &mut p, &mut g);
        assert!((ops::dot(&g, &g).sqrt() - 1.0).abs() < 1e-5);
        // Adam's first step moves each coordinate by about lr whatever the gradient's size.
        assert!((p[0] + 0.1).abs() < 1e-3 && (p[1] + 0.1).abs() < 1e-3);
    }

    #[test]
    fn nesterov_with_zero_momentum_is_plain_sgd() {
        let opt = Nesterov { lr: 0.5, momentum: 0.0 };
        let mut p = vec![1.0f32, 2.0];
        let mut u = vec![0.0f32; 2];
        nesterov_step(&opt, &mut p, &mut u, &[0.2, -0.4]);
        assert_eq!(p, vec![0.9, 2.2]);
    }

    #[test]
    fn hashes_separate_vectors_and_tags() {
        let a = hash_f32s("t", &[&[1.0, 2.0], &[3.0]]);
        assert_ne!(a, hash_f32s("t", &[&[1.0], &[2.0, 3.0]]));
        assert_ne!(a, hash_f32s("u", &[&[1.0, 2.0], &[3.0]]));
        assert_eq!(a, hash_f32s("t", &[&[1.0, 2.0], &[3.0]]));
    }
}
