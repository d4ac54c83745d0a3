//! bf16 matrix products on Intel AMX (Sapphire Rapids and later Xeons), for training with
//! `--precision bf16` on the CPU: the f32 operands are rounded to bf16 (to nearest, ties to even)
//! while they are packed into tiles, and the tile multiply-adds accumulate in f32, so only the
//! products' inputs lose precision; every tensor stays f32. This is what oneDNN calls the bf16
//! "fpmath mode".
//!
//! A product is packed into 16 x 32 bf16 tiles of both operands (the right one pair-interleaved,
//! as `TDPBF16PS` wants it), then every 32 x 32 block of the result is accumulated in four f32
//! tiles over the whole depth and written out once. The operand whose packed panels take more
//! room is walked in the outer loop (and split between threads), so the smaller one is re-read
//! from cache. A left-hand side used against many right-hand sides (a convolution's kernel) is
//! packed once ([`PackedA`]).
//!
//! The tile instructions are inline assembly: Rust's AMX intrinsics are unstable
//! (`x86_amx_intrinsics`); the conversions use the stable AVX-512 BF16 intrinsics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::gemm::{MatMut, MatRef};

/// Rows of every tile: A tiles, pair-interleaved B tiles and f32 C tiles.
const ROWS: usize = 16;
/// bf16 values in one row of an A tile: the depth one tile multiply-add covers.
const DEPTH: usize = 32;
/// f32 columns of a C tile (and pairs in a row of a B tile).
const COLS: usize = 16;
/// bf16 values in one packed A or B tile (1 KiB).
const TILE: usize = ROWS * DEPTH;
/// A result block is 2 x 2 C tiles: 32 rows by 32 columns.
const BLOCK: usize = 2 * ROWS;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this CPU and OS run AMX bf16 tile instructions (AMX-TILE, AMX-BF16 and the Linux
/// permission to use tile data, requested once), and `YOLO_NO_AMX` is unset.
pub fn amx_bf16_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("YOLO_NO_AMX").is_none() && crate::amx_support::amx_bf16_supported()
    })
}

/// Turns bf16 matrix products on or off for every f32 convolution of the fast CPU kernels (their
/// im2col and Winograd GEMMs), process-wide. Returns whether they are on now: turning them on
/// where [`amx_bf16_available`] is false leaves them off.
pub fn set_bf16_matmul(on: bool) -> bool {
    let on = on && amx_bf16_available();
    ENABLED.store(on, Ordering::Relaxed);
    on
}

/// Whether [`set_bf16_matmul`] turned bf16 products on.
pub fn bf16_matmul() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// bf16 products on (where available) or off for as long as this lives, process-wide; dropping
/// it restores the setting it found. A training run holds one.
#[must_use = "the setting is restored when the scope is dropped"]
pub struct Bf16MatmulScope {
    previous: bool,
}

/// Starts a [`Bf16MatmulScope`] with bf16 products `on` (if [`amx_bf16_available`]) or off.
pub fn bf16_matmul_scope(on: bool) -> Bf16MatmulScope {
    let previous = bf16_matmul();
    set_bf16_matmul(on);
    Bf16MatmulScope { previous }
}

impl Drop for Bf16MatmulScope {
    fn drop(&mut self) {
        ENABLED.store(self.previous, Ordering::Relaxed);
    }
}

/// Whether an `m x n x k` product is worth the tile path. Packing costs about as much per element
/// as a tile multiply-add step per 32 x 32 block, so a product with few result rows (the first
/// layers' 32 or 64 output channels against a wide image) runs faster in f32; measured on a
/// Sapphire Rapids Xeon, 32 x 43264 x 144 ran at 0.5x and 64 x 10816 x 288 at 0.9x the f32 rate,
/// products with 256 or more rows at 1.1-2.6x.
/// (`n = usize::MAX` asks whether a left-hand side is worth packing for products yet unknown.)
pub(crate) fn worth_tiles(m: usize, n: usize, k: usize) -> bool {
    m >= 128 && n >= 32 && k >= 64
}

