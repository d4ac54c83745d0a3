//! The transforms of Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): 16 products per 4 outputs, 2.25x fewer multiply-adds than im2col. The
//! block driver (`mod.rs`) runs them for forward, input gradient and kernel gradient on the maps
//! that do not take F(4x4) tiles (`f4x4.rs`).
//!
//! With `Bᵀ`, `G`, `Aᵀ` the F(2, 3) matrices, one 2x2 output tile is
//! `Y = Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A` for the 4x4 input patch `d` around it, and the kernel
//! gradient of a tile sum is `Gᵀ [Σ_tiles (A gradY Aᵀ) ⊙ (Bᵀ d B)] G`.

use rayon::prelude::*;

use super::tiling::{OutPtr, Tiling};

/// Output tile size.
pub(super) const M: usize = 2;

/// Transformed positions per tile (4 x 4), hence GEMMs per block.
pub(super) const PLANES: usize = 16;

/// `U[co][ξ][ci] = (G w[co][ci] Gᵀ)[ξ]` for an OIHW 3x3 kernel: for each output channel, 16 rows
/// of `c_in` values, so plane `ξ` is the `c_out x c_in` matrix at offset `ξ * c_in` with row
/// stride `16 * c_in` (the planes the driver multiplies).
pub(super) fn transform_kernel(w: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut u = vec![0f32; PLANES * c_out * c_in];
    u.par_chunks_mut(PLANES * c_in)
        .zip(w.par_chunks(c_in * 9))
        .for_each(|(rows, wk)| {
            for (ci, k) in wk.chunks_exact(9).enumerate() {
                let mut t = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (a0, a1, a2) = (k[j], k[3 + j], k[6 + j]);
                    t[0][j] = a0;
                    t[1][j] = 0.5 * (a0 + a1 + a2);
                    t[2][j] = 0.5 * (a0 - a1 + a2);
                    t[3][j] = a2;
                }
                for (i, r) in t.iter().enumerate() {
                    let v = [
                        r[0],
                        0.5 * (r[0] + r[1] + r[2]),
                        0.5 * (r[0] - r[1] + r[2]),
                        r[2],
                    ];
                    for (j, v) in v.into_iter().enumerate() {
                        rows[(i * 4 + j) * c_in + ci] = v;
                    }
                }
            }
        });
    u
}

/// `Gᵀ S G`: the 3x3 kernel gradient `out` (row-major) from the 16 summed products
/// `S[ξ] = at(ξ)` of one (output channel, input channel) pair.
#[inline(always)]
pub(super) fn kernel_taps(at: impl Fn(usize) -> f32, out: &mut [f32]) {
    let sv: [f32; PLANES] = std::array::from_fn(at);
    // Gᵀ S: rows S0 + (S1 + S2)/2, (S1 - S2)/2, (S1 + S2)/2 + S3.
    let r: [[f32; 4]; 3] = std::array::from_fn(|k| {
        std::array::from_fn(|j| {
            let (s0, s1, s2, s3) = (sv[j], sv[4 + j], sv[8 + j], sv[12 + j]);
            match k {
                0 => s0 + 0.5 * (s1 + s2),
                1 => 0.5 * (s1 - s2),
                _ => 0.5 * (s1 + s2) + s3,
            }
        })
    });
    for (k, a) in r.iter().enumerate() {
        out[k * 3] = a[0] + 0.5 * (a[1] + a[2]);
        out[k * 3 + 1] = 0.5 * (a[1] - a[2]);
        out[k * 3 + 2] = 0.5 * (a[1] + a[2]) + a[3];
    }
}

/// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for the 4x4 patches (rows `2ty-1..2ty+3`, zero outside the image) of
/// the tiles in global tile rows `r0..r1` of the `c`-channel maps `x` (`b x c x h x w`).
/// `v` holds 16 planes of `c x nt`, `nt = (r1 - r0) * tw`.
///
/// Patch columns `2tx-1..2tx+3` are read as the even and odd columns of the padded row, split
/// once per row, so that every step below is an element-wise loop over tiles (vectorised).
#[inline(always)]
pub(super) fn input_transform(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    t: &Tiling,
    (r0, r1): (usize, usize),
    v: &mut [f32],
) {
    let (th, tw) = (t.th, t.tw);
    let nt = (r1 - r0) * tw;
    // Padded input column `j - 1` lands in `even[j / 2]` or `odd[j / 2]`; tile `tx` reads padded
    // columns 2tx..2tx+4, that is even[tx], odd[tx], even[tx + 1], odd[tx + 1].
    let n = tw + 1;
    let mut even = vec![0f32; 4 * n];
    let mut odd = vec![0f32; 4 * n];
    let mut padded = vec![0f32; 2 * n];
    for ch in 0..c {
        for r in r0..r1 {
            let (b, ty) = (r / th, r % th);
            let xc = &x[(b * c + ch) * h * w..][..h * w];
            for (i, (e, o)) in even
                .chunks_exact_mut(n)
                .zip(odd.chunks_exact_mut(n))
                .enumerate()
            {
                let iy = (2 * ty + i) as isize - 1;
                if iy >= 0 && (iy as usize) < h {
                    // Input column x sits at padded column x + 1; the rest stays zero.
                    padded[1..1 + w].copy_from_slice(&xc[iy as usize * w..][..w]);
                    for ((e, o), pair) in e.iter_mut().zip(o.iter_mut()).zip(padded.chunks_exact(2))
                    {
                        *e = pair[0];
                        *o = pair[1];
                    }
                } else {
                    e.fill(0.0);
                    o.fill(0.0);
                }
            }
            // Bᵀ down the columns, in place: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
            for buf in [&mut even, &mut odd] {
                let (d0, rest) = buf.split_at_mut(n);
                let (d1, rest) = rest.split_at_mut(n);
                let (d2, d3) = rest.split_at_mut(n);
                for (((a, b), c), d) in d0.iter_mut().zip(d1.iter_mut()).zip(d2.iter_mut()).zip(d3)
                {
                    let (x0, x1, x2, x3) = (*a, *b, *c, *d);
                    *a = x0 - x2;
                    *b = x1 + x2;
                    *c = x2 - x1;
                    *d = x1 - x3;
                }
            }
            // B along each row: (e0 - e1, o0 + e1, e1 - o0, o0 - o1) per tile.
            let base = (r - r0) * tw;
            for i in 0..4 {
                let (e, o) = (&even[i * n..][..n], &odd[i * n..][..n]);
                let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
                let at = |j: usize| ((i * 4 + j) * c + ch) * nt + base;
                let (v0, rest) = v[at(0)..].split_at_mut(tw);
                let _ = rest;
                for k in 0..tw {
                    v0[k] = e0[k] - e1[k];
                }
                let v1 = &mut v[at(1)..][..tw];
                for k in 0..tw {
                    v1[k] = o0[k] + e1[k];
                }
                let v2 = &mut v[at(2)..][..tw];
                for k in 0..tw {
                    v2[k] = e1[k] - o0[k];
                }
                let v3 = &mut v[at(3)..][..tw];
                for k in 0..tw {
                    v3[k] = o0[k] - o1[k];
                }
            }
        }
    }
}

/// `Ĝ[ξ][c][t] = (A g Aᵀ)[ξ]` for the 2x2 tiles `g` (zero outside the map) of the output gradient
/// `grad` (`b x c x h x w`) in global tile rows `r0..r1`; 16 planes of `c x nt`.
#[inline(always)]
pub(super) fn grad_transform(
    grad: &[f32],
    (c, h, w): (usize, usize, usize),
    t: &Tiling,
    (r0, r1): (usize, usize),
    gt: &mut [f32],
) {
    let (th, tw) = (t.th, t.tw);
    let nt = (r1 - r0) * tw;
    let wp = 2 * tw;
    let mut g = vec![0f32; 2 * wp];
    for ch in 0..c {
        for r in r0..r1 {
            let (b, ty) = (r / th, r % th);
            let gc = &grad[(b * c + ch) * h * w..][..h * w];
            for (i, row) in g.chunks_exact_mut(wp).enumerate() {
                let y = 2 * ty + i;
                row.fill(0.0);
                if y < h {
                    row[..w].copy_from_slice(&gc[y * w..][..w]);
                }
            }
            let (g0, g1) = g.split_at(wp);
            // Rows of A g: g0, g0 + g1, g0 - g1, -g1; then the same along each row.
            let base = (r - r0) * tw;
            for i in 0..4 {
                let plane = |j: usize| (((i * 4 + j) * c) + ch) * nt + base;
                let (p0, p1, p2, p3) = (plane(0), plane(1), plane(2), plane(3));
                for tx in 0..tw {
                    let (a, b) = (2 * tx, 2 * tx + 1);
                    let (q0, q1) = match i {
                        0 => (g0[a], g0[b]),
                        1 => (g0[a] + g1[a], g0[b] + g1[b]),
                        2 => (g0[a] - g1[a], g0[b] - g1[b]),
                        _ => (-g1[a], -g1[b]),
                    };
                    gt[p0 + tx] = q0;
                    gt[p1 + tx] = q0 + q1;
                    gt[p2 + tx] = q0 - q1;
                    gt[p3 + tx] = -q1;
                }
            }
        }
    }
}

