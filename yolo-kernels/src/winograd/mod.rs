//! Winograd convolution for the 3x3, stride-1, 'same' convolutions that make up most of YOLOv3's
//! arithmetic (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): forward,
//! input gradient and kernel gradient each become one GEMM per transformed position on
//! transformed tiles, with F(2x2, 3x3) tiles (`f2x2.rs`: 16 GEMMs per 4 outputs, 2.25x fewer
//! multiply-adds than im2col) or F(4x4, 3x3) tiles (`f4x4.rs`: 36 GEMMs per 16 outputs, 4x
//! fewer). This file is the driver both tile sizes share: which convolutions take the path, which
//! tile size they use, and the GEMMs between the transforms; `tiling.rs` cuts the tiles into
//! blocks.
//!
//! With `Bᵀ`, `G`, `Aᵀ` the F(m, 3) matrices, one `m x m` output tile is
//! `Y = Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A` for the `(m + 2) x (m + 2)` input patch `d` around it. Summed
//! over input channels, the element-wise product becomes, for each transformed position `ξ`, a
//! matrix product `M[ξ] (c_out x tiles) = U[ξ] (c_out x c_in) · V[ξ] (c_in x tiles)`.
//!
//! * The input gradient of a 3x3 stride-1 pad-1 convolution is the same convolution of the output
//!   gradient with the kernel flipped spatially and its two channel axes swapped.
//! * The kernel gradient follows from the same identity read as a trilinear form
//!   `Σ gradY · Y = Σ_ξ (A gradY Aᵀ)_ξ (G w Gᵀ)_ξ (Bᵀ d B)_ξ`: its derivative in `w` is
//!   `Gᵀ [Σ_tiles (A gradY Aᵀ) ⊙ (Bᵀ d B)] G`, again one GEMM per position, now summing over
//!   tiles.
//!
//! F(4x4) tiles are used when the batch has at least [`MIN_TILES`] of them and they waste little
//! on padding (see [`TileSize::for_geom`]); F(2x2) otherwise.
//!
//! Tiles are processed in blocks of whole tile rows (across the batch), one block per rayon task:
//! transform the block's input, run its GEMMs on this thread, transform back. Every tile row
//! belongs to exactly one block, so blocks write disjoint output rows.

mod f2x2;
mod f4x4;
mod tiling;

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{bail, Result};
use rayon::prelude::*;

use crate::conv::ConvGeom;
use crate::gemm::{sgemm_lhs_seq, sgemm_seq, Lhs, MatMut, MatRef};
use crate::scratch::with_scratch;
use crate::simd::with_simd;
use tiling::{OutPtr, Tiling};

/// Convolutions with fewer channels than this (on either side) stay on im2col: their GEMMs are too
/// thin for the transforms to pay off (YOLOv3's first layers at 416x416).
const MIN_CHANNELS: usize = 64;

/// Fewest tiles per block for forward and input gradient (the GEMMs' `n`). It is also the fewest
/// tiles over the batch a convolution needs to take this path at all: below it (YOLOv3's 13x13
/// layers under batch 6) the 16 thin products lose to one im2col product.
const MIN_TILES: usize = 256;

/// Fewest tiles per block for the kernel gradient, where tiles are the GEMMs' `k` and each block
/// accumulates into one `c_out x c_in` plane per transformed position.
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

/// The output tile size, and through it the transforms: the one place the driver tells the two
/// tile sizes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TileSize {
    /// F(2x2, 3x3): 2x2 output tiles, 16 transformed positions.
    F2x2,
    /// F(4x4, 3x3): 4x4 output tiles, 36 transformed positions.
    F4x4,
}

impl TileSize {
    /// F(4x4) when the batch has at least [`MIN_TILES`] 4x4 tiles and they waste at most a
    /// quarter more work on padding than the map needs (YOLOv3's 52x52 and 104x104 maps at batch
    /// 4 and 26x26 from batch 6; 13x13 maps round up to 16x16 and stay on F(2x2)).
    fn for_geom(g: &ConvGeom) -> TileSize {
        let (th, tw) = (g.h.div_ceil(f4x4::M), g.w.div_ceil(f4x4::M));
        let padded = th * tw * f4x4::M * f4x4::M;
        if g.b * th * tw >= MIN_TILES && 4 * padded <= 5 * g.h * g.w {
            TileSize::F4x4
        } else {
            TileSize::F2x2
        }
    }

    /// Output tile side `m`.
    fn m(self) -> usize {
        match self {
            TileSize::F2x2 => f2x2::M,
            TileSize::F4x4 => f4x4::M,
        }
    }

    /// Transformed positions per tile, hence GEMMs per block.
    fn planes(self) -> usize {
        match self {
            TileSize::F2x2 => f2x2::PLANES,
            TileSize::F4x4 => f4x4::PLANES,
        }
    }

