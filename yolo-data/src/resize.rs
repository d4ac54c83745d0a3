//! An exact port of Pillow's `Image.resize(size, Image.BICUBIC)` for 8-bit RGB images, the
//! resampler keras-yolo3's `letterbox_image` and `get_random_data` call.
//!
//! Pillow's BICUBIC is an antialiased separable convolution (the kernel widens by the downscale
//! ratio) done in fixed point: weights are normalised in f64, converted to integers with 22
//! fractional bits, each pass rounds and clamps to `u8`, and the horizontal pass runs first and is
//! stored as `u8` before the vertical pass reads it. A direction whose size does not change is
//! skipped. Following those steps gives Pillow's output bit for bit (checked against the letterbox
//! fixtures decoded by Pillow).
//!
//! Tap tables depend only on `(in, out)` sizes and are cached per thread. Every output pixel
//! depends only on its own taps, so [`resize_bicubic_region`] computes just a window of the
//! resized image (what the random-placement augmentation needs when most of an upscaled image
//! falls outside the canvas) with the same values the full resize would have there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use image::RgbImage;

/// Fractional bits of Pillow's integer weights (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Pillow's bicubic kernel with `a = -0.5`, evaluated in Pillow's exact operation order so that
/// the f64 weights, and hence their integer roundings, match.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per-direction tap table: output index `o` reads input `start[o] .. start[o] + len[o]` with the
/// integer weights `weights[o * ksize ..][.. len[o]]`.
#[derive(Debug)]
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    weights: Vec<i32>,
}