/// Writes `Aᵀ M A` (2x2 per tile, clipped at odd borders) of the 16 planes `m` (`c x nt`) into the
/// output maps `b x c x h x w` behind `out`.
///
/// # Safety
/// `out` must point to `out.1 >= b * c * h * w` floats, and no other thread may write the output
/// rows of tile rows `r0..r1` meanwhile.
#[inline(always)]
pub(super) unsafe fn output_transform(
    m: &[f32],
    (c, h, w): (usize, usize, usize),
    t: &Tiling,
    (r0, r1): (usize, usize),
    out: OutPtr,
) {
    let (th, tw) = (t.th, t.tw);
    let nt = (r1 - r0) * tw;
    // s[j] = rows 0 + 1 + 2 of column j of M, s[4 + j] = rows 1 - 2 - 3 (Aᵀ down the columns).
    let mut s = vec![0f32; 8 * tw];
    let mut y = vec![0f32; 2 * 2 * tw];
    for ch in 0..c {
        for r in r0..r1 {
            let (b, ty) = (r / th, r % th);
            let base = (r - r0) * tw;
            let p = |xi: usize| &m[(xi * c + ch) * nt + base..][..tw];
            for (j, sj) in s.chunks_exact_mut(tw).enumerate() {
                if j < 4 {
                    add3(sj, p(j), p(4 + j), p(8 + j));
                } else {
                    sub3(sj, p(j), p(4 + j), p(8 + j));
                }
            }
            // A along each row, interleaving the two outputs of each tile.
            let (y0, y1) = y.split_at_mut(2 * tw);
            let sj = |j: usize| &s[j * tw..][..tw];
            interleave_tiles(y0, sj(0), sj(1), sj(2), sj(3));
            interleave_tiles(y1, sj(4), sj(5), sj(6), sj(7));
            for (i, row) in [&*y0, &*y1].into_iter().enumerate() {
                let yy = 2 * ty + i;
                if yy < h {
                    let at = ((b * c + ch) * h + yy) * w;
                    debug_assert!(at + w <= out.1);
                    // SAFETY: `at + w <= b * c * h * w <= out.1`, and row `yy` of image `b`
                    // belongs to tile row `r`, which only this block writes.
                    unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add(at), w) };
                }
            }
        }
    }
}

/// `d = a + b + c`, element-wise.
#[inline(always)]
fn add3(d: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((d, a), b), c) in d.iter_mut().zip(a).zip(b).zip(c) {
        *d = a + b + c;
    }
}

/// `d = a - b - c`, element-wise.
#[inline(always)]
fn sub3(d: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((d, a), b), c) in d.iter_mut().zip(a).zip(b).zip(c) {
        *d = a - b - c;
    }
}

/// `y[2k] = s0 + s1 + s2`, `y[2k + 1] = s1 - s2 - s3` at tile `k`: `A` applied to one row of `M`.
#[inline(always)]
fn interleave_tiles(y: &mut [f32], s0: &[f32], s1: &[f32], s2: &[f32], s3: &[f32]) {
    for ((((y, a), b), c), d) in y.chunks_exact_mut(2).zip(s0).zip(s1).zip(s2).zip(s3) {
        y[0] = a + b + c;
        y[1] = b - c - d;
    }
}
