//! The transforms of Winograd F(4x4, 3x3) (interpolation points 0, ±1, ±2 and infinity): 36
//! products per 16 outputs, 4x fewer multiply-adds than im2col against F(2x2, 3x3)'s 2.25x
//! (`f2x2.rs`). The block driver (`mod.rs`) uses them for forward, input gradient and kernel
//! gradient on maps with many 4x4 tiles.
//!
//! Every transform runs along a whole tile row at once: the columns of a tile row are split by
//! phase (`column mod 4`), so tile `k`'s six patch columns are phases 0..4 at `k` and phases 0, 1 at
//! `k + 1`, and each step is an element-wise loop over tiles that LLVM vectorises.

use super::tiling::{OutPtr, Tiling};

/// Output tile size.
pub(super) const M: usize = 4;

/// Transformed positions per tile (6 x 6), hence GEMMs per block.
pub(super) const PLANES: usize = 36;

/// `Bᵀ x` for the six values of one patch column or row.
#[inline(always)]
fn bt([a, b, c, d, e, f]: [f32; 6]) -> [f32; 6] {
    [
        4.0 * a - 5.0 * c + e,
        -4.0 * b - 4.0 * c + d + e,
        4.0 * b - 4.0 * c - d + e,
        -2.0 * b - c + 2.0 * d + e,
        2.0 * b - c - 2.0 * d + e,
        4.0 * b - 5.0 * d + f,
    ]
}

/// `Aᵀ x`: six transformed values back to four outputs.
#[inline(always)]
fn at([a, b, c, d, e, f]: [f32; 6]) -> [f32; 4] {
    let (u1, u2, u3, u4) = (b + c, b - c, d + e, d - e);
    [a + u1 + u3, u2 + 2.0 * u4, u1 + 4.0 * u3, u2 + 8.0 * u4 + f]
}

/// `A x`: four output-gradient values to six transformed ones (the transpose of [`at`]).
#[inline(always)]
fn a([p, q, r, s]: [f32; 4]) -> [f32; 6] {
    [
        p,
        p + q + r + s,
        p - q + r - s,
        p + 2.0 * q + 4.0 * r + 8.0 * s,
        p - 2.0 * q + 4.0 * r - 8.0 * s,
        s,
    ]
}

/// `Gᵀ x`: six transformed kernel-gradient values back to three taps.
#[inline(always)]
fn gt([a, b, c, d, e, f]: [f32; 6]) -> [f32; 3] {
    [
        a / 4.0 - (b + c) / 6.0 + (d + e) / 24.0,
        (c - b) / 6.0 + (d - e) / 12.0,
        -(b + c) / 6.0 + (d + e) / 6.0 + f,
    ]
}

/// `G x` for one kernel column or row.
#[inline(always)]
fn g([a, b, c]: [f32; 3]) -> [f32; 6] {
    [
        a / 4.0,
        -(a + b + c) / 6.0,
        -(a - b + c) / 6.0,
        a / 24.0 + b / 12.0 + c / 6.0,
        a / 24.0 - b / 12.0 + c / 6.0,
        c,
    ]
}

/// `dst[j][k] = f(src[0][k], .., src[S - 1][k])[j]` for `k < len`. Eight tiles at a time through
/// local arrays, which LLVM turns into vector arithmetic and contiguous stores.
#[inline(always)]
fn map<const S: usize, const R: usize>(
    src: [&[f32]; S],
    dst: [&mut [f32]; R],
    len: usize,
    f: impl Fn([f32; S]) -> [f32; R],
) {
    const L: usize = 8;
    let src = src.map(|s| &s[..len]);
    let mut dst = dst.map(|d| &mut d[..len]);
    let full = len / L * L;
    for k0 in (0..full).step_by(L) {
        let x: [[f32; L]; S] = std::array::from_fn(|q| {
            let mut lane = [0f32; L];
            lane.copy_from_slice(&src[q][k0..k0 + L]);
            lane
        });
        let mut y = [[0f32; L]; R];
        for l in 0..L {
            let v = f(std::array::from_fn(|q| x[q][l]));
            for j in 0..R {
                y[j][l] = v[j];
            }
        }
        for (d, y) in dst.iter_mut().zip(&y) {
            d[k0..k0 + L].copy_from_slice(y);
        }
    }
    for k in full..len {
        let y = f(std::array::from_fn(|q| src[q][k]));
        for (d, y) in dst.iter_mut().zip(y) {
            d[k] = y;
        }
    }
}