impl Taps {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for o in 0..out_size {
            let center = (o as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; negative values are then clamped to 0.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64)
                .min(in_size as i64)
                .max(xmin as i64) as usize;
            let n = (xmax - xmin).min(ksize);
            let mut ww = 0.0f64;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = bicubic_filter(((x + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[o * ksize..o * ksize + n];
            for (dst, &w) in row.iter_mut().zip(&k[..n]) {
                let w = if ww != 0.0 { w / ww } else { w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                *dst = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            start.push(xmin);
            len.push(n);
        }
        Taps {
            start,
            len,
            ksize,
            weights,
        }
    }

    fn weights(&self, o: usize) -> &[i32] {
        &self.weights[o * self.ksize..o * self.ksize + self.len[o]]
    }
}

thread_local! {
    static TAP_CACHE: RefCell<HashMap<(usize, usize), Arc<Taps>>> = RefCell::new(HashMap::new());
}

/// The tap table for `(in_size, out_size)`, computed once per thread and size pair.
fn taps(in_size: usize, out_size: usize) -> Arc<Taps> {
    TAP_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        // The random augmentation draws many sizes; keep the cache bounded.
        if cache.len() > 512 {
            cache.clear();
        }
        cache
            .entry((in_size, out_size))
            .or_insert_with(|| Arc::new(Taps::new(in_size, out_size)))
            .clone()
    })
}

/// Pillow's `clip8`: round-shift the accumulator and clamp to `0..=255`.
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A window `[x0, x1) x [y0, y1)` of a resized image, in resized-image pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First column.
    pub x0: usize,
    /// First row.
    pub y0: usize,
    /// One past the last column.
    pub x1: usize,
    /// One past the last row.
    pub y1: usize,
}

/// Pillow `BICUBIC` resize of `src` to `out_w x out_h`, bit-exact with Pillow.
pub fn resize_bicubic(src: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    resize_bicubic_region(
        src,
        out_w,
        out_h,
        Window {
            x0: 0,
            y0: 0,
            x1: out_w,
            y1: out_h,
        },
    )
}

/// The `win` window of the Pillow `BICUBIC` resize of `src` to `out_w x out_h` (the window is
/// clamped to the output size). Values equal those of the full resize at the same positions.
pub fn resize_bicubic_region(src: &RgbImage, out_w: usize, out_h: usize, win: Window) -> RgbImage {
    let x1 = win.x1.min(out_w);
    let ww = x1 - win.x0.min(x1);
    let y1 = win.y1.min(out_h);
    let wh = y1 - win.y0.min(y1);
    let mut out = Vec::with_capacity(ww * wh * 3);
    resize_region_rows(src, out_w, out_h, win, |_, row| out.extend_from_slice(row));
    RgbImage::from_raw(ww as u32, wh as u32, out).expect("buffer size matches the window")
}

thread_local! {
    /// Reused per-thread buffers of [`resize_region_rows`] (the horizontal pass's output and one
    /// vertical output line), so that resizing allocates and zero-fills nothing in steady state.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `buf[..n]`, growing `buf` (zero-filled) only when it is too short; callers overwrite it.
fn scratch(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut buf[..n]
}

/// The rows of the `win` window (clamped to the output size) of the Pillow `BICUBIC` resize of
/// `src` to `out_w x out_h`, handed one at a time, top to bottom, to `row(r, pixels)` (`r` counts
/// from the window's first row; `pixels` is interleaved RGB, `3 * width` bytes). Nothing is
/// called for an empty window; an empty source gives black rows.
///
/// The vertical pass is [`convolve_rows`], a weighted sum of whole lines, which vectorises. The
/// horizontal pass works on 8 rows at a time with AVX2 ([`horizontal_avx2`]) or, elsewhere,
/// transposes the block so that it becomes the same line kernel ([`horizontal_transposed`]).
/// The integer arithmetic per output value is Pillow's in every case, so results stay bit-exact.
/// The intermediate and the output line live in per-thread buffers that are reused.
pub(crate) fn resize_region_rows(
    src: &RgbImage,
    out_w: usize,
    out_h: usize,
    win: Window,
    mut row: impl FnMut(usize, &[u8]),
) {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let x1 = win.x1.min(out_w);
    let y1 = win.y1.min(out_h);
    let x0 = win.x0.min(x1);
    let y0 = win.y0.min(y1);
    let (ww, wh) = (x1 - x0, y1 - y0);
    if ww == 0 || wh == 0 {
        return;
    }
    if in_w == 0 || in_h == 0 {
        let black = vec![0u8; ww * 3];
        (0..wh).for_each(|r| row(r, &black));
        return;
    }
    let src = src.as_raw();
    let need_h = in_w != out_w;
    let need_v = in_h != out_h;

    // Rows of the source the vertical pass will read.
    let vtaps = need_v.then(|| taps(in_h, out_h));
    let (row_lo, row_hi) = match &vtaps {
        Some(t) => (t.start[y0], t.start[y1 - 1] + t.len[y1 - 1]),
        None => (y0, y1),
    };
    let row_lo = row_lo.min(row_hi);
    let rows = row_hi - row_lo;

    // Taken out of the cell (and put back at the end) so that `row` may resize too.
    let (mut mid_buf, mut line_buf) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let stride_in = in_w * 3;
    let stride_mid = ww * 3;
    // Horizontal pass into a u8 intermediate of rows row_lo..row_hi, or, when the width does
    // not change, the source itself seen through a column offset.
    let (mid, mid_stride): (&[u8], usize) = if need_h {
        let t = taps(in_w, out_w);
        let mid = scratch(&mut mid_buf, rows * stride_mid);
        let block = &src[row_lo * stride_in..];
        horizontal(block, stride_in, rows, &t, x0, ww, mid);
        (mid, stride_mid)
    } else {
        (&src[row_lo * stride_in + x0 * 3..], stride_in)
    };

    match vtaps {
        Some(t) => {
            let line = scratch(&mut line_buf, stride_mid);
            for r in 0..wh {
                let o = y0 + r;
                convolve_rows(mid, mid_stride, t.start[o] - row_lo, t.weights(o), line);
                row(r, line);
            }
        }
        None => {
            for r in 0..wh {
                row(r, &mid[r * mid_stride..r * mid_stride + stride_mid]);
            }
        }
    }
    SCRATCH.with(|s| *s.borrow_mut() = (mid_buf, line_buf));
}

/// The horizontal pass of `rows` source rows into `mid` (`rows` lines of `ww` pixels).
fn horizontal(
    block: &[u8],
    stride_in: usize,
    rows: usize,
    t: &Taps,
    x0: usize,
    ww: usize,
    mid: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available; the kernel checks its own reads (see its doc).
            unsafe { horizontal_avx2(block, stride_in, rows, t, x0, mid) };
            return;
        }
    }
    horizontal_transposed(block, stride_in, rows, t, x0, ww, mid);
}

