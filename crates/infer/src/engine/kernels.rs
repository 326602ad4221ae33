//! The arithmetic of generation: matrix-vector products over f32 or int8 weights, the
//! attention of one position, and a blocked matrix-matrix product (the yardstick `pazar bench
//! infer` divides by).
//!
//! Every kernel is a [`pulp::WithSimd`] operation: [`pulp::Arch`] picks the widest instruction set
//! the CPU has at run time (AVX2 with FMA on most x86-64 machines; the default target only
//! assumes SSE2) and compiles the kernel's body for it. The f32 kernels use `pulp`'s vectors
//! explicitly, with independent accumulators so that the fused multiply-adds overlap; the int8
//! and attention kernels are plain loops written so that LLVM vectorises them (pairs of 8-bit
//! products summed into 32 bits is the shape of `pmaddwd`; the attention loops are axpy form,
//! independent lanes with no reduction). Results are close to, not the same bits as, the
//! training kernels: a reduction's order depends on the vector width.

use pulp::{Simd, WithSimd};

/// Rows of weights and the vectors they multiply are zero-padded to a multiple of this many
/// values, so that the f32 kernel runs on whole vectors with no tail (two AVX2 vectors, one
/// AVX-512 vector). No more: padding is work, and a model of dim 48 padded to 64 would do a
/// third more multiply-adds.
pub const PAD: usize = 16;

/// `n` rounded up to a multiple of [`PAD`].
pub fn padded(n: usize) -> usize {
    n.div_ceil(PAD) * PAD
}

/// A weight matrix stored by output row (`rows` outputs, each the dot product of a row with
/// the input), rows zero-padded to `stride` values.
#[derive(Debug)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
    pub data: MatData,
}

#[derive(Debug)]
pub enum MatData {
    F32(Vec<f32>),
    /// Symmetric int8 per output row: `w[r][c] ≈ q[r][c] · scales[r]`.
    I8 {
        q: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl Mat {
    /// The matrices of `parts`, each row-major `[cols × out]` as training stores them (`y = x·W`),
    /// transposed and stacked into one matrix of `Σ out` rows (q, k and v become one product).
    pub fn stack(parts: &[(&[f32], usize)], cols: usize, int8: bool) -> Mat {
        let rows: usize = parts.iter().map(|(_, out)| out).sum();
        let stride = padded(cols);
        let mut t = vec![0.0f32; rows * stride];
        let mut r0 = 0;
        for &(w, out) in parts {
            assert_eq!(w.len(), cols * out, "a tensor's length is its shape's");
            for (c, wrow) in w.chunks_exact(out).enumerate() {
                for (j, &v) in wrow.iter().enumerate() {
                    t[(r0 + j) * stride + c] = v;
                }
            }
            r0 += out;
        }
        let data = if int8 {
            let mut q = vec![0i8; rows * stride];
            let mut scales = vec![0.0f32; rows];
            for ((row, qrow), s) in t.chunks_exact(stride).zip(q.chunks_exact_mut(stride)).zip(&mut scales) {
                *s = quantize(row, qrow);
            }
            MatData::I8 { q, scales }
        } else {
            MatData::F32(t)
        };
        Mat {
            rows,
            cols,
            stride,
            data,
        }
    }

    /// Multiply-adds of one product.
    pub fn work(&self) -> usize {
        self.rows * self.cols
    }
}

/// Symmetric int8 quantization of `x` into `q`: returns the scale (`x ≈ q · scale`). An all-zero
/// vector gets scale 1. Plain arithmetic (rounding by adding and subtracting 1.5·2^23, not a
/// `round` call) so that it vectorises inside [`Quantize`].
#[inline(always)]
pub fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    debug_assert_eq!(x.len(), q.len());
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    for (qv, &v) in q.iter_mut().zip(x) {
        // |v · inv| ≤ 127 by construction; the clamp only guards rounding at the edge.
        *qv = ((v * inv + ROUND) - ROUND).clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// [`quantize`] with the CPU's vector instructions.
pub struct Quantize<'a> {
    pub x: &'a [f32],
    pub q: &'a mut [i8],
}

impl WithSimd for Quantize<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> f32 {
        quantize(self.x, self.q)
    }
}

/// The input of a matrix-vector product: f32 for f32 weights, int8 with its scale for int8 ones.
#[derive(Debug)]
pub enum Input<'a> {
    F32(&'a [f32]),
    I8(&'a [i8], f32),
}

/// `out[i] = Σ_c w[first + i][c] · x[c]` for the rows `first..first + out.len()`.
pub struct Matvec<'a> {
    pub mat: &'a Mat,
    pub first: usize,
    pub x: Input<'a>,
    pub out: &'a mut [f32],
}

impl WithSimd for Matvec<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Matvec { mat, first, x, out } = self;
        let stride = mat.stride;
        assert!(first + out.len() <= mat.rows, "rows within the matrix");
        match (&mat.data, x) {
            (MatData::F32(w), Input::F32(x)) => {
                assert_eq!(x.len(), stride, "input padded to the row stride");
                let w = &w[first * stride..(first + out.len()) * stride];
                matvec_f32(simd, w, stride, x, out);
            }
            (MatData::I8 { q, scales }, Input::I8(x, xs)) => {
                assert_eq!(x.len(), stride, "input padded to the row stride");
                let w = &q[first * stride..(first + out.len()) * stride];
                let scales = &scales[first..first + out.len()];
                for ((o, row), &s) in out.iter_mut().zip(w.chunks_exact(stride)).zip(scales) {
                    *o = dot_i8(row, x) as f32 * (s * xs);
                }
            }
            _ => panic!("the input's precision is the matrix's"),
        }
    }
}