/// `R` disjoint windows of `len` floats at ascending `offsets` of `buf`.
#[inline(always)]
fn windows<const R: usize>(buf: &mut [f32], offsets: [usize; R], len: usize) -> [&mut [f32]; R] {
    let mut rest = buf;
    let mut at = 0;
    let mut out: [&mut [f32]; R] = std::array::from_fn(|_| <&mut [f32]>::default());
    for (o, slot) in offsets.into_iter().zip(out.iter_mut()) {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(o - at);
        let (head, tail) = tail.split_at_mut(len);
        *slot = head;
        rest = tail;
        at = o + len;
    }
    out
}

/// `U[co][ξ][ci] = (G w[co][ci] Gᵀ)[ξ]` for an OIHW 3x3 kernel: 36 rows of `c_in` per output
/// channel, the layout of F(2x2)'s kernel transform with 36 planes.
pub(super) fn transform_kernel(w: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut u = vec![0f32; PLANES * c_out * c_in];
    u.par_chunks_mut(PLANES * c_in)
        .zip(w.par_chunks(c_in * 9))
        .for_each(|(rows, wk)| {
            for (ci, k) in wk.chunks_exact(9).enumerate() {
                // G k: six rows of three, one kernel column at a time; then G along each row.
                let cols: [[f32; 6]; 3] = std::array::from_fn(|c| g([k[c], k[3 + c], k[6 + c]]));
                for i in 0..6 {
                    for (j, v) in g([cols[0][i], cols[1][i], cols[2][i]])
                        .into_iter()
                        .enumerate()
                    {
                        rows[(i * 6 + j) * c_in + ci] = v;
                    }
                }
            }
        });
    u
}

/// `Gᵀ S G`: the 3x3 kernel gradient `out` (row-major) from the 36 summed products
/// `S[ξ] = at(ξ)` of one (output channel, input channel) pair.
#[inline(always)]
pub(super) fn kernel_taps(at: impl Fn(usize) -> f32, out: &mut [f32]) {
    // Gᵀ down the columns of the 6x6 S, then along the three rows.
    let cols: [[f32; 3]; 6] = std::array::from_fn(|j| gt(std::array::from_fn(|i| at(i * 6 + j))));
    for k in 0..3 {
        let r = gt(std::array::from_fn(|j| cols[j][k]));
        out[k * 3..k * 3 + 3].copy_from_slice(&r);
    }
}

