//! Winograd F(2x2, 3x3) for the 3x3, stride-1, 'same' convolutions that make up most of YOLOv3's
//! arithmetic: forward, input gradient and kernel gradient each become 16 GEMMs on transformed
//! tiles with 2.25x fewer multiply-adds than im2col (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016).
//!
//! With `Bᵀ`, `G`, `Aᵀ` the F(2, 3) matrices, one 2x2 output tile is
//! `Y = Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A` for the 4x4 input patch `d` around it. Summed over input
//! channels, the element-wise product becomes, for each of the 16 positions `ξ`, a matrix product
//! `M[ξ] (c_out x tiles) = U[ξ] (c_out x c_in) · V[ξ] (c_in x tiles)`.
//!
//! * The input gradient of a 3x3 stride-1 pad-1 convolution is the same convolution of the output
//!   gradient with the kernel flipped spatially and its two channel axes swapped.
//! * The kernel gradient follows from the same identity read as a trilinear form
//!   `Σ gradY · Y = Σ_ξ (A gradY Aᵀ)_ξ (G w Gᵀ)_ξ (Bᵀ d B)_ξ`: its derivative in `w` is
//!   `Gᵀ [Σ_tiles (A gradY Aᵀ) ⊙ (Bᵀ d B)] G`, again 16 GEMMs, now summing over tiles.
//!
//! All three switch to F(4x4, 3x3) (`winograd4.rs`: 36 GEMMs per 16 outputs, 4x fewer
//! multiply-adds) when the batch has at least [`MIN_TILES`] 4x4 tiles and they waste little on
//! padding (see `four_by_four`); this file holds the block driver both tile sizes share.
//!
//! Tiles are processed in blocks of whole tile rows (across the batch), one block per rayon task:
//! transform the block's input, run its GEMMs on this thread, transform back. Every tile row
//! belongs to exactly one block, so blocks write disjoint output rows.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::conv::ConvGeom;
use super::gemm::{sgemm_seq, MatMut, MatRef};
use super::scratch::with_scratch;
use super::simd::with_avx2;
use super::winograd4;

/// The 16 positions of a transformed 4x4 tile.
const XI: usize = 16;

/// Convolutions with fewer channels than this (on either side) stay on im2col: their GEMMs are too
/// thin for the transforms to pay off (YOLOv3's first layers at 416x416).
const MIN_CHANNELS: usize = 64;

/// Target size of one block's transformed input, in floats (a few MB, so that a block's
/// transform, GEMMs and inverse transform stay in the outer caches).
const BLOCK_FLOATS: usize = 1 << 19;

/// Fewest tiles per block for forward and input gradient (the GEMMs' `n`). It is also the fewest
/// tiles over the batch a convolution needs to take this path at all: below it (YOLOv3's 13x13
/// layers under batch 6) the 16 thin products lose to one im2col product.
const MIN_TILES: usize = 256;

/// Fewest tiles per block for the kernel gradient, where tiles are the GEMMs' `k` and each block
/// accumulates into 16 `c_out x c_in` planes.
const MIN_TILES_KERNEL_GRAD: usize = 1024;

/// Whether `g` is a convolution this module computes: 3x3, stride 1, padding 1, and wide enough.
/// Setting `YOLO_NO_WINOGRAD=1` in the environment turns the Winograd path off (for A/B
/// measurements against im2col in one run).
pub(crate) fn applies(g: &ConvGeom) -> bool {
    shape_fits(g)
        && g.c_in.min(g.c_out) >= MIN_CHANNELS
        && g.b * g.h.div_ceil(2) * g.w.div_ceil(2) >= MIN_TILES
        && enabled()
}

/// 3x3, stride 1, padding 1: the shapes the transforms are written for, whatever the width.
pub(crate) fn shape_fits(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1
}