/// Portable horizontal pass: transpose the needed block (pixel columns become lines), convolve
/// whole lines with [`convolve_rows`], transpose back into `mid` (`rows` lines of `ww` pixels).
fn horizontal_transposed(
    src: &[u8],
    stride_in: usize,
    rows: usize,
    t: &Taps,
    x0: usize,
    ww: usize,
    mid: &mut [u8],
) {
    let x1 = x0 + ww;
    let (col_lo, col_hi) = (t.start[x0], t.start[x1 - 1] + t.len[x1 - 1]);
    let tstride = rows * 3;
    let mut tsrc = vec![0u8; (col_hi - col_lo) * tstride];
    transpose_px(
        &src[..rows * stride_in],
        stride_in,
        col_lo,
        col_hi,
        rows,
        &mut tsrc,
    );
    let mut tmid = vec![0u8; ww * tstride];
    for (i, out_col) in tmid.chunks_exact_mut(tstride).enumerate() {
        let o = x0 + i;
        convolve_rows(&tsrc, tstride, t.start[o] - col_lo, t.weights(o), out_col);
    }
    transpose_px(&tmid, tstride, 0, rows, ww, mid);
}

/// AVX2 horizontal pass straight from the interleaved source, 8 rows at a time. Each source
/// pixel column the window reads is turned once into three 8-lane i32 vectors (its 8 rows), one
/// per channel: 8 columns at a time by a byte transpose, the last few by a 4-byte gather (R, G, B
/// and one byte of the next pixel, ignored);
/// every output pixel is then, per channel, `2^21 + sum_t column[start + t] * weight[t]` over
/// plain vector loads, clamped to `0..=255`; groups of 8 output pixels are transposed back to
/// rows and stored 24 bytes per row. A last block with fewer
/// than 8 rows, or whose gather would read past the end of `src`, is first copied into a padded
/// buffer. Writes `mid` (`rows` lines of `mid.len() / rows` bytes).
///
/// # Safety
/// AVX2 must be available; `src` holds at least `rows * stride_in` bytes and every tap lies
/// inside a row of `stride_in / 3` pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(
    src: &[u8],
    stride_in: usize,
    rows: usize,
    t: &Taps,
    x0: usize,
    mid: &mut [u8],
) {
    // SAFETY: the caller guarantees AVX2 (this function's contract); every pointer read
    // stays inside `src` or the padded copy: the asserts bound `rows * stride_in` and the taps,
    // and a block is read in place only when its last 4-byte gather ends inside `src`. Stores go
    // to `dst`, a 24-byte slice of `mid`, and to the local `bytes` buffer.
    unsafe {
        use std::arch::x86_64::*;
        if rows == 0 || mid.is_empty() {
            return;
        }
        let stride_mid = mid.len() / rows;
        let ww = stride_mid / 3;
        assert!(src.len() >= rows * stride_in && stride_in * 9 < i32::MAX as usize);
        let (mut col_lo, mut col_hi) = (usize::MAX, 0);
        for o in x0..x0 + ww {
            col_lo = col_lo.min(t.start[o]);
            col_hi = col_hi.max(t.start[o] + t.len[o]);
        }
        assert!(col_hi * 3 <= stride_in, "taps inside the row");
        let ncols = col_hi - col_lo;
        let mut cols = vec![_mm256_setzero_si256(); 3 * ncols];
        let s = stride_in as i32;
        let offs = _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s);
        let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        let byte = _mm256_set1_epi32(0xff);
        let zero = _mm256_setzero_si256();
        let max = _mm256_set1_epi32(255);
        let pack = _mm256_setr_epi8(
            0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12,
            13, 14, -1, -1, -1, -1,
        );
        let rg_lo = _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1);
        let rg_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, -1, -1, -1, -1, -1, 0, 3, 6);
        let b_lo = _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        let b_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, -1, -1, -1, -1, -1, -1, -1, -1);
        let mut padded: Vec<u8> = Vec::new();
        let mut r = 0;
        while r < rows {
            let valid = (rows - r).min(8);
            // The 4-byte read of the last column ends 1 byte past it, so the block must be followed
            // by at least one byte; otherwise (and for a short block) gather from a padded copy.
            let base = if valid == 8 && (r + 7) * stride_in + col_hi * 3 < src.len() {
                src.as_ptr().add(r * stride_in)
            } else {
                padded.clear();
                padded.extend_from_slice(&src[r * stride_in..(r + valid) * stride_in]);
                padded.resize(8 * stride_in + 1, 0);
                padded.as_ptr()
            };
            // Columns 8 at a time: load each row's 24 bytes, split them into R, G, B bytes and
            // transpose 8 rows x 8 columns of bytes, so that each column's 8 rows become one vector.
            let mut x = 0;
            while x + 8 <= ncols {
                let mut rg = [_mm_setzero_si128(); 8];
                let mut bb = [_mm_setzero_si128(); 8];
                for j in 0..8 {
                    let p = base.add(j * stride_in + (col_lo + x) * 3);
                    let lo = _mm_loadu_si128(p as *const __m128i);
                    let hi = _mm_loadl_epi64(p.add(16) as *const __m128i);
                    rg[j] = _mm_or_si128(_mm_shuffle_epi8(lo, rg_lo), _mm_shuffle_epi8(hi, rg_hi));
                    bb[j] = _mm_or_si128(_mm_shuffle_epi8(lo, b_lo), _mm_shuffle_epi8(hi, b_hi));
                }
                // Byte transpose: 8 lines of 8 bytes (row j: columns 0..8) into 4 registers holding
                // two columns each (8 bytes: rows 0..8).
                let transpose = |l: [__m128i; 4]| {
                    let b0 = _mm_unpacklo_epi16(l[0], l[1]);
                    let b1 = _mm_unpackhi_epi16(l[0], l[1]);
                    let b2 = _mm_unpacklo_epi16(l[2], l[3]);
                    let b3 = _mm_unpackhi_epi16(l[2], l[3]);
                    [
                        _mm_unpacklo_epi32(b0, b2),
                        _mm_unpackhi_epi32(b0, b2),
                        _mm_unpacklo_epi32(b1, b3),
                        _mm_unpackhi_epi32(b1, b3),
                    ]
                };
                let pairs = |f: fn(__m128i, __m128i) -> __m128i, l: &[__m128i; 8]| {
                    [f(l[0], l[1]), f(l[2], l[3]), f(l[4], l[5]), f(l[6], l[7])]
                };
                let red = transpose(pairs(_mm_unpacklo_epi8, &rg));
                let green = transpose(pairs(_mm_unpackhi_epi8, &rg));
                let blue = transpose(pairs(_mm_unpacklo_epi8, &bb));
                for (ch, two) in [red, green, blue].iter().enumerate() {
                    for (m, &v) in two.iter().enumerate() {
                        cols[(x + 2 * m) * 3 + ch] = _mm256_cvtepu8_epi32(v);
                        cols[(x + 2 * m + 1) * 3 + ch] =
                            _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v, v));
                    }
                }
                x += 8;
            }
            for (x, c) in cols.chunks_exact_mut(3).enumerate().skip(x) {
                let p = base.add((col_lo + x) * 3) as *const i32;
                let v = _mm256_i32gather_epi32::<1>(p, offs);
                c[0] = _mm256_and_si256(v, byte);
                c[1] = _mm256_and_si256(_mm256_srli_epi32::<8>(v), byte);
                c[2] = _mm256_and_si256(_mm256_srli_epi32::<16>(v), byte);
            }
            let mut i0 = 0;
            while i0 < ww {
                let count = (ww - i0).min(8);
                // px[k] lane j = output pixel i0 + k of row r + j, as the bytes R, G, B, 0.
                let mut px = [zero; 8];
                for (k, pk) in px.iter_mut().enumerate().take(count) {
                    let o = x0 + i0 + k;
                    let (mut ar, mut ag, mut ab) = (half, half, half);
                    let first = &cols[(t.start[o] - col_lo) * 3..];
                    for (c, &w) in first.chunks_exact(3).zip(t.weights(o)) {
                        let kv = _mm256_set1_epi32(w);
                        ar = _mm256_add_epi32(ar, _mm256_mullo_epi32(c[0], kv));
                        ag = _mm256_add_epi32(ag, _mm256_mullo_epi32(c[1], kv));
                        ab = _mm256_add_epi32(ab, _mm256_mullo_epi32(c[2], kv));
                    }
                    let clamp = |a| {
                        _mm256_min_epi32(_mm256_max_epi32(_mm256_srai_epi32::<22>(a), zero), max)
                    };
                    *pk = _mm256_or_si256(
                        _mm256_or_si256(clamp(ar), _mm256_slli_epi32::<8>(clamp(ag))),
                        _mm256_slli_epi32::<16>(clamp(ab)),
                    );
                }
                // 8x8 transpose of 32-bit values: rows[j] lane k = output pixel i0 + k of row r + j.
                let t0 = _mm256_unpacklo_epi32(px[0], px[1]);
                let t1 = _mm256_unpackhi_epi32(px[0], px[1]);
                let t2 = _mm256_unpacklo_epi32(px[2], px[3]);
                let t3 = _mm256_unpackhi_epi32(px[2], px[3]);
                let t4 = _mm256_unpacklo_epi32(px[4], px[5]);
                let t5 = _mm256_unpackhi_epi32(px[4], px[5]);
                let t6 = _mm256_unpacklo_epi32(px[6], px[7]);
                let t7 = _mm256_unpackhi_epi32(px[6], px[7]);
                let u0 = _mm256_unpacklo_epi64(t0, t2);
                let u1 = _mm256_unpackhi_epi64(t0, t2);
                let u2 = _mm256_unpacklo_epi64(t1, t3);
                let u3 = _mm256_unpackhi_epi64(t1, t3);
                let u4 = _mm256_unpacklo_epi64(t4, t6);
                let u5 = _mm256_unpackhi_epi64(t4, t6);
                let u6 = _mm256_unpacklo_epi64(t5, t7);
                let u7 = _mm256_unpackhi_epi64(t5, t7);
                let rows8 = [
                    _mm256_permute2x128_si256::<0x20>(u0, u4),
                    _mm256_permute2x128_si256::<0x20>(u1, u5),
                    _mm256_permute2x128_si256::<0x20>(u2, u6),
                    _mm256_permute2x128_si256::<0x20>(u3, u7),
                    _mm256_permute2x128_si256::<0x31>(u0, u4),
                    _mm256_permute2x128_si256::<0x31>(u1, u5),
                    _mm256_permute2x128_si256::<0x31>(u2, u6),
                    _mm256_permute2x128_si256::<0x31>(u3, u7),
                ];
                for (j, &row) in rows8.iter().enumerate().take(valid) {
                    // Drop the zero bytes: each 128-bit half holds 4 pixels in its first 12 bytes.
                    let packed = _mm256_shuffle_epi8(row, pack);
                    let at = (r + j) * stride_mid + i0 * 3;
                    if count == 8 {
                        let dst = &mut mid[at..at + 24];
                        let lo = _mm256_castsi256_si128(packed);
                        let hi = _mm256_extracti128_si256::<1>(packed);
                        _mm_storel_epi64(dst.as_mut_ptr() as *mut __m128i, lo);
                        dst[8..12].copy_from_slice(&_mm_extract_epi32::<2>(lo).to_le_bytes());
                        _mm_storel_epi64(dst.as_mut_ptr().add(12) as *mut __m128i, hi);
                        dst[20..24].copy_from_slice(&_mm_extract_epi32::<2>(hi).to_le_bytes());
                    } else {
                        let mut bytes = [0u8; 32];
                        _mm256_storeu_si256(bytes.as_mut_ptr() as *mut __m256i, packed);
                        let n_lo = count.min(4) * 3;
                        mid[at..at + n_lo].copy_from_slice(&bytes[..n_lo]);
                        let n_hi = count * 3 - n_lo;
                        mid[at + n_lo..at + n_lo + n_hi].copy_from_slice(&bytes[16..16 + n_hi]);
                    }
                }
                i0 += count;
            }
            r += valid;
        }
    }
}