/// `V[ξ][c][tile] = (Bᵀ d B)[ξ]` for the 6x6 patches (rows `4ty - 1 ..`, zero outside the image)
/// of the tiles in global tile rows `r0..r1` of the `c`-channel maps `x` (`b x c x h x w`); `v`
/// holds 36 planes of `c x nt`, `nt = (r1 - r0) * tw`.
///
/// Per channel, the block's tile rows are laid side by side (`n = tw + 1` slots each, one spare),
/// so every transform step is one long element-wise loop over the whole block.
#[inline(always)]
pub(super) fn input_transform(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    tl: &Tiling,
    (r0, r1): (usize, usize),
    v: &mut [f32],
) {
    let (th, tw) = (tl.th, tl.tw);
    let rows = r1 - r0;
    let nt = rows * tw;
    let n = tw + 1;
    // d[i][p][row * n + k]: patch row i, phase p (padded column 4k + p, input column 4k + p - 1).
    let plen = rows * n;
    let len = M * plen;
    let mut padded = vec![0f32; M * n];
    let mut d = vec![0f32; 6 * len];
    let mut t = vec![0f32; 6 * len];
    let mut o = vec![0f32; 6 * plen];
    for ch in 0..c {
        for r in r0..r1 {
            let (b, ty) = (r / th, r % th);
            let xc = &x[(b * c + ch) * h * w..][..h * w];
            let at = (r - r0) * n;
            for i in 0..6 {
                let iy = (M * ty + i) as isize - 1;
                let di = &mut d[i * len..][..len];
                if iy >= 0 && (iy as usize) < h {
                    // Only 1..=w is ever written, so the borders stay zero.
                    padded[1..1 + w].copy_from_slice(&xc[iy as usize * w..][..w]);
                    for (k, cols) in padded.chunks_exact(M).enumerate() {
                        for (p, &val) in cols.iter().enumerate() {
                            di[p * plen + at + k] = val;
                        }
                    }
                } else {
                    for p in 0..M {
                        di[p * plen + at..][..n].fill(0.0);
                    }
                }
            }
        }
        // Bᵀ down the columns, over the whole block.
        let src: [&[f32]; 6] = std::array::from_fn(|i| &d[i * len..][..len]);
        map(
            src,
            windows(&mut t, [0, 1, 2, 3, 4, 5].map(|i| i * len), len),
            len,
            bt,
        );
        // B along the rows: tile k's columns are phases 0..4 at k and phases 0, 1 at k + 1.
        for i in 0..6 {
            let ti = &t[i * len..][..len];
            let cols = [0, plen, 2 * plen, 3 * plen, 1, plen + 1].map(|s| &ti[s..]);
            let span = plen - 1;
            map(
                cols,
                windows(&mut o, [0, 1, 2, 3, 4, 5].map(|j| j * plen), span),
                span,
                bt,
            );
            // Drop each tile row's spare slot.
            for j in 0..6 {
                let plane = &mut v[((i * 6 + j) * c + ch) * nt..][..nt];
                for (dst, src) in plane.chunks_exact_mut(tw).zip(o[j * plen..].chunks(n)) {
                    dst.copy_from_slice(&src[..tw]);
                }
            }
        }
    }
}

/// `Ĝ[ξ][c][tile] = (A g Aᵀ)[ξ]` for the 4x4 tiles `g` (zero outside the map) of the output
/// gradient `grad` (`b x c x h x w`) in global tile rows `r0..r1`; 36 planes of `c x nt`.
#[inline(always)]
pub(super) fn grad_transform(
    grad: &[f32],
    (c, h, w): (usize, usize, usize),
    tl: &Tiling,
    (r0, r1): (usize, usize),
    gt: &mut [f32],
) {
    let (th, tw) = (tl.th, tl.tw);
    let nt = (r1 - r0) * tw;
    // g[a][p][tile]: row a of each tile, column phase p; q[i][p] = (A g)[i][p].
    let mut row = vec![0f32; M * tw];
    let mut g = vec![0f32; M * M * nt];
    let mut q = vec![0f32; 6 * M * nt];
    for ch in 0..c {
        for r in r0..r1 {
            let (b, ty) = (r / th, r % th);
            let gc = &grad[(b * c + ch) * h * w..][..h * w];
            let base = (r - r0) * tw;
            for aa in 0..M {
                let y = M * ty + aa;
                if y < h {
                    // Only ..w is ever written, so columns past the map stay zero.
                    row[..w].copy_from_slice(&gc[y * w..][..w]);
                } else {
                    row.fill(0.0);
                }
                for (k, cols) in row.chunks_exact(M).enumerate() {
                    for (p, &val) in cols.iter().enumerate() {
                        g[(aa * M + p) * nt + base + k] = val;
                    }
                }
            }
        }
        for p in 0..M {
            let src = [0, 1, 2, 3].map(|aa| &g[(aa * M + p) * nt..][..nt]);
            let dst = windows(&mut q, [0, 1, 2, 3, 4, 5].map(|i| (i * M + p) * nt), nt);
            map(src, dst, nt, a);
        }
        for i in 0..6 {
            let src = [0, 1, 2, 3].map(|p| &q[(i * M + p) * nt..][..nt]);
            let dst = windows(
                gt,
                [0, 1, 2, 3, 4, 5].map(|j| ((i * 6 + j) * c + ch) * nt),
                nt,
            );
            map(src, dst, nt, a);
        }
    }
}