#[inline(always)]
fn matvec_f32<S: Simd>(simd: S, w: &[f32], stride: usize, x: &[f32], out: &mut [f32]) {
    let xv = S::as_simd_f32s(x).0;
    let zero = simd.splat_f32s(0.0);
    let mut blocks = w.chunks_exact(8 * stride);
    let mut outs = out.chunks_exact_mut(8);
    // Eight rows at a time: eight independent accumulators keep the FMA units busy, and each
    // load of `x` serves eight rows.
    for (blk, o) in blocks.by_ref().zip(outs.by_ref()) {
        let r: [&[S::f32s]; 8] = std::array::from_fn(|i| S::as_simd_f32s(&blk[i * stride..(i + 1) * stride]).0);
        let mut acc = [zero; 8];
        for (c, &xc) in xv.iter().enumerate() {
            for i in 0..8 {
                acc[i] = simd.mul_add_e_f32s(xc, r[i][c], acc[i]);
            }
        }
        for i in 0..8 {
            o[i] = simd.reduce_sum_f32s(acc[i]);
        }
    }
    for (row, o) in blocks.remainder().chunks_exact(stride).zip(outs.into_remainder()) {
        let rv = S::as_simd_f32s(row).0;
        let (mut a0, mut a1) = (zero, zero);
        let mut pairs_x = xv.chunks_exact(2);
        let mut pairs_r = rv.chunks_exact(2);
        for (xc, rc) in pairs_x.by_ref().zip(pairs_r.by_ref()) {
            a0 = simd.mul_add_e_f32s(xc[0], rc[0], a0);
            a1 = simd.mul_add_e_f32s(xc[1], rc[1], a1);
        }
        for (&xc, &rc) in pairs_x.remainder().iter().zip(pairs_r.remainder()) {
            a0 = simd.mul_add_e_f32s(xc, rc, a0);
        }
        *o = simd.reduce_sum_f32s(simd.add_f32s(a0, a1));
    }
}

/// `Σ a[i]·b[i]` in 32-bit integers, over rows padded to a multiple of [`PAD`] (16) values.
/// Sixteen lanes of products of adjacent pairs, summed in 32 bits, is the shape of `pmaddwd`,
/// so LLVM vectorises it whatever the row's length (a plain reduction leaves a scalar tail of up
/// to a vector-and-a-half on short rows). The arithmetic is written wrapping because overflow
/// checks (on in debug builds) would keep the loop scalar; nothing wraps: a row of at most
/// 16,384 products of magnitude at most 128² stays far inside `i32`.
#[inline(always)]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len() % PAD, 0);
    let mut acc = [0i32; 8];
    for (ca, cb) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        let ca: &[i8; 16] = ca.try_into().expect("chunks of 16");
        let cb: &[i8; 16] = cb.try_into().expect("chunks of 16");
        for l in 0..8 {
            let p0 = i32::from(ca[2 * l]).wrapping_mul(i32::from(cb[2 * l]));
            let p1 = i32::from(ca[2 * l + 1]).wrapping_mul(i32::from(cb[2 * l + 1]));
            acc[l] = acc[l].wrapping_add(p0.wrapping_add(p1));
        }
    }
    acc.iter().fold(0i32, |s, &v| s.wrapping_add(v))
}