/// Transposes RGB pixels: `src` has `src_rows` rows of `stride` bytes; pixel columns
/// `col_lo..col_hi` become rows of `dst`, each `src_rows * 3` bytes long.
///
/// Written with plain slice indexing (no `copy_nonoverlapping`), which stays fast in the dev
/// profile where precondition checks are on.
#[inline(always)]
fn transpose_px(
    src: &[u8],
    stride: usize,
    col_lo: usize,
    col_hi: usize,
    src_rows: usize,
    dst: &mut [u8],
) {
    const TILE: usize = 16;
    let dstride = src_rows * 3;
    let ncols = col_hi - col_lo;
    for yb in (0..src_rows).step_by(TILE) {
        let ye = (yb + TILE).min(src_rows);
        let rows: Vec<&[u8]> = (yb..ye)
            .map(|y| &src[y * stride + col_lo * 3..y * stride + col_hi * 3])
            .collect();
        for (xi, drow) in dst.chunks_exact_mut(dstride).take(ncols).enumerate() {
            let dtile = &mut drow[yb * 3..ye * 3];
            for (d, row) in dtile.chunks_exact_mut(3).zip(&rows) {
                let px = &row[xi * 3..xi * 3 + 3];
                d[0] = px[0];
                d[1] = px[1];
                d[2] = px[2];
            }
        }
    }
}