    /// `U = G w Gᵀ` for an OIHW 3x3 kernel: per output channel, one row of `c_in` values per
    /// position.
    fn transform_kernel(self, w: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
        match self {
            TileSize::F2x2 => f2x2::transform_kernel(w, c_out, c_in),
            TileSize::F4x4 => f4x4::transform_kernel(w, c_out, c_in),
        }
    }

    /// `V = Bᵀ d B` for the patches of the tiles in tile rows `rr` of the maps `x`.
    #[inline(always)]
    fn input_transform(
        self,
        x: &[f32],
        chw: (usize, usize, usize),
        t: &Tiling,
        rr: (usize, usize),
        v: &mut [f32],
    ) {
        match self {
            TileSize::F2x2 => f2x2::input_transform(x, chw, t, rr, v),
            TileSize::F4x4 => f4x4::input_transform(x, chw, t, rr, v),
        }
    }

    /// `Ĝ = A g Aᵀ` for the output-gradient tiles in tile rows `rr` of `grad`.
    #[inline(always)]
    fn grad_transform(
        self,
        grad: &[f32],
        chw: (usize, usize, usize),
        t: &Tiling,
        rr: (usize, usize),
        gt: &mut [f32],
    ) {
        match self {
            TileSize::F2x2 => f2x2::grad_transform(grad, chw, t, rr, gt),
            TileSize::F4x4 => f4x4::grad_transform(grad, chw, t, rr, gt),
        }
    }

    /// Writes `Aᵀ M A` of the planes `m` into the output rows of tile rows `rr` behind `out`.
    ///
    /// # Safety
    /// `out` must point to `out.1 >= b * c * h * w` floats, and no other thread may write the
    /// output rows of tile rows `rr` meanwhile.
    #[inline(always)]
    unsafe fn output_transform(
        self,
        m: &[f32],
        chw: (usize, usize, usize),
        t: &Tiling,
        rr: (usize, usize),
        out: OutPtr,
    ) {
        // SAFETY: both transforms have this function's contract, which the caller upholds.
        unsafe {
            match self {
                TileSize::F2x2 => f2x2::output_transform(m, chw, t, rr, out),
                TileSize::F4x4 => f4x4::output_transform(m, chw, t, rr, out),
            }
        }
    }

    /// `Gᵀ S G`: one 3x3 kernel gradient from its summed products `S[ξ] = at(ξ)`.
    #[inline(always)]
    fn kernel_taps(self, at: impl Fn(usize) -> f32, out: &mut [f32]) {
        match self {
            TileSize::F2x2 => f2x2::kernel_taps(at, out),
            TileSize::F4x4 => f4x4::kernel_taps(at, out),
        }
    }
}

/// A transformed kernel and the sizes of its planes.
struct Kernel {
    u: Vec<f32>,
    /// The tile size it was transformed for.
    tile: TileSize,
    /// Transformed positions: 16 for F(2x2), 36 for F(4x4).
    planes: usize,
    /// Rows and columns of each plane: the convolution's output and input channels.
    c_out: usize,
    c_in: usize,
}

impl Kernel {
    /// `w` (`c_out x c_in x 3 x 3`) transformed for `tile`.
    fn new(w: &[f32], c_out: usize, c_in: usize, tile: TileSize) -> Kernel {
        Kernel {
            u: tile.transform_kernel(w, c_out, c_in),
            tile,
            planes: tile.planes(),
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

/// The shared core of forward and input gradient: a 3x3 'same' convolution of `x`
/// (`b x k.c_in x h x w`) by the transformed kernel `k`, with `k`'s tile size.
fn convolve(x: &[f32], (b, h, w): (usize, usize, usize), k: &Kernel) -> Result<Vec<f32>> {
    let (c_out, c_in) = (k.c_out, k.c_in);
    let (tile, planes) = (k.tile, k.planes);
    if x.len() < b * c_in * h * w || k.u.len() < planes * c_out * c_in {
        bail!("winograd conv: buffers smaller than {b}x{c_in}x{h}x{w} -> {c_out}")
    }
    let mut out = vec![0f32; b * c_out * h * w];
    if out.is_empty() {
        return Ok(out);
    }
    let t = Tiling::new((tile.m(), planes), (b, h, w), c_in.max(c_out), MIN_TILES);
    let ptr = OutPtr(out.as_mut_ptr(), out.len());
    let lhs = (0..planes)
        .map(|xi| Lhs::new(k.plane(xi), c_out, c_in))
        .collect::<Result<Vec<_>>>()?;
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
                    with_simd(|| tile.input_transform(x, (c_in, h, w), &t, rr, v));
                    for (xi, lhs) in lhs.iter().enumerate() {
                        sgemm_lhs_seq(
                            lhs,
                            nt,
                            MatRef::row_major(&v[xi * c_in * nt..][..c_in * nt], nt),
                            MatMut {
                                data: &mut m[xi * c_out * nt..][..c_out * nt],
                                rs: nt,
                            },
                            false,
                        )?;
                    }
                    // SAFETY: `ptr` covers the whole output, and block `i` alone owns tile rows `rr`.
                    with_simd(|| unsafe { tile.output_transform(m, (c_out, h, w), &t, rr, ptr) });
                    Ok(())
                },
            )?;
            Ok(())
        })?;
    Ok(out)
}