/// Writes `Aᵀ M A` (4x4 per tile, clipped at the map's border) of the 36 planes `mp` (`c x nt`)
/// into the output maps `b x c x h x w` behind `out`.
///
/// # Safety
/// `out` must point to `out.1 >= b * c * h * w` floats, and no other thread may write the output
/// rows of tile rows `r0..r1` meanwhile.
#[inline(always)]
pub(super) unsafe fn output_transform(
    mp: &[f32],
    (c, h, w): (usize, usize, usize),
    tl: &Tiling,
    (r0, r1): (usize, usize),
    out: OutPtr,
) {
    let (th, tw) = (tl.th, tl.tw);
    let nt = (r1 - r0) * tw;
    // s[a][j] = (Aᵀ M)[a][j], then y[a][p] = (s[a] A)[p], each over all the block's tiles.
    let mut s = vec![0f32; 4 * 6 * nt];
    let mut y = vec![0f32; 4 * 4 * nt];
    let mut row = vec![0f32; M * tw];
    for ch in 0..c {
        let plane = |xi: usize| &mp[(xi * c + ch) * nt..][..nt];
        for j in 0..6 {
            let src = [0, 1, 2, 3, 4, 5].map(|i| plane(i * 6 + j));
            let dst = windows(&mut s, [0, 1, 2, 3].map(|a| (a * 6 + j) * nt), nt);
            map(src, dst, nt, at);
        }
        for a in 0..M {
            let src = [0, 1, 2, 3, 4, 5].map(|j| &s[(a * 6 + j) * nt..][..nt]);
            let dst = windows(&mut y, [0, 1, 2, 3].map(|p| (a * 4 + p) * nt), nt);
            map(src, dst, nt, at);
        }
        for r in r0..r1 {
            let (b, ty) = (r / th, r % th);
            let base = (r - r0) * tw;
            for a in 0..M {
                let yy = M * ty + a;
                if yy >= h {
                    break;
                }
                // Interleave the phases back into columns 4k + p.
                for (k, cols) in row.chunks_exact_mut(M).enumerate() {
                    for (p, col) in cols.iter_mut().enumerate() {
                        *col = y[(a * 4 + p) * nt + base + k];
                    }
                }
                let at = ((b * c + ch) * h + yy) * w;
                debug_assert!(at + w <= out.1);
                // SAFETY: `at + w <= b * c * h * w <= out.1`, and row `yy` of image `b` belongs to
                // tile row `r`, which only this block writes.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add(at), w) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile in 1-D: `Aᵀ [(G k) ⊙ (Bᵀ d)]` is the correlation of six inputs with three taps.
    #[test]
    fn one_dimensional_identity_holds() {
        let d = [0.3f32, -1.2, 2.5, 0.7, -0.4, 1.9];
        let k = [0.8f32, -0.35, 1.6];
        let (gk, bd) = (g(k), bt(d));
        let y = at(std::array::from_fn(|i| gk[i] * bd[i]));
        for (o, y) in y.iter().enumerate() {
            let direct: f32 = (0..3).map(|r| k[r] * d[o + r]).sum();
            assert!((y - direct).abs() < 1e-5, "output {o}: {y} vs {direct}");
        }
    }

    /// The kernel-gradient identity in 1-D: `Gᵀ [(A dy) ⊙ (Bᵀ d)]` is the correlation of the
    /// six inputs with the four output gradients, for each of the three taps.
    #[test]
    fn kernel_gradient_identity_holds() {
        let d = [0.3f32, -1.2, 2.5, 0.7, -0.4, 1.9];
        let dy = [0.5f32, -0.25, 1.5, 0.75];
        let (ady, bd) = (a(dy), bt(d));
        let dk = gt(std::array::from_fn(|i| ady[i] * bd[i]));
        for (r, dk) in dk.iter().enumerate() {
            let direct: f32 = (0..4).map(|o| dy[o] * d[o + r]).sum();
            assert!((dk - direct).abs() < 1e-5, "tap {r}: {dk} vs {direct}");
        }
    }

    #[test]
    fn windows_are_the_asked_disjoint_ranges() {
        let mut buf: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let [a, b] = windows(&mut buf, [2, 10], 3);
        assert_eq!((&*a, &*b), (&[2.0, 3.0, 4.0][..], &[10.0, 11.0, 12.0][..]));
    }
}