/// `out[i] = clip8(2^21 + sum_t src[(first + t) * stride + i] * weights[t])`: Pillow's inner loop
/// for one output line, over whole source lines so that it vectorises.
#[inline(always)]
fn convolve_rows(src: &[u8], stride: usize, first: usize, weights: &[i32], out: &mut [u8]) {
    let len = out.len();
    if let Some(last) = weights.len().checked_sub(1) {
        assert!(
            (first + last) * stride + len <= src.len(),
            "taps inside the source"
        );
    }
    let mut x = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available, and every line read lies inside `src` (asserted above).
            x = unsafe { convolve_rows_avx2(src, stride, first, weights, out) };
        }
    }
    for i in x..len {
        let mut a = 1i32 << (PRECISION_BITS - 1);
        for (t, &k) in weights.iter().enumerate() {
            a += src[(first + t) * stride + i] as i32 * k;
        }
        out[i] = clip8(a);
    }
}

/// AVX2 body of [`convolve_rows`]: 32 outputs at a time in four 8-lane i32 accumulators, then
/// shift, saturate to `0..=255` (the same as `clip8`) and store. Returns how many outputs it wrote.
///
/// # Safety
/// AVX2 must be available and `src` must hold `(first + weights.len() - 1) * stride + out.len()`
/// bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn convolve_rows_avx2(
    src: &[u8],
    stride: usize,
    first: usize,
    weights: &[i32],
    out: &mut [u8],
) -> usize {
    // SAFETY: the caller guarantees AVX2 and that `src` holds
    // `(first + weights.len() - 1) * stride + out.len()` bytes, so each 32-byte read at
    // `(first + t) * stride + x` with `x + 32 <= out.len()` is inside `src`; the 32-byte store at
    // `x` is inside `out`.
    unsafe {
        use std::arch::x86_64::*;
        let len = out.len();
        let base = src.as_ptr().add(first * stride);
        let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut x = 0;
        while x + 32 <= len {
            let (mut a0, mut a1, mut a2, mut a3) = (half, half, half, half);
            for (t, &k) in weights.iter().enumerate() {
                let kv = _mm256_set1_epi32(k);
                let p = base.add(t * stride + x);
                let v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
                let v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i));
                let v2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(16) as *const __m128i));
                let v3 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(24) as *const __m128i));
                a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(v0, kv));
                a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(v1, kv));
                a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(v2, kv));
                a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(v3, kv));
            }
            let s0 = _mm256_srai_epi32::<22>(a0);
            let s1 = _mm256_srai_epi32::<22>(a1);
            let s2 = _mm256_srai_epi32::<22>(a2);
            let s3 = _mm256_srai_epi32::<22>(a3);
            // packs/packus work per 128-bit lane; the permute restores the 4-byte groups' order.
            let p01 = _mm256_packs_epi32(s0, s1);
            let p23 = _mm256_packs_epi32(s2, s3);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), order);
            _mm256_storeu_si256(out.as_mut_ptr().add(x) as *mut __m256i, bytes);
            x += 32;
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32) -> RgbImage {
        let mut s = 12345u32;
        RgbImage::from_fn(w, h, |_, _| {
            let mut c = [0u8; 3];
            for v in &mut c {
                s = s.wrapping_mul(1103515245).wrapping_add(12345);
                *v = (s >> 16) as u8;
            }
            image::Rgb(c)
        })
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(650, 416), (275, 416), (10, 3), (3, 10), (1, 5)] {
            let t = Taps::new(i, o);
            for oo in 0..o {
                let s: i32 = t.weights(oo).iter().sum();
                assert!(
                    (s - (1 << 22)).abs() <= t.len[oo] as i32,
                    "{i}->{o} at {oo}: {s}"
                );
            }
        }
    }

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let img = noise(7, 5);
        assert_eq!(resize_bicubic(&img, 7, 5), img);
        let flat = RgbImage::from_pixel(13, 9, image::Rgb([200, 3, 77]));
        let r = resize_bicubic(&flat, 29, 4);
        assert!(r.pixels().all(|p| p.0 == [200, 3, 77]));
    }

    #[test]
    fn region_equals_crop_of_full_resize() {
        let img = noise(37, 23);
        for (ow, oh) in [(80, 50), (20, 11), (37, 60), (50, 23)] {
            let full = resize_bicubic(&img, ow, oh);
            let win = Window {
                x0: 5,
                y0: 3,
                x1: ow - 7,
                y1: oh - 2,
            };
            let part = resize_bicubic_region(&img, ow, oh, win);
            for y in win.y0..win.y1 {
                for x in win.x0..win.x1 {
                    assert_eq!(
                        part.get_pixel((x - win.x0) as u32, (y - win.y0) as u32),
                        full.get_pixel(x as u32, y as u32)
                    );
                }
            }
        }
    }

    #[test]
    fn downscale_by_two_matches_hand_computed_taps() {
        // 4 -> 2 pixels: ratio 2, support 4; output 0 has centre 1.0 and reads inputs 0..4
        // (trunc(5.5) = 5 clamped to 4) with K(-0.25), K(0.25), K(0.75), K(1.25) =
        // 0.8671875, 0.8671875, 0.2265625, -0.0703125, normalised by their sum 1.890625.
        let t = Taps::new(4, 2);
        assert_eq!((t.start[0], t.len[0]), (0, 4));
        assert_eq!(t.weights(0), &[1923834, 1923834, 502623, -155987]);
        // Pixel values 0, 0, 255, 255: (255 * (502623 - 155987) + 2^21) >> 22 = 21.
        let img = RgbImage::from_fn(4, 1, |x, _| image::Rgb([if x < 2 { 0 } else { 255 }; 3]));
        let r = resize_bicubic(&img, 2, 1);
        assert_eq!(r.get_pixel(0, 0).0, [21, 21, 21]);
    }

    #[test]
    fn row_kernel_matches_scalar_including_saturation() {
        let stride = 101;
        let src: Vec<u8> = (0..stride * 6).map(|i| (i * 37 % 256) as u8).collect();
        // Large positive and negative weights drive many sums past 255 and below 0.
        let weights = [3_000_000, -2_500_000, 4_194_304, 700_000, -1_000_000];
        let mut saturated = false;
        for len in [1, 31, 32, 64, 77, 100] {
            let mut out = vec![0u8; len];
            convolve_rows(&src, stride, 1, &weights, &mut out);
            for (i, &o) in out.iter().enumerate() {
                let mut a: i64 = 1 << 21;
                for (t, &k) in weights.iter().enumerate() {
                    a += src[(1 + t) * stride + i] as i64 * k as i64;
                }
                assert_eq!(o as i64, (a >> 22).clamp(0, 255), "len {len} at {i}");
            }
            saturated |= out.contains(&0) && out.contains(&255);
        }
        assert!(saturated, "saturation exercised");
    }

    #[test]
    fn avx2_and_portable_horizontal_passes_agree() {
        for (w, h, ow) in [
            (37, 23, 80),
            (650, 17, 416),
            (275, 9, 416),
            (64, 8, 64 + 13),
            (100, 16, 31),
        ] {
            let img = noise(w as u32, h as u32);
            let t = Taps::new(w, ow);
            let mut portable = vec![0u8; h * ow * 3];
            horizontal_transposed(img.as_raw(), w * 3, h, &t, 0, ow, &mut portable);
            // The portable pass is Pillow's per-pixel formula.
            for y in 0..h {
                for o in 0..ow {
                    for c in 0..3 {
                        let mut a = 1i32 << 21;
                        for (tap, &k) in t.weights(o).iter().enumerate() {
                            a += img.as_raw()[y * w * 3 + (t.start[o] + tap) * 3 + c] as i32 * k;
                        }
                        assert_eq!(portable[(y * ow + o) * 3 + c], clip8(a));
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                let mut fast = vec![0u8; h * ow * 3];
                // SAFETY: AVX2 checked; the taps come from Taps::new(w, ow).
                unsafe { horizontal_avx2(img.as_raw(), w * 3, h, &t, 0, &mut fast) };
                assert_eq!(fast, portable, "{w}x{h} -> {ow}");
            }
        }
    }
}