/// Causal attention of one position over the cache, every head: `out[h] = Σ_s softmax(q_h ·
/// k_s / √hd)_s · v_s` for `s = 0..=pos`.
///
/// Keys are cached transposed per head (`kt[h][i][s]`, `seq` positions per row) so that the
/// scores of all positions come from axpy-form loops over `s`; values are cached by position
/// (`v[s][dim]`) so that the weighted sum is axpy form over the head's lanes.
pub struct Attention<'a> {
    pub q: &'a [f32],
    pub kt: &'a [f32],
    pub v: &'a [f32],
    pub pos: usize,
    pub heads: usize,
    pub seq: usize,
    pub scores: &'a mut [f32],
    pub out: &'a mut [f32],
}

impl WithSimd for Attention<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Attention {
            q,
            kt,
            v,
            pos,
            heads,
            seq,
            scores,
            out,
        } = self;
        let dim = q.len();
        let hd = dim / heads;
        let n = pos + 1;
        let scale = 1.0 / (hd as f32).sqrt();
        for h in 0..heads {
            let sc = &mut scores[..n];
            sc.fill(0.0);
            for i in 0..hd {
                let qi = q[h * hd + i] * scale;
                let krow = &kt[(h * hd + i) * seq..][..n];
                for (s, &k) in sc.iter_mut().zip(krow) {
                    *s += qi * k;
                }
            }
            let m = sc.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            for s in sc.iter_mut() {
                *s = exp(*s - m);
            }
            let z: f32 = sc.iter().sum();
            let inv_z = 1.0 / z;
            let o = &mut out[h * hd..(h + 1) * hd];
            o.fill(0.0);
            for (s, &p) in sc.iter().enumerate() {
                let pv = p * inv_z;
                let vrow = &v[s * dim + h * hd..][..hd];
                for (ov, &vv) in o.iter_mut().zip(vrow) {
                    *ov += pv * vv;
                }
            }
        }
    }
}

/// `e^x` in plain arithmetic, so that loops of it vectorise (the library's `expf` is a call per
/// value): `x = k·ln 2 + r` with `|r| ≤ ln 2 / 2`, `e^r` by Cephes' degree-6 polynomial (about
/// 1 ulp), `2^k` built in the exponent bits. Inputs below −87 give 0 or a tiny value, above 88
/// are clamped (softmax and SiLU never need more).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a `round` call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let two_k = f32::from_bits(((k as i32 + 127) as u32) << 23);
    er * two_k
}

/// The SwiGLU of the stacked gate and up products: `h[i] = silu(g[i]) · u[i]`.
pub struct Swiglu<'a> {
    pub gate_up: &'a [f32],
    pub h: &'a mut [f32],
}

impl WithSimd for Swiglu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let (g, u) = self.gate_up.split_at(self.gate_up.len() / 2);
        for ((h, &gv), &uv) in self.h.iter_mut().zip(g).zip(u) {
            *h = gv / (1.0 + exp(-gv)) * uv;
        }
    }
}

/// Width of a packed panel of `B` in [`Gemm`]: two vectors of the widest f32 type `pulp` has.
const GEMM_MAX_NR: usize = 32;

/// `c[m×n] = a[m×k] · b[k×n]`, row-major, for the rows `row0..row0 + c.len()/n` of `a`.
///
/// Blocked: `b` is packed into panels two vectors wide (`[k][nr]`, contiguous, so a panel stays
/// in L1 while every row of `a` passes over it), and a 6×2-vector micro-kernel keeps twelve
/// independent accumulators in registers ([`micro`]). `n` must be a multiple of the panel
/// width (32 is).
pub struct Gemm<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a mut [f32],
    pub k: usize,
    pub n: usize,
}

impl WithSimd for Gemm<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Gemm { a, b, c, k, n } = self;
        let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
        let nr = 2 * lanes;
        assert!(nr <= GEMM_MAX_NR && n % nr == 0, "n a multiple of the panel width");
        let m = c.len() / n;
        assert!(a.len() >= m * k && b.len() == k * n);
        let mut panel = vec![0.0f32; k * nr];
        for j0 in (0..n).step_by(nr) {
            for (kk, prow) in panel.chunks_exact_mut(nr).enumerate() {
                prow.copy_from_slice(&b[kk * n + j0..kk * n + j0 + nr]);
            }
            let pv = S::as_simd_f32s(&panel).0;
            let mut i = 0;
            while i + 6 <= m {
                micro::<S, 6>(simd, a, k, i, pv, c, n, j0, nr);
                i += 6;
            }
            while i + 4 <= m {
                micro::<S, 4>(simd, a, k, i, pv, c, n, j0, nr);
                i += 4;
            }
            for r in i..m {
                for jj in 0..nr {
                    let mut s = 0.0f32;
                    for kk in 0..k {
                        s += a[r * k + kk] * panel[kk * nr + jj];
                    }
                    c[r * n + j0 + jj] = s;
                }
            }
        }
    }
}