/// `x` rounded to the nearest bf16 (ties to even), as its bits; NaN stays a (quiet) NaN. The
/// scalar reference of the packing's `VCVTNE2PS2BF16`.
#[cfg(test)]
fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    if nan {
        ((b >> 16) as u16) | 0x0040
    } else {
        rounded
    }
}

/// The value of the bf16 bits `h`.
#[cfg(test)]
fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// The tile shapes the kernel uses, in the layout `LDTILECFG` reads: palette 1, tiles 0-7 all
/// 16 rows of 64 bytes (C tiles 0-3, A tiles 4-5, B tiles 6-7).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn kernel() -> Self {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            c.colsb[t] = 64;
            c.rows[t] = ROWS as u8;
        }
        c
    }
}

/// Configures the tiles of the calling thread for [`block`].
///
/// # Safety
/// [`amx_bf16_available`] must be true.
#[cfg(target_arch = "x86_64")]
unsafe fn load_tiles(cfg: &TileConfig) {
    // SAFETY: the CPU has AMX and the process may use it (the caller's contract); `cfg` is a
    // valid, 64-byte aligned palette-1 configuration.
    unsafe {
        std::arch::asm!("ldtilecfg [{}]", in(reg) cfg as *const TileConfig, options(nostack, readonly));
    }
}

/// Releases the calling thread's tiles, so the OS need not save them on a context switch.
///
/// # Safety
/// [`amx_bf16_available`] must be true.
#[cfg(target_arch = "x86_64")]
unsafe fn release_tiles() {
    // SAFETY: the CPU has AMX (the caller's contract); TILERELEASE only resets tile state.
    unsafe {
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// One 32 x 32 result block over `depth` packed tiles: `out` receives the four f32 C tiles
/// (rows 0-15 x cols 0-15, rows 0-15 x cols 16-31, rows 16-31 x cols 0-15, rows 16-31 x
/// cols 16-31), each 16 rows of 16 floats.
///
/// # Safety
/// The tiles are configured by [`load_tiles`] on this thread; `a0`, `a1`, `b0` and `b1` each
/// point to `depth >= 1` consecutive packed tiles; `out` to 1024 writable floats.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn block(
    a0: *const u16,
    a1: *const u16,
    b0: *const u16,
    b1: *const u16,
    depth: usize,
    out: *mut f32,
) {
    // SAFETY: every load reads 16 rows of 64 bytes at a stride of 64 from a packed tile the
    // caller guarantees, advancing one tile (1024 bytes) per step for `depth` steps; the stores
    // write the 4 KiB the caller provides.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            "tilestored [{o} + {s}*1], tmm0",
            "add {o}, 1024",
            "tilestored [{o} + {s}*1], tmm1",
            "add {o}, 1024",
            "tilestored [{o} + {s}*1], tmm2",
            "add {o}, 1024",
            "tilestored [{o} + {s}*1], tmm3",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0 => _,
            b1 = inout(reg) b1 => _,
            n = inout(reg) depth => _,
            o = inout(reg) out => _,
            s = in(reg) 64usize,
            options(nostack),
        );
    }
}