/// 0: not decided yet (read `YOLO_NO_WINOGRAD` on first use), 1: on, 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("YOLO_NO_WINOGRAD").map_or(true, |v| v.is_empty() || v == "0");
            set_enabled(on);
            on
        }
    }
}

/// Turns the Winograd path on or off for the whole process (see [`applies`]).
pub(crate) fn set_enabled(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// How the tiles of a `b x h x w` map are cut into blocks of whole tile rows.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiling {
    /// Tile rows and columns per image: `ceil(h / m)`, `ceil(w / m)` for output tiles of `m`.
    pub(super) th: usize,
    pub(super) tw: usize,
    /// Tile rows per block (the last block may have fewer).
    rows: usize,
    /// Total tile rows over the batch.
    total_rows: usize,
}

impl Tiling {
    /// Blocks of about [`BLOCK_FLOATS`] transformed values but at least [`MIN_TILES`] tiles (the
    /// GEMMs' inner size; thinner blocks re-read the transformed kernel too often), in a multiple
    /// of the thread count for balance when there are enough tile rows.
    fn new(
        (m, planes): (usize, usize),
        (b, h, w): (usize, usize, usize),
        widest: usize,
        min_tiles: usize,
    ) -> Tiling {
        let (th, tw) = (h.div_ceil(m), w.div_ceil(m));
        let total_rows = b * th;
        let threads = rayon::current_num_threads().max(1);
        let tiles = (BLOCK_FLOATS / (planes * widest.max(1))).max(min_tiles);
        let max_rows = tiles.div_ceil(tw.max(1)).max(1);
        let blocks = total_rows.div_ceil(max_rows).div_ceil(threads) * threads;
        let rows = total_rows.div_ceil(blocks.min(total_rows).max(1)).max(1);
        Tiling {
            th,
            tw,
            rows,
            total_rows,
        }
    }

    fn blocks(&self) -> usize {
        self.total_rows.div_ceil(self.rows)
    }

    /// Global tile rows `r0..r1` of block `i`.
    fn block(&self, i: usize) -> (usize, usize) {
        let r0 = i * self.rows;
        (r0, (r0 + self.rows).min(self.total_rows))
    }
}

/// `U[co][ξ][ci] = (G w[co][ci] Gᵀ)[ξ]` for an OIHW 3x3 kernel: for each output channel, 16 rows
/// of `c_in` values, so plane `ξ` is the `c_out x c_in` matrix at offset `ξ * c_in` with row
/// stride `16 * c_in` (see [`Kernel::plane`]).
fn transform_kernel(w: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut u = vec![0f32; XI * c_out * c_in];
    u.par_chunks_mut(XI * c_in)
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

/// A transformed kernel ([`transform_kernel`]'s layout, or `winograd4`'s) and the sizes of its
/// planes.
struct Kernel {
    u: Vec<f32>,
    /// Transformed positions: 16 for F(2x2), 36 for F(4x4).
    planes: usize,
    /// Rows and columns of each plane: the convolution's output and input channels.
    c_out: usize,
    c_in: usize,
}

impl Kernel {
    /// `w` (`c_out x c_in x 3 x 3`) transformed for F(4x4) tiles if `four`, else F(2x2).
    fn new(w: &[f32], c_out: usize, c_in: usize, four: bool) -> Kernel {
        let (u, planes) = if four {
            (
                winograd4::transform_kernel(w, c_out, c_in),
                winograd4::PLANES,
            )
        } else {
            (transform_kernel(w, c_out, c_in), XI)
        };
        Kernel {
            u,
            planes,
            c_out,
            c_in,
        }
    }

    /// The GEMM left-hand side of position `ξ`: `U[ξ]` (`c_out x c_in`).
    fn plane(&self, xi: usize) -> MatRef<'_> {
        MatRef {
            data: &self.u[xi * self.c_in..],
            rs: self.planes * self.c_in,
            cs: 1,
        }
    }
}

/// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for the 4x4 patches (rows `2ty-1..2ty+3`, zero outside the image) of
/// the tiles in global tile rows `r0..r1` of the `c`-channel maps `x` (`b x c x h x w`).
/// `v` holds 16 planes of `c x nt`, `nt = (r1 - r0) * tw`.
///
/// Patch columns `2tx-1..2tx+3` are read as the even and odd columns of the padded row, split
/// once per row, so that every step below is an element-wise loop over tiles (vectorised).
#[inline(always)]
fn input_transform(
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
fn grad_transform(
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

/// A raw output pointer shared by the blocks of one call, which write disjoint tile rows.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32, pub(super) usize);
// SAFETY: only used inside one `output_transform` call per block, and blocks write disjoint rows.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Writes `Aᵀ M A` (2x2 per tile, clipped at odd borders) of the 16 planes `m` (`c x nt`) into the
/// output maps `b x c x h x w` behind `out`.
///
/// # Safety
/// `out` must point to `out.1 >= b * c * h * w` floats, and no other thread may write the output
/// rows of tile rows `r0..r1` meanwhile.
#[inline(always)]
unsafe fn output_transform(
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

/// The shared core of forward and input gradient: a 3x3 'same' convolution of `x`
/// (`b x k.c_in x h x w`) by the transformed kernel `k`, with F(4x4)
/// tiles when `k` has 36 planes and F(2x2) tiles when it has 16.
fn convolve(x: &[f32], (b, h, w): (usize, usize, usize), k: &Kernel) -> Result<Vec<f32>> {
    let (c_out, c_in) = (k.c_out, k.c_in);
    let planes = k.planes;
    let four = planes == winograd4::PLANES;
    if x.len() < b * c_in * h * w || k.u.len() < planes * c_out * c_in {
        bail!("winograd conv: buffers smaller than {b}x{c_in}x{h}x{w} -> {c_out}")
    }
    let mut out = vec![0f32; b * c_out * h * w];
    if out.is_empty() {
        return Ok(out);
    }
    let m = if four { winograd4::M } else { 2 };
    let t = Tiling::new((m, planes), (b, h, w), c_in.max(c_out), MIN_TILES);
    let ptr = OutPtr(out.as_mut_ptr(), out.len());
    (0..t.blocks())
        .into_par_iter()
        .try_for_each(|i| -> Result<()> {
            let rr = t.block(i);
            let nt = (rr.1 - rr.0) * t.tw;
            // Both buffers are fully written (transform, then GEMMs without accumulation).
            with_scratch(
                planes * c_in * nt,
                planes * c_out * nt,
                |v, m| -> Result<()> {
                    if four {
                        with_avx2(|| winograd4::input_transform(x, (c_in, h, w), &t, rr, v));
                    } else {
                        with_avx2(|| input_transform(x, (c_in, h, w), &t, rr, v));
                    }
                    for xi in 0..planes {
                        sgemm_seq(
                            c_out,
                            nt,
                            c_in,
                            k.plane(xi),
                            MatRef::row_major(&v[xi * c_in * nt..][..c_in * nt], nt),
                            MatMut {
                                data: &mut m[xi * c_out * nt..][..c_out * nt],
                                rs: nt,
                            },
                            false,
                        )?;
                    }
                    // SAFETY: `ptr` covers the whole output, and block `i` alone owns tile rows `rr`.
                    if four {
                        with_avx2(|| unsafe {
                            winograd4::output_transform(m, (c_out, h, w), &t, rr, ptr)
                        });
                    } else {
                        with_avx2(|| unsafe { output_transform(m, (c_out, h, w), &t, rr, ptr) });
                    }
                    Ok(())
                },
            )?;
            Ok(())
        })?;
    Ok(out)
}

/// Whether F(4x4) tiles are used: when the batch has at least [`MIN_TILES`] of them and they waste
/// at most a quarter more work on padding than the map needs (YOLOv3's 52x52 and 104x104 maps at
/// batch 4 and 26x26 from batch 6; 13x13 maps round up to 16x16 and stay on F(2x2)).
fn four_by_four(g: &ConvGeom) -> bool {
    let (th, tw) = (g.h.div_ceil(winograd4::M), g.w.div_ceil(winograd4::M));
    let padded = th * tw * winograd4::M * winograd4::M;
    g.b * th * tw >= MIN_TILES && 4 * padded <= 5 * g.h * g.w
}

/// Forward: `out = conv3x3(x, w)`, stride 1, padding 1; `b x c_out x h x w`.
pub(crate) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    forward_with(g, x, w, four_by_four(g))
}

/// [`forward`] with F(4x4) tiles if `four`, else F(2x2).
fn forward_with(g: &ConvGeom, x: &[f32], w: &[f32], four: bool) -> Result<Vec<f32>> {
    check(g, w)?;
    let k = Kernel::new(w, g.c_out, g.c_in, four);
    convolve(x, (g.b, g.h, g.w), &k)
}

/// Input gradient: the output gradient convolved with the flipped, channel-swapped kernel.
pub(crate) fn input_grad(g: &ConvGeom, grad: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    input_grad_with(g, grad, w, four_by_four(g))
}

/// [`input_grad`] with F(4x4) tiles if `four`, else F(2x2).
fn input_grad_with(g: &ConvGeom, grad: &[f32], w: &[f32], four: bool) -> Result<Vec<f32>> {
    check(g, w)?;
    let k = Kernel::new(&flip_kernel(w, g.c_out, g.c_in), g.c_in, g.c_out, four);
    convolve(grad, (g.b, g.h, g.w), &k)
}

/// The kernel of the input-gradient convolution: spatially flipped, channel axes swapped
/// (`c_in x c_out x 3 x 3`).
fn flip_kernel(w: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut f = vec![0f32; c_out * c_in * 9];
    f.par_chunks_mut(c_out * 9).enumerate().for_each(|(ci, f)| {
        for co in 0..c_out {
            let src = &w[(co * c_in + ci) * 9..][..9];
            for (d, s) in f[co * 9..][..9].iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    });
    f
}

/// Kernel gradient: `dW[co][ci] = Gᵀ [Σ_tiles Ĝ[co] ⊙ V[ci]] G`, the tile sums being 16 GEMMs
/// (`c_out x tiles` times `tiles x c_in`) per block, accumulated per thread.
pub(crate) fn kernel_grad(g: &ConvGeom, x: &[f32], grad: &[f32]) -> Result<Vec<f32>> {
    kernel_grad_with(g, x, grad, four_by_four(g))
}

/// [`kernel_grad`] with F(4x4) tiles if `four`, else F(2x2).
fn kernel_grad_with(g: &ConvGeom, x: &[f32], grad: &[f32], four: bool) -> Result<Vec<f32>> {
    check(g, &[])?;
    let (b, c_in, c_out, h, w) = (g.b, g.c_in, g.c_out, g.h, g.w);
    if x.len() < b * c_in * h * w || grad.len() < b * c_out * h * w {
        bail!("winograd kernel gradient: buffers smaller than {g:?}")
    }
    let (m, planes) = if four {
        (winograd4::M, winograd4::PLANES)
    } else {
        (2, XI)
    };
    let plane = c_out * c_in;
    let t = Tiling::new(
        (m, planes),
        (b, h, w),
        c_in.max(c_out),
        MIN_TILES_KERNEL_GRAD,
    );
    let partials = (0..t.blocks())
        .into_par_iter()
        .fold(
            || Ok(vec![0f32; planes * plane]),
            |acc: Result<Vec<f32>>, i| {
                let mut acc = acc?;
                let rr = t.block(i);
                let nt = (rr.1 - rr.0) * t.tw;
                // Both transforms write every element of their buffer.
                with_scratch(
                    planes * c_in * nt,
                    planes * c_out * nt,
                    |v, gt| -> Result<()> {
                        if four {
                            with_avx2(|| winograd4::input_transform(x, (c_in, h, w), &t, rr, v));
                            with_avx2(|| {
                                winograd4::grad_transform(grad, (c_out, h, w), &t, rr, gt)
                            });
                        } else {
                            with_avx2(|| input_transform(x, (c_in, h, w), &t, rr, v));
                            with_avx2(|| grad_transform(grad, (c_out, h, w), &t, rr, gt));
                        }
                        for xi in 0..planes {
                            sgemm_seq(
                                c_out,
                                c_in,
                                nt,
                                MatRef::row_major(&gt[xi * c_out * nt..][..c_out * nt], nt),
                                MatRef::transposed(&v[xi * c_in * nt..][..c_in * nt], nt),
                                MatMut {
                                    data: &mut acc[xi * plane..][..plane],
                                    rs: c_in,
                                },
                                true,
                            )?;
                        }
                        Ok(())
                    },
                )?;
                Ok(acc)
            },
        )
        .collect::<Result<Vec<Vec<f32>>>>()?;
    let mut parts = partials.into_iter();
    let mut s = parts.next().unwrap_or_else(|| vec![0f32; planes * plane]);
    for p in parts {
        s.par_chunks_mut(1 << 14)
            .zip(p.par_chunks(1 << 14))
            .for_each(|(d, p)| d.iter_mut().zip(p).for_each(|(d, p)| *d += p));
    }
    // Back from the planes to 3x3 kernels: Gᵀ S G per (co, ci).
    let mut dw = vec![0f32; plane * 9];
    dw.par_chunks_mut(c_in * 9)
        .enumerate()
        .for_each(|(co, row)| {
            for ci in 0..c_in {
                let out = &mut row[ci * 9..][..9];
                let at = |xi: usize| s[xi * plane + co * c_in + ci];
                if four {
                    // Gᵀ down the columns of the 6x6 S, then along the three rows.
                    let cols: [[f32; 3]; 6] = std::array::from_fn(|j| {
                        winograd4::gt(std::array::from_fn(|i| at(i * 6 + j)))
                    });
                    for k in 0..3 {
                        let r = winograd4::gt(std::array::from_fn(|j| cols[j][k]));
                        out[k * 3..k * 3 + 3].copy_from_slice(&r);
                    }
                    continue;
                }
                let sv: [f32; XI] = std::array::from_fn(at);
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
        });
    Ok(dw)
}

fn check(g: &ConvGeom, w: &[f32]) -> Result<()> {
    if !shape_fits(g) {
        bail!("winograd conv: only 3x3 stride-1 padding-1 convolutions, got {g:?}")
    }
    if !w.is_empty() && w.len() < g.c_out * g.c_in * 9 {
        bail!("winograd conv: kernel of {} floats for {g:?}", w.len())
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::{gemm_forward, gemm_input_grad, gemm_kernel_grad};

    /// A deterministic pseudo-random vector in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * scale + 1e-6,
                "{what}[{i}]: winograd {x} vs im2col {y} (scale {scale})"
            );
        }
    }

    /// Forward and input gradient with F(2x2) and F(4x4) tiles, and the kernel gradient, equal the
    /// im2col + GEMM results, on odd and even sizes, batch 1 and 3, maps as small as 1x1 and blocks
    /// spanning several images.
    #[test]
    fn winograd_matches_im2col_forward_and_both_gradients() {
        let shapes = [
            (1, 3, 5, 7, 9),
            (3, 4, 6, 8, 5),
            (2, 16, 8, 13, 13),
            (1, 2, 3, 1, 1),
            (3, 5, 4, 2, 3),
            (2, 9, 70, 26, 26),
            (1, 5, 7, 61, 67),
        ];
        for (i, &(b, c_in, c_out, h, w)) in shapes.iter().enumerate() {
            let g = ConvGeom::new(&[b, c_in, h, w], &[c_out, c_in, 3, 3], 1, 1).unwrap();
            let x = noise(b * c_in * h * w, 3 * i as u64 + 1);
            let k = noise(c_out * c_in * 9, 3 * i as u64 + 2);
            let dy = noise(b * c_out * h * w, 3 * i as u64 + 3);
            // F(4x4)'s larger coefficients (up to 8 and 1/24) amplify rounding.
            for (four, tol) in [(false, 2e-5), (true, 1e-4)] {
                let what = format!("{} {g:?}", if four { "F(4x4)" } else { "F(2x2)" });
                assert_close(
                    &forward_with(&g, &x, &k, four).unwrap(),
                    &gemm_forward(&g, &x, &k).unwrap(),
                    tol,
                    &format!("forward {what}"),
                );
                assert_close(
                    &input_grad_with(&g, &dy, &k, four).unwrap(),
                    &gemm_input_grad(&g, &dy, &k).unwrap(),
                    tol,
                    &format!("input grad {what}"),
                );
            }
            for (four, tol) in [(false, 2e-5), (true, 1e-4)] {
                assert_close(
                    &kernel_grad_with(&g, &x, &dy, four).unwrap(),
                    &gemm_kernel_grad(&g, &x, &dy).unwrap(),
                    tol,
                    &format!("kernel grad F({0}x{0}) {g:?}", if four { 4 } else { 2 }),
                );
            }
        }
    }

    /// The dispatch rule: only wide 3x3 stride-1 'same' convolutions.
    #[test]
    fn applies_only_to_wide_3x3_same_convolutions() {
        let geom = |c_in, c_out, k, s, p| {
            ConvGeom::new(&[4, c_in, 26, 26], &[c_out, c_in, k, k], s, p).unwrap()
        };
        let on = enabled();
        assert_eq!(applies(&geom(128, 256, 3, 1, 1)), on);
        assert!(!applies(&geom(128, 256, 3, 2, 1)));
        assert!(!applies(&geom(128, 256, 1, 1, 0)));
        assert!(!applies(&geom(32, 64, 3, 1, 1)));
        // 13x13 tiles (7x7 per image) need a batch of 6 to reach 256 tiles.
        let small = |b| ConvGeom::new(&[b, 512, 13, 13], &[1024, 512, 3, 3], 1, 1).unwrap();
        assert!(!applies(&small(4)));
        assert_eq!(applies(&small(6)), on);
        // F(4x4) from 256 4x4 tiles: 52x52 (169 per image) at batch 2, not at batch 1.
        let map52 = |b| ConvGeom::new(&[b, 128, 52, 52], &[256, 128, 3, 3], 1, 1).unwrap();
        assert!(four_by_four(&map52(2)));
        assert!(!four_by_four(&map52(1)));
        // 13x13 rounds up to 16x16: 51% padding, so F(2x2) even with 256 4x4 tiles.
        assert!(!four_by_four(&small(16)));
        let map26 = |b| ConvGeom::new(&[b, 256, 26, 26], &[512, 256, 3, 3], 1, 1).unwrap();
        assert!(four_by_four(&map26(16)));
        assert!(check(&geom(128, 256, 3, 2, 1), &[]).is_err());
    }

    #[test]
    fn tiling_covers_every_tile_row_once() {
        for &(b, h, w, c) in &[
            (4, 13, 13, 1024),
            (1, 416, 416, 32),
            (3, 7, 5, 8),
            (1, 1, 1, 1),
        ] {
            let t = Tiling::new((2, XI), (b, h, w), c, 64);
            let mut next = 0;
            for i in 0..t.blocks() {
                let (r0, r1) = t.block(i);
                assert_eq!(r0, next);
                assert!(r1 > r0);
                next = r1;
            }
            assert_eq!(next, b * h.div_ceil(2));
        }
    }
}