/// `MR` rows of `c` times one packed panel of `b` (two vectors wide): `2·MR` accumulators in
/// registers (12 for `MR = 6`, enough to cover the fused multiply-add's latency on two ports).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn micro<S: Simd, const MR: usize>(
    simd: S,
    a: &[f32],
    k: usize,
    i: usize,
    pv: &[S::f32s],
    c: &mut [f32],
    n: usize,
    j0: usize,
    nr: usize,
) {
    let ar: [&[f32]; MR] = std::array::from_fn(|r| &a[(i + r) * k..(i + r + 1) * k]);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 2]; MR];
    for (kk, bp) in pv.chunks_exact(2).enumerate() {
        for r in 0..MR {
            let av = simd.splat_f32s(ar[r][kk]);
            acc[r][0] = simd.mul_add_e_f32s(av, bp[0], acc[r][0]);
            acc[r][1] = simd.mul_add_e_f32s(av, bp[1], acc[r][1]);
        }
    }
    for (r, accr) in acc.iter().enumerate() {
        let mut tmp = [0.0f32; GEMM_MAX_NR];
        let tv = S::as_mut_simd_f32s(&mut tmp[..nr]).0;
        tv[0] = accr[0];
        tv[1] = accr[1];
        c[(i + r) * n + j0..(i + r) * n + j0 + nr].copy_from_slice(&tmp[..nr]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matvec_is_the_product_with_the_transposed_training_matrix_at_every_width() {
        let (cols, out) = (70, 37);
        let w = pseudo(cols * out, 1);
        let mat = Mat::stack(&[(&w, out)], cols, false);
        let mut x = pseudo(cols, 2);
        x.resize(mat.stride, 0.0);
        let expect: Vec<f64> = (0..out)
            .map(|j| (0..cols).map(|c| f64::from(x[c]) * f64::from(w[c * out + j])).sum())
            .collect();
        let mut y = vec![0.0; out];
        pulp::Arch::new().dispatch(Matvec {
            mat: &mat,
            first: 0,
            x: Input::F32(&x),
            out: &mut y,
        });
        let mut y_scalar = vec![0.0; out];
        Matvec {
            mat: &mat,
            first: 0,
            x: Input::F32(&x),
            out: &mut y_scalar,
        }
        .with_simd(pulp::Scalar::new());
        for j in 0..out {
            assert!((f64::from(y[j]) - expect[j]).abs() < 1e-4, "row {j}");
            assert!((f64::from(y_scalar[j]) - expect[j]).abs() < 1e-4, "row {j}");
        }
    }

    #[test]
    fn int8_dot_is_exact_and_int8_matvec_is_close() {
        let a: Vec<i8> = (0..96).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..96).map(|i| (i * 91 % 255 - 127) as i8).collect();
        let exact: i32 = a.iter().zip(&b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
        assert_eq!(dot_i8(&a, &b), exact);
        let (cols, out) = (96, 20);
        let w = pseudo(cols * out, 3);
        let mat = Mat::stack(&[(&w, out)], cols, true);
        let mut x = pseudo(cols, 4);
        x.resize(mat.stride, 0.0);
        let mut xq = vec![0i8; mat.stride];
        let xs = quantize(&x, &mut xq);
        let mut y = vec![0.0; out];
        pulp::Arch::new().dispatch(Matvec {
            mat: &mat,
            first: 0,
            x: Input::I8(&xq, xs),
            out: &mut y,
        });
        for j in 0..out {
            let e: f32 = (0..cols).map(|c| x[c] * w[c * out + j]).sum();
            assert!(
                (y[j] - e).abs() < 0.05 * (cols as f32).sqrt() * 0.2,
                "row {j}: {} vs {e}",
                y[j]
            );
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_library_s() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            assert!((a - b).abs() <= 2.5e-7 * b, "exp({x}): {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn gemm_agrees_with_a_plain_product() {
        let (m, k, n) = (10, 24, 64);
        let a = pseudo(m * k, 5);
        let b = pseudo(k * n, 6);
        let mut c = vec![0.0; m * n];
        pulp::Arch::new().dispatch(Gemm {
            a: &a,
            b: &b,
            c: &mut c,
            k,
            n,
        });
        for i in 0..m {
            for j in 0..n {
                let e: f32 = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
                assert!((c[i * n + j] - e).abs() < 1e-4);
            }
        }
    }
}