/// Runs `f(index, chunk)` over `buf`'s chunks of `len`, on rayon's pool when `parallel`.
fn for_chunks<T: Send>(
    buf: &mut [T],
    len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if parallel {
        buf.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        buf.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Converts 32 floats to bf16 with `VCVTNE2PS2BF16` (round to nearest even, as [`to_bf16`]).
///
/// # Safety
/// The CPU must have AVX-512 F and AVX-512 BF16 (every CPU with AMX-BF16 does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn cvt32(src: &[f32; 32], dst: &mut [u16; 32]) {
    use std::arch::x86_64::*;
    // SAFETY: both arrays hold 32 elements, read and written unaligned.
    unsafe {
        let lo = _mm512_loadu_ps(src.as_ptr());
        let hi = _mm512_loadu_ps(src.as_ptr().add(16));
        let packed = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(
            dst.as_mut_ptr().cast(),
            std::mem::transmute::<__m512bh, __m512i>(packed),
        );
    }
}

/// Converts two rows of 16 floats to bf16 and interleaves them (`r0[0], r1[0], r0[1], ...`):
/// one row of a pair-interleaved B tile.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn cvt_interleave16(r0: &[f32; 16], r1: &[f32; 16], dst: &mut [u16; 32]) {
    use std::arch::x86_64::*;
    const PAIRS: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut j = 0;
        while j < 16 {
            idx[2 * j] = j as u16;
            idx[2 * j + 1] = j as u16 + 16;
            j += 1;
        }
        idx
    };
    // SAFETY: the arrays hold 16, 16 and 32 elements, read and written unaligned.
    unsafe {
        let a = _mm512_loadu_ps(r0.as_ptr());
        let b = _mm512_loadu_ps(r1.as_ptr());
        // Elements 0-15 of the result come from `a` (r0), 16-31 from `b` (r1).
        let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
        let idx = _mm512_loadu_si512(PAIRS.as_ptr().cast());
        let out = _mm512_permutexvar_epi16(idx, both);
        _mm512_storeu_si512(dst.as_mut_ptr().cast(), out);
    }
}

/// Packs `lhs` (`m x k`) into A tiles, zero-padded: tile `(it, kt)` starts at
/// `(it * depth + kt) * TILE`, its row `i` holds `lhs[it*16 + i][kt*32 ..][.. 32]`.
fn pack_a(lhs: MatRef<'_>, m: usize, k: usize, depth: usize, out: &mut [u16], parallel: bool) {
    for_chunks(out, depth * TILE, parallel, |it, panel| {
        let mut buf = [0f32; DEPTH];
        for i in 0..ROWS {
            let r = it * ROWS + i;
            for kt in 0..depth {
                let dst: &mut [u16; DEPTH] = (&mut panel[kt * TILE + i * DEPTH..][..DEPTH])
                    .try_into()
                    .expect("a tile row is 32 values");
                let c0 = kt * DEPTH;
                if r >= m || c0 >= k {
                    dst.fill(0);
                    continue;
                }
                let cn = (k - c0).min(DEPTH);
                let row = r * lhs.rs;
                let src: &[f32; DEPTH] = if lhs.cs == 1 && cn == DEPTH {
                    (&lhs.data[row + c0..][..DEPTH])
                        .try_into()
                        .expect("32 values")
                } else {
                    for (c, b) in buf.iter_mut().enumerate() {
                        *b = if c < cn {
                            lhs.data[row + (c0 + c) * lhs.cs]
                        } else {
                            0.0
                        };
                    }
                    &buf
                };
                // SAFETY: AMX-BF16 is available (sgemm_bf16's precondition), and with it
                // AVX-512 BF16 (checked by amx_bf16_supported).
                unsafe { cvt32(src, dst) };
            }
        }
    });
}

