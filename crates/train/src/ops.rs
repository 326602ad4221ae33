//! Bitwise-reproducible CPU kernels.
//!
//! The rule every kernel here keeps: each output element is the result of one fixed sequence of
//! IEEE-754 single-precision operations, whatever the machine, the SIMD width or the number of
//! threads. Concretely:
//! - Matrix products are written in "axpy" form, `c[i][..] += a[i][k] * b[k][..]` for `k` in
//!   order: the compiler vectorises across the output columns (independent lanes), never across
//!   the reduction, so no reassociation happens. Rust never contracts `a * b + c` into a fused
//!   multiply-add on its own, and nothing here calls `mul_add`.
//! - Threads split the output rows; a row's reduction never crosses threads.
//! - Plain sums run left to right in one loop.
//! - `exp`, `ln`, `sin`, `cos`, `pow` come from the pure-Rust `libm`, not the platform's library.
//!   `sqrt` and division are correctly rounded by IEEE-754 on every machine.
//!
//! The cost is speed: a reduction cannot use SIMD lanes, so dot products are scalar. The model
//! keeps them out of its hot paths (the large products are all axpy form).

/// How many threads the kernels may use. The result is the same bits for every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Threads {
    pub const ONE: Threads = Threads(1);

    fn count(self) -> usize {
        self.0.max(1)
    }
}

/// Below this many multiply-adds a product runs on the calling thread: spawning costs more.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Runs `f(first_row, rows_slice)` over `out` split into contiguous blocks of whole rows of
/// `row_len`, one block per thread. Every row is computed by exactly one call, so the split
/// changes nothing in the result.
fn for_rows<F>(out: &mut [f32], row_len: usize, work: usize, threads: Threads, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    let t = threads.count().min(rows.max(1));
    if t <= 1 || work < PARALLEL_MIN_WORK {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(t);
    std::thread::scope(|s| {
        let f = &f;
        for (i, block) in out.chunks_mut(per * row_len).enumerate() {
            s.spawn(move || f(i * per, block));
        }
    });
}

/// `c[m×n] = a[m×k] · b[k×n]`, all row-major.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, threads: Threads) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), k * n);
    debug_assert_eq!(c.len(), m * n);
    for_rows(c, n, m * k * n, threads, |row0, block| {
        for (r, c_row) in block.chunks_exact_mut(n).enumerate() {
            let i = row0 + r;
            c_row.fill(0.0);
            let a_row = &a[i * k..(i + 1) * k];
            for (kk, &aik) in a_row.iter().enumerate() {
                let b_row = &b[kk * n..(kk + 1) * n];
                for (cj, &bj) in c_row.iter_mut().zip(b_row) {
                    *cj += aik * bj;
                }
            }
        }
    });
}

/// `c[k×n] += a[m×k]ᵀ · b[m×n]`: the weight gradient of a linear layer (`a` its input, `b` the
/// gradient of its output). Each `c[i][j]` sums over `r = 0..m` in order, added to what `c` held.
pub fn matmul_at_b_acc(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, threads: Threads) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), m * n);
    debug_assert_eq!(c.len(), k * n);
    for_rows(c, n, m * k * n, threads, |row0, block| {
        let rows = block.len() / n.max(1);
        for r in 0..m {
            let b_row = &b[r * n..(r + 1) * n];
            let a_row = &a[r * k..(r + 1) * k];
            for (ii, c_row) in block.chunks_exact_mut(n).enumerate().take(rows) {
                let ari = a_row[row0 + ii];
                for (cj, &bj) in c_row.iter_mut().zip(b_row) {
                    *cj += ari * bj;
                }
            }
        }
    });
}

/// `out[n×k] = w[k×n]ᵀ`.
pub fn transpose(w: &[f32], k: usize, n: usize, out: &mut [f32]) {
    debug_assert_eq!(w.len(), k * n);
    debug_assert_eq!(out.len(), k * n);
    for i in 0..k {
        for j in 0..n {
            out[j * k + i] = w[i * n + j];
        }
    }
}