/// Forward: `out = conv3x3(x, w)`, stride 1, padding 1; `b x c_out x h x w`.
pub(crate) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    forward_with(g, x, w, TileSize::for_geom(g))
}

/// [`forward`] with `tile`.
fn forward_with(g: &ConvGeom, x: &[f32], w: &[f32], tile: TileSize) -> Result<Vec<f32>> {
    check(g, w)?;
    let k = Kernel::new(w, g.c_out, g.c_in, tile);
    convolve(x, (g.b, g.h, g.w), &k)
}

/// Input gradient: the output gradient convolved with the flipped, channel-swapped kernel.
pub(crate) fn input_grad(g: &ConvGeom, grad: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    input_grad_with(g, grad, w, TileSize::for_geom(g))
}

/// [`input_grad`] with `tile`.
fn input_grad_with(g: &ConvGeom, grad: &[f32], w: &[f32], tile: TileSize) -> Result<Vec<f32>> {
    check(g, w)?;
    let k = Kernel::new(&flip_kernel(w, g.c_out, g.c_in), g.c_in, g.c_out, tile);
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

/// Kernel gradient: `dW[co][ci] = Gᵀ [Σ_tiles Ĝ[co] ⊙ V[ci]] G`, the tile sums being one GEMM
/// (`c_out x tiles` times `tiles x c_in`) per position and block, accumulated per thread.
pub(crate) fn kernel_grad(g: &ConvGeom, x: &[f32], grad: &[f32]) -> Result<Vec<f32>> {
    kernel_grad_with(g, x, grad, TileSize::for_geom(g))
}

/// [`kernel_grad`] with `tile`.
fn kernel_grad_with(g: &ConvGeom, x: &[f32], grad: &[f32], tile: TileSize) -> Result<Vec<f32>> {
    check(g, &[])?;
    let (b, c_in, c_out, h, w) = (g.b, g.c_in, g.c_out, g.h, g.w);
    if x.len() < b * c_in * h * w || grad.len() < b * c_out * h * w {
        bail!("winograd kernel gradient: buffers smaller than {g:?}")
    }
    let (m, planes) = (tile.m(), tile.planes());
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
                        with_simd(|| tile.input_transform(x, (c_in, h, w), &t, rr, v));
                        with_simd(|| tile.grad_transform(grad, (c_out, h, w), &t, rr, gt));
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
                tile.kernel_taps(|xi: usize| s[xi * plane + co * c_in + ci], out);
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
    use crate::conv::{gemm_forward, gemm_input_grad, gemm_kernel_grad};

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
        // F(4x4)'s larger coefficients (up to 8 and 1/24) amplify rounding.
        let tiles = [(TileSize::F2x2, 2e-5), (TileSize::F4x4, 1e-4)];
        for (i, &(b, c_in, c_out, h, w)) in shapes.iter().enumerate() {
            let g = ConvGeom::new(&[b, c_in, h, w], &[c_out, c_in, 3, 3], 1, 1).unwrap();
            let x = noise(b * c_in * h * w, 3 * i as u64 + 1);
            let k = noise(c_out * c_in * 9, 3 * i as u64 + 2);
            let dy = noise(b * c_out * h * w, 3 * i as u64 + 3);
            for (tile, tol) in tiles {
                let what = format!("{tile:?} {g:?}");
                assert_close(
                    &forward_with(&g, &x, &k, tile).unwrap(),
                    &gemm_forward(&g, &x, &k).unwrap(),
                    tol,
                    &format!("forward {what}"),
                );
                assert_close(
                    &input_grad_with(&g, &dy, &k, tile).unwrap(),
                    &gemm_input_grad(&g, &dy, &k).unwrap(),
                    tol,
                    &format!("input grad {what}"),
                );
            }
            for (tile, tol) in tiles {
                assert_close(
                    &kernel_grad_with(&g, &x, &dy, tile).unwrap(),
                    &gemm_kernel_grad(&g, &x, &dy).unwrap(),
                    tol,
                    &format!("kernel grad {tile:?} {g:?}"),
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
        assert_eq!(TileSize::for_geom(&map52(2)), TileSize::F4x4);
        assert_eq!(TileSize::for_geom(&map52(1)), TileSize::F2x2);
        // 13x13 rounds up to 16x16: 51% padding, so F(2x2) even with 256 4x4 tiles.
        assert_eq!(TileSize::for_geom(&small(16)), TileSize::F2x2);
        let map26 = |b| ConvGeom::new(&[b, 256, 26, 26], &[512, 256, 3, 3], 1, 1).unwrap();
        assert_eq!(TileSize::for_geom(&map26(16)), TileSize::F4x4);
        assert!(check(&geom(128, 256, 3, 2, 1), &[]).is_err());
    }
}