/// Packs `rhs` (`k x n`) into pair-interleaved B tiles, zero-padded: tile `(jt, kt)` starts at
/// `(jt * depth + kt) * TILE`, and its element `p * 32 + 2 * j + e` is
/// `rhs[kt*32 + 2*p + e][jt*16 + j]`.
fn pack_b(rhs: MatRef<'_>, k: usize, n: usize, depth: usize, out: &mut [u16], parallel: bool) {
    for_chunks(out, depth * TILE, parallel, |jt, panel| {
        let j0 = jt * COLS;
        let jn = n.saturating_sub(j0).min(COLS);
        let mut rows = [[0f32; COLS]; 2];
        for kt in 0..depth {
            for p in 0..ROWS {
                let dst: &mut [u16; DEPTH] = (&mut panel[kt * TILE + p * DEPTH..][..DEPTH])
                    .try_into()
                    .expect("a tile row is 32 values");
                let c0 = kt * DEPTH + 2 * p;
                if jn == 0 || c0 >= k {
                    dst.fill(0);
                    continue;
                }
                let fetch = |c: usize, buf: &mut [f32; COLS]| -> bool {
                    if c < k && rhs.cs == 1 && jn == COLS {
                        return false;
                    }
                    for (j, b) in buf.iter_mut().enumerate() {
                        *b = if c < k && j < jn {
                            rhs.data[c * rhs.rs + (j0 + j) * rhs.cs]
                        } else {
                            0.0
                        };
                    }
                    true
                };
                let [b0, b1] = &mut rows;
                let r0: &[f32; COLS] = if fetch(c0, b0) {
                    b0
                } else {
                    (&rhs.data[c0 * rhs.rs + j0..][..COLS])
                        .try_into()
                        .expect("16 values")
                };
                let r1: &[f32; COLS] = if fetch(c0 + 1, b1) {
                    b1
                } else {
                    (&rhs.data[(c0 + 1) * rhs.rs + j0..][..COLS])
                        .try_into()
                        .expect("16 values")
                };
                // SAFETY: AMX-BF16 is available (sgemm_bf16's precondition), and with it
                // AVX-512 BW and BF16 (checked by amx_bf16_supported).
                unsafe { cvt_interleave16(r0, r1, dst) };
            }
        }
    });
}

/// The destination shared by the threads that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct SharedDst {
    ptr: *mut f32,
    rs: usize,
}
// SAFETY: the threads write disjoint elements (each owns whole result blocks) while the product
// runs, and the `&mut` borrow it came from outlives them.
unsafe impl Send for SharedDst {}
// SAFETY: as for Send.
unsafe impl Sync for SharedDst {}

impl SharedDst {
    /// The `len` elements of row `r` from column `j0` on.
    ///
    /// # Safety
    /// They lie inside the destination, and no other thread touches them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row_mut(&self, r: usize, j0: usize, len: usize) -> &mut [f32] {
        // SAFETY: in bounds and unshared (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.rs + j0), len) }
    }
}

/// A left-hand side packed into A tiles once, for products with many right-hand sides (the
/// convolution kernel against each image, each Winograd block).
pub(crate) struct PackedA {
    tiles: Vec<u16>,
    m: usize,
    k: usize,
    depth: usize,
}

impl PackedA {
    /// Packs `lhs` (`m x k`, bounds-checked by the caller, `m, k >= 1`); [`amx_bf16_available`]
    /// must be true. `parallel` spreads the packing over rayon's pool.
    pub(crate) fn new(lhs: MatRef<'_>, m: usize, k: usize, parallel: bool) -> Self {
        assert!(amx_bf16_available() && m > 0 && k > 0);
        let depth = k.div_ceil(DEPTH);
        let mut tiles = vec![0u16; 2 * m.div_ceil(BLOCK) * depth * TILE];
        pack_a(lhs, m, k, depth, &mut tiles, parallel);
        PackedA { tiles, m, k, depth }
    }