/// `c[m×n] = a[m×k] · w[n×k]ᵀ` through a transposed copy of `w` (so the product is axpy form).
pub fn matmul_a_bt(a: &[f32], w: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, threads: Threads) {
    let mut wt = vec![0.0f32; k * n];
    transpose(w, n, k, &mut wt);
    matmul(a, &wt, c, m, k, n, threads);
}

/// Left-to-right sum.
pub fn sum(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v;
    }
    s
}

/// Left-to-right dot product (scalar: see the module's rule).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (&x, &y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}

pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// The logistic function, `1 / (1 + e^-x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// RMS normalisation of each row of `x[rows×d]`: `y = x / sqrt(mean(x²) + eps) * w`. Writes
/// `y` and each row's `1 / sqrt(mean(x²) + eps)` (kept for the backward pass).
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32], inv: &mut [f32]) {
    let d = w.len();
    for ((xr, yr), ir) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(inv.iter_mut()) {
        let ms = dot(xr, xr) / d as f32;
        let r = 1.0 / (ms + eps).sqrt();
        *ir = r;
        for ((yv, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
            *yv = xv * r * wv;
        }
    }
}

/// The backward pass of [`rmsnorm`]: adds to `dx` and `dw`.
/// `dx = r·(dy⊙w) − x·r³/d·Σ(dy⊙w⊙x)`, `dw += Σ_rows dy⊙x·r`.
pub fn rmsnorm_backward(x: &[f32], w: &[f32], inv: &[f32], dy: &[f32], dx: &mut [f32], dw: &mut [f32]) {
    let d = w.len();
    for (((xr, dyr), dxr), &r) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(inv)
    {
        let mut s = 0.0f32;
        for ((&dyv, &wv), &xv) in dyr.iter().zip(w).zip(xr) {
            s += dyv * wv * xv;
        }
        let c = r * r * r * s / d as f32;
        for (((dxv, &dyv), &wv), &xv) in dxr.iter_mut().zip(dyr).zip(w).zip(xr) {
            *dxv += r * dyv * wv - xv * c;
        }
        for ((dwv, &dyv), &xv) in dw.iter_mut().zip(dyr).zip(xr) {
            *dwv += dyv * xv * r;
        }
    }
}

/// Mean cross-entropy of `logits[rows×v]` against `targets`, and its gradient with respect to
/// the logits (written to `dlogits`, already divided by the row count).
pub fn cross_entropy(logits: &[f32], targets: &[u32], v: usize, dlogits: &mut [f32]) -> f32 {
    let rows = targets.len();
    let scale = 1.0 / rows as f32;
    let mut total = 0.0f32;
    for ((lr, dr), &t) in logits.chunks_exact(v).zip(dlogits.chunks_exact_mut(v)).zip(targets) {
        let mut m = f32::NEG_INFINITY;
        for &l in lr {
            if l > m {
                m = l;
            }
        }
        let mut z = 0.0f32;
        for (d, &l) in dr.iter_mut().zip(lr) {
            let e = exp(l - m);
            *d = e;
            z += e;
        }
        let t = t as usize;
        total += m + ln(z) - lr[t];
        let inv_z = 1.0 / z;
        for d in dr.iter_mut() {
            *d = *d * inv_z * scale;
        }
        dr[t] -= scale;
    }
    total * scale
}

/// Mean cross-entropy only (evaluation).
pub fn cross_entropy_loss(logits: &[f32], targets: &[u32], v: usize) -> f32 {
    let mut total = 0.0f32;
    for (lr, &t) in logits.chunks_exact(v).zip(targets) {
        let mut m = f32::NEG_INFINITY;
        for &l in lr {
            if l > m {
                m = l;
            }
        }
        let mut z = 0.0f32;
        for &l in lr {
            z += exp(l - m);
        }
        total += m + ln(z) - lr[t as usize];
    }
    total / targets.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator, enough for kernel tests.
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    c[i * n + j] += a[i * k + kk] as f64 * b[kk * n + j] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn matmul_agrees_with_a_double_precision_product() {
        let (m, k, n) = (7, 13, 9);
        let a = pseudo(m * k, 1);
        let b = pseudo(k * n, 2);
        let mut c = vec![0.0; m * n];
        matmul(&a, &b, &mut c, m, k, n, Threads::ONE);
        for (x, y) in c.iter().zip(naive(&a, &b, m, k, n)) {
            assert!((*x as f64 - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn products_are_the_same_bits_for_every_thread_count() {
        let (m, k, n) = (300, 70, 90);
        let a = pseudo(m * k, 3);
        let b = pseudo(k * n, 4);
        let g = pseudo(m * n, 5);
        let run = |t: usize| {
            let mut c = vec![0.0; m * n];
            matmul(&a, &b, &mut c, m, k, n, Threads(t));
            let mut w = vec![0.5; k * n];
            matmul_at_b_acc(&a, &g, &mut w, m, k, n, Threads(t));
            let mut d = vec![0.0; m * k];
            matmul_a_bt(&g, &b, &mut d, m, n, k, Threads(t));
            (c, w, d)
        };
        let one = run(1);
        for t in [2, 3, 8] {
            let other = run(t);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one.0), bits(&other.0), "matmul, {t} threads");
            assert_eq!(bits(&one.1), bits(&other.1), "matmul_at_b_acc, {t} threads");
            assert_eq!(bits(&one.2), bits(&other.2), "matmul_a_bt, {t} threads");
        }
    }

    #[test]
    fn weight_gradient_product_is_a_transposed_product() {
        let (m, k, n) = (11, 5, 6);
        let a = pseudo(m * k, 6);
        let b = pseudo(m * n, 7);
        let mut c = vec![0.0; k * n];
        matmul_at_b_acc(&a, &b, &mut c, m, k, n, Threads::ONE);
        let mut at = vec![0.0; m * k];
        transpose(&a, m, k, &mut at);
        for (x, y) in c.iter().zip(naive(&at, &b, k, m, n)) {
            assert!((*x as f64 - y).abs() < 1e-4);
        }
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let v = 5;
        let logits = pseudo(3 * v, 8);
        let targets = [1u32, 4, 0];
        let mut d = vec![0.0; logits.len()];
        let base = cross_entropy(&logits, &targets, v, &mut d);
        assert!((base - cross_entropy_loss(&logits, &targets, v)).abs() < 1e-6);
        for i in 0..logits.len() {
            let h = 1e-2;
            let mut p = logits.clone();
            p[i] += h;
            let mut q = logits.clone();
            q[i] -= h;
            let num = (cross_entropy_loss(&p, &targets, v) - cross_entropy_loss(&q, &targets, v)) / (2.0 * h);
            assert!((num - d[i]).abs() < 1e-3, "logit {i}: {num} vs {}", d[i]);
        }
    }

    #[test]
    fn rmsnorm_gradient_matches_finite_differences() {
        let d = 6;
        let x = pseudo(2 * d, 9);
        let w = pseudo(d, 10);
        let dy = pseudo(2 * d, 11);
        let f = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; x.len()];
            let mut inv = vec![0.0; 2];
            rmsnorm(x, w, 1e-5, &mut y, &mut inv);
            y.iter().zip(&dy).map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>()
        };
        let mut y = vec![0.0; x.len()];
        let mut inv = vec![0.0; 2];
        rmsnorm(&x, &w, 1e-5, &mut y, &mut inv);
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; d];
        rmsnorm_backward(&x, &w, &inv, &dy, &mut dx, &mut dw);
        let h = 1e-2;
        for i in 0..x.len() {
            let mut p = x.clone();
            p[i] += h;
            let mut q = x.clone();
            q[i] -= h;
            let num = (f(&p, &w) - f(&q, &w)) / (2.0 * h as f64);
            assert!((num - dx[i] as f64).abs() < 2e-3, "x {i}: {num} vs {}", dx[i]);
        }
        for i in 0..d {
            let mut p = w.clone();
            p[i] += h;
            let mut q = w.clone();
            q[i] -= h;
            let num = (f(&x, &p) - f(&x, &q)) / (2.0 * h as f64);
            assert!((num - dw[i] as f64).abs() < 2e-3, "w {i}: {num} vs {}", dw[i]);
        }
    }
}