    /// Result rows.
    pub(crate) fn rows(&self) -> usize {
        self.m
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)` with bf16-rounded operands and f32
/// accumulation. The views must already be bounds-checked for these sizes (as `sgemm` does),
/// `m, n, k >= 1`, and [`amx_bf16_available`] true; `parallel` spreads it over rayon's pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
    parallel: bool,
) {
    let a = PackedA::new(lhs, m, k, parallel);
    sgemm_bf16_packed(&a, n, rhs, dst, accumulate, parallel);
}

/// [`sgemm_bf16`] with the left-hand side packed already.
pub(crate) fn sgemm_bf16_packed(
    a: &PackedA,
    n: usize,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
    parallel: bool,
) {
    let (m, k, depth) = (a.m, a.k, a.depth);
    assert!(n > 0);
    assert!((m - 1) * dst.rs + n <= dst.data.len());
    let row_blocks = m.div_ceil(BLOCK);
    let col_blocks = n.div_ceil(BLOCK);
    // pack_b writes every element of its buffer, so a reused one will do.
    crate::scratch::with_packed_scratch(2 * col_blocks * depth * TILE, |b| {
        pack_b(rhs, k, n, depth, b, parallel);
        let out = SharedDst {
            ptr: dst.data.as_mut_ptr(),
            rs: dst.rs,
        };
        let panel = depth * TILE;
        let (a, b) = (&a.tiles[..], &*b);
        let cfg = TileConfig::kernel();
        // The operand with the larger packed panels goes in the outer loop.
        let rows_outer = row_blocks >= col_blocks;
        let (outer, inner) = if rows_outer {
            (row_blocks, col_blocks)
        } else {
            (col_blocks, row_blocks)
        };
        let run = |o: usize| {
            let mut c = [0f32; 4 * ROWS * COLS];
            // SAFETY: AMX is available (asserted above); the config is the kernel's.
            unsafe { load_tiles(&cfg) };
            for i in 0..inner {
                let (rb, cb) = if rows_outer { (o, i) } else { (i, o) };
                let at = &a[2 * rb * panel..][..2 * panel];
                let bt = &b[2 * cb * panel..][..2 * panel];
                // SAFETY: the tiles are configured above; each pointer starts `depth` packed tiles
                // inside `a` or `b` (the slices just taken hold two panels of `depth` tiles each);
                // `c` holds the 1024 floats the block writes.
                unsafe {
                    block(
                        at.as_ptr(),
                        at[panel..].as_ptr(),
                        bt.as_ptr(),
                        bt[panel..].as_ptr(),
                        depth,
                        c.as_mut_ptr(),
                    )
                };
                for t in 0..4 {
                    let r0 = rb * BLOCK + (t / 2) * ROWS;
                    let j0 = cb * BLOCK + (t % 2) * COLS;
                    let rn = m.saturating_sub(r0).min(ROWS);
                    let jn = n.saturating_sub(j0).min(COLS);
                    for ri in 0..rn {
                        let src = &c[(t * ROWS + ri) * COLS..][..jn];
                        // SAFETY: row r0 + ri < m and columns j0 .. j0 + jn <= n lie inside `dst`
                        // (asserted above); this block is the only writer of them.
                        let d = unsafe { out.row_mut(r0 + ri, j0, jn) };
                        if accumulate {
                            for (d, s) in d.iter_mut().zip(src) {
                                *d += s;
                            }
                        } else {
                            d.copy_from_slice(src);
                        }
                    }
                }
            }
            // SAFETY: AMX is available; the tiles were configured above.
            unsafe { release_tiles() };
        };
        if parallel && outer > 1 {
            (0..outer).into_par_iter().for_each(run);
        } else {
            (0..outer).for_each(run);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 200.0)), 1.0 + 1.0 / 128.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
    }

    /// The product of the bf16-rounded operands, in f64.
    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let r = |x: f32| from_bf16(to_bf16(x)) as f64;
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                let x = r(a[i * k + p]);
                for j in 0..n {
                    c[i * n + j] += x * r(b[p * n + j]);
                }
            }
        }
        c
    }

    #[test]
    #[cfg_attr(no_amx, ignore = "this CPU has no AMX-BF16")]
    fn tile_product_equals_the_rounded_operands_product() {
        assert!(
            amx_bf16_available(),
            "the build script found AMX-BF16, the library not"
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Ragged sizes exercise every padded edge; (64, 200, 144) several whole blocks.
        for &(m, n, k) in &[(33, 47, 70), (64, 200, 144), (16, 16, 32), (100, 9, 33)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let want = reference(m, n, k, &a, &b);
            for (parallel, accumulate) in [(false, false), (true, false), (true, true)] {
                // The destination has a wider row stride than n, and its padding must survive.
                let rs = n + 3;
                let mut d = vec![0.5f32; m * rs];
                sgemm_bf16(
                    m,
                    n,
                    k,
                    MatRef::row_major(&a, k),
                    MatRef::row_major(&b, n),
                    MatMut { data: &mut d, rs },
                    accumulate,
                    parallel,
                );
                for i in 0..m {
                    for j in 0..rs {
                        let got = d[i * rs + j] as f64;
                        let expect = if j >= n {
                            0.5
                        } else {
                            want[i * n + j] + if accumulate { 0.5 } else { 0.0 }
                        };
                        assert!(
                            (got - expect).abs() <= 1e-5 * (1.0 + expect.abs()),
                            "{m}x{n}x{k} par {parallel} acc {accumulate} at ({i},{j}): {got} vs {expect}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[cfg_attr(no_amx, ignore = "this CPU has no AMX-BF16")]
    fn transposed_views_pack_like_row_major_ones() {
        assert!(
            amx_bf16_available(),
            "the build script found AMX-BF16, the library not"
        );
        let (m, n, k) = (40, 50, 60);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53) % 97) as f32 * 0.01 - 0.5)
            .collect();
        // Store both operands transposed and read them through transposed views.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut direct = vec![0f32; m * n];
        let mut viewed = vec![0f32; m * n];
        let run = |l: MatRef<'_>, r: MatRef<'_>, d: &mut [f32]| {
            sgemm_bf16(m, n, k, l, r, MatMut { data: d, rs: n }, false, false)
        };
        run(
            MatRef::row_major(&a, k),
            MatRef::row_major(&b, n),
            &mut direct,
        );
        run(
            MatRef::transposed(&at, m),
            MatRef::transposed(&bt, k),
            &mut viewed,
        );
        assert_eq!(direct, viewed);
    }

    /// Rates of the tile product against the f32 `gemm` crate on the convolutions' shapes (run
    /// with `--ignored --nocapture` in release on an idle AMX machine).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn tile_rates() {
        use std::time::Instant;
        let shapes = [
            (1024, 169, 4608, false),
            (32, 43264, 144, true),
            (64, 10816, 288, true),
            (256, 676, 512, false),
            (512, 169, 1024, false),
            (128, 2704, 256, false),
            (256, 56, 128, false),
            (256, 128, 676, false),
            (4096, 4096, 4096, true),
        ];
        for (m, n, k, par) in shapes {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((4e9 / flops).ceil() as usize).clamp(2, 200);
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() / reps as f64
            };
            let tiles = time(&mut || {
                sgemm_bf16(
                    m,
                    n,
                    k,
                    MatRef::row_major(&a, k),
                    MatRef::row_major(&b, n),
                    MatMut {
                        data: &mut c,
                        rs: n,
                    },
                    false,
                    par,
                )
            });
            let depth = k.div_ceil(DEPTH);
            let mut pa = vec![0u16; 2 * m.div_ceil(BLOCK) * depth * TILE];
            let mut pb = vec![0u16; 2 * n.div_ceil(BLOCK) * depth * TILE];
            let pack = time(&mut || {
                pack_a(MatRef::row_major(&a, k), m, k, depth, &mut pa, par);
                pack_b(MatRef::row_major(&b, n), k, n, depth, &mut pb, par);
            });
            let f32_time = time(&mut || {
                let p = if par {
                    crate::gemm::gemm_parallelism(m, n, k)
                } else {
                    gemm::Parallelism::None
                };
                crate::gemm::sgemm_with(
                    m,
                    n,
                    k,
                    MatRef::row_major(&a, k),
                    MatRef::row_major(&b, n),
                    MatMut {
                        data: &mut c,
                        rs: n,
                    },
                    false,
                    p,
                )
                .unwrap()
            });
            eprintln!(
                "{m}x{n}x{k} par {par}: tiles {:.0} GFLOP/s (packing {:.0}% of it), f32 gemm {:.0}",
                flops / tiles / 1e9,
                100.0 * pack / tiles,
                flops / f32_time / 1e9
            );
        }
    }
}
