//! keras-yolo3's `get_random_data`: the training-time augmentation (`random = true`) and the
//! deterministic letterbox (`random = false`), returning a CHW f32 image in `[0, 1]` and the boxes
//! in input pixels.
//!
//! The random path follows keras-yolo3's order of operations and of random draws exactly (aspect
//! jitter, scale, placement, flip, hue, saturation, value, then the box shuffle), with two speed
//! changes that do not alter the result: only the part of the resized image that lands on the
//! canvas is computed (with the bit-exact Pillow BICUBIC port of [`crate::resize`]), and the
//! flip is applied while writing the output instead of as a separate pass. The HSV distortion is
//! computed in f32 (keras-yolo3 uses matplotlib in f64); the grey canvas, a constant, is
//! converted once.

use std::mem::MaybeUninit;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::annotation::BoxLabel;
use crate::input_shape::InputShape;
use crate::letterbox::{letterbox_chw_uninit, LetterboxParams, GREY};
use crate::resize::{resize_region_rows, Window};
use crate::uninit::{as_uninit, fill};

/// Augmentation settings, defaults equal to keras-yolo3's `get_random_data` arguments.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Aspect-ratio jitter: the aspect is multiplied by `U(1-j, 1+j) / U(1-j, 1+j)`.
    pub jitter: f64,
    /// Hue shift range, `U(-hue, hue)` (hue in `[0, 1)`).
    pub hue: f64,
    /// Saturation factor `U(1, sat)` or its inverse, with probability 1/2 each.
    pub sat: f64,
    /// Value factor `U(1, val)` or its inverse, with probability 1/2 each.
    pub val: f64,
    /// At most this many boxes are kept per image.
    pub max_boxes: usize,
    /// Probability that the [`crate::BatchLoader`] builds an augmented training sample as a 2x2
    /// [`crate::mosaic`] of it and three more images instead of with [`get_random_data`]
    /// (ultralytics' mosaic). 0 (the default) is keras-yolo3: no mosaic, and no extra random
    /// draws. [`get_random_data`] itself ignores this field.
    pub mosaic: f64,
    /// Probability that the [`crate::BatchLoader`] blends an augmented training sample with a
    /// second one ([`crate::mixup_into`], ultralytics' mixup: ratio `Beta(32, 32)`, the boxes of
    /// both). 0 (the default) is keras-yolo3: no mixup, and no extra random draws.
    pub mixup: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            jitter: 0.3,
            hue: 0.1,
            sat: 1.5,
            val: 1.5,
            max_boxes: 20,
            mosaic: 0.0,
            mixup: 0.0,
        }
    }
}

/// One preprocessed image: what `get_random_data` returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The image, planar `(3, h, w)` (CHW), values in `[0, 1]`.
    pub image: Vec<f32>,
    /// Boxes in input pixels (at most `max_boxes`), without keras-yolo3's zero padding rows.
    pub boxes: Vec<BoxLabel>,
}

/// The random draws of one augmentation, in keras-yolo3's order. Exposed so tests can fix them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentParams {
    /// Resized width of the image on the canvas.
    pub nw: usize,
    /// Resized height.
    pub nh: usize,
    /// Paste column (may be negative: the image then starts left of the canvas).
    pub dx: i64,
    /// Paste row (may be negative).
    pub dy: i64,
    /// Whether the canvas is mirrored left-right.
    pub flip: bool,
    /// Hue shift.
    pub hue: f32,
    /// Saturation factor.
    pub sat: f32,
    /// Value factor.
    pub val: f32,
}

/// keras-yolo3's `rand(a, b)`.
pub(crate) fn rand_range(rng: &mut impl Rng, a: f64, b: f64) -> f64 {
    rng.random::<f64>() * (b - a) + a
}

impl AugmentParams {
    /// Draws the parameters as keras-yolo3 does, in the same order. Sizes are at least 1 pixel
    /// (keras-yolo3 would hand Pillow a zero size, which it refuses, for extreme draws).
    pub fn sample(rng: &mut impl Rng, input: InputShape, cfg: &AugmentConfig) -> Self {
        let (w, h) = (input.w as f64, input.h as f64);
        let j = cfg.jitter;
        let a1 = rand_range(rng, 1.0 - j, 1.0 + j);
        let a2 = rand_range(rng, 1.0 - j, 1.0 + j);
        let new_ar = w / h * a1 / a2;
        let scale = rand_range(rng, 0.25, 2.0);
        let (nw, nh) = if new_ar < 1.0 {
            let nh = ((scale * h) as usize).max(1);
            (((nh as f64 * new_ar) as usize).max(1), nh)
        } else {
            let nw = ((scale * w) as usize).max(1);
            (nw, ((nw as f64 / new_ar) as usize).max(1))
        };
        // int() truncates toward zero, also for the negative offsets of images larger than the canvas.
        let dx = rand_range(rng, 0.0, w - nw as f64) as i64;
        let dy = rand_range(rng, 0.0, h - nh as f64) as i64;
        let (flip, hue, sat, val) = sample_flip_hsv(rng, cfg);
        Self {
            nw,
            nh,
            dx,
            dy,
            flip,
            hue,
            sat,
            val,
        }
    }
}

/// The last draws of keras-yolo3's `get_random_data`, in its order: flip, hue, saturation,
/// value. Shared by [`AugmentParams::sample`] and the mosaic so both distort alike.
pub(crate) fn sample_flip_hsv(rng: &mut impl Rng, cfg: &AugmentConfig) -> (bool, f32, f32, f32) {
    let flip = rng.random::<f64>() < 0.5;
    let hue = rand_range(rng, -cfg.hue, cfg.hue);
    let sat = if rng.random::<f64>() < 0.5 {
        rand_range(rng, 1.0, cfg.sat)
    } else {
        1.0 / rand_range(rng, 1.0, cfg.sat)
    };
    let val = if rng.random::<f64>() < 0.5 {
        rand_range(rng, 1.0, cfg.val)
    } else {
        1.0 / rand_range(rng, 1.0, cfg.val)
    };
    (flip, hue as f32, sat as f32, val as f32)
}

/// keras-yolo3's `get_random_data` on a decoded image.
///
/// `random = false`: letterbox (bit-exact Pillow BICUBIC, grey 128), boxes shuffled, truncated to
/// `max_boxes`, mapped with `int(v * scale + offset)` and not clipped.
/// `random = true`: see [`augment_with_params`]; draws come from `rng` in keras-yolo3's order.
///
/// ```
/// use rand::SeedableRng;
/// use yolo_data::{get_random_data, AugmentConfig, BoxLabel, InputShape};
///
/// let image = image::RgbImage::from_pixel(650, 417, image::Rgb([200, 10, 10]));
/// let boxes = [BoxLabel { x_min: 81.0, y_min: 88.0, x_max: 522.0, y_max: 408.0, class: 0 }];
/// let input = InputShape::new(416, 416).unwrap();
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let s = get_random_data(&image, &boxes, input, false, &AugmentConfig::default(), &mut rng);
/// assert_eq!(s.image.len(), 3 * 416 * 416);
/// // Letterbox: scale 0.64, offset (0, 75), truncated like keras-yolo3.
/// assert_eq!((s.boxes[0].x_min, s.boxes[0].y_min, s.boxes[0].x_max, s.boxes[0].y_max), (51.0, 131.0, 334.0, 336.0));
/// ```
pub fn get_random_data(
    image: &RgbImage,
    boxes: &[BoxLabel],
    input: InputShape,
    random: bool,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> Sample {
    let mut out = vec![0f32; 3 * input.w * input.h];
    let boxes = get_random_data_into(image, boxes, input, random, cfg, rng, &mut out);
    Sample { image: out, boxes }
}

/// [`get_random_data`] writing the image into `out` (`3 * h * w` values, every one overwritten)
/// instead of a new buffer, so a batch loader can fill its batch tensor in place; returns the
/// boxes. Same values, same draws.
///
/// # Panics
/// When `out.len() != 3 * input.h * input.w`.
pub fn get_random_data_into(
    image: &RgbImage,
    boxes: &[BoxLabel],
    input: InputShape,
    random: bool,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
    out: &mut [f32],
) -> Vec<BoxLabel> {
    get_random_data_uninit(image, boxes, input, random, cfg, rng, as_uninit(out))
}

/// [`get_random_data_into`] on memory that need not be initialised: every value of `out` is
/// written exactly once.
pub(crate) fn get_random_data_uninit(
    image: &RgbImage,
    boxes: &[BoxLabel],
    input: InputShape,
    random: bool,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
    out: &mut [MaybeUninit<f32>],
) -> Vec<BoxLabel> {
    if !random {
        let p = LetterboxParams::new(image.width() as usize, image.height() as usize, input);
        let mut b = boxes.to_vec();
        b.shuffle(rng);
        b.truncate(cfg.max_boxes);
        letterbox_chw_uninit(image, input, out);
        return b.iter().map(|b| p.map_box(b)).collect();
    }
    let params = AugmentParams::sample(rng, input, cfg);
    let mut b = boxes.to_vec();
    b.shuffle(rng);
    augment_with_params_uninit(image, &b, input, &params, cfg.max_boxes, out)
}

/// The random path of `get_random_data` with fixed draws (boxes are not shuffled here): resize to
/// `nw x nh`, paste at `(dx, dy)` on grey, mirror if `flip`, HSV distortion clamped to `[0, 1]`;
/// boxes mapped with `int(v * n / i + d)`, mirrored, clipped to the canvas, dropped when their
/// width or height is `<= 1`, then at most `max_boxes` kept.
pub fn augment_with_params(
    image: &RgbImage,
    boxes: &[BoxLabel],
    input: InputShape,
    p: &AugmentParams,
    max_boxes: usize,
) -> Sample {
    let mut out = vec![0f32; 3 * input.w * input.h];
    let boxes = augment_with_params_into(image, boxes, input, p, max_boxes, &mut out);
    Sample { image: out, boxes }
}

/// [`augment_with_params`] writing the image into `out` (`3 * h * w` values, every one
/// overwritten); returns the boxes.
///
/// The canvas outside the pasted window gets the distorted grey, the window gets the resized
/// rows streamed from [`resize_region_rows`], distorted straight into the three planes (mirrored
/// rows stored right to left), so every value is written once.
///
/// # Panics
/// When `out.len() != 3 * input.h * input.w`.
pub fn augment_with_params_into(
    image: &RgbImage,
    boxes: &[BoxLabel],
    input: InputShape,
    p: &AugmentParams,
    max_boxes: usize,
    out: &mut [f32],
) -> Vec<BoxLabel> {
    augment_with_params_uninit(image, boxes, input, p, max_boxes, as_uninit(out))
}

/// [`augment_with_params_into`] on memory that need not be initialised: every value of `out` is
/// written exactly once.
pub(crate) fn augment_with_params_uninit(
    image: &RgbImage,
    boxes: &[BoxLabel],
    input: InputShape,
    p: &AugmentParams,
    max_boxes: usize,
    out: &mut [MaybeUninit<f32>],
) -> Vec<BoxLabel> {
    let (w, h) = (input.w, input.h);
    let plane = w * h;
    assert_eq!(
        out.len(),
        3 * plane,
        "output buffer of 3 x {h} x {w} values"
    );
    let (iw, ih) = (image.width() as usize, image.height() as usize);
    let hsv = Hsv::new(p.hue, p.sat, p.val);
    let grey = hsv.apply(GREY, GREY, GREY);

    // The visible part of the resized image, in resized pixels.
    let win = Window {
        x0: (-p.dx).max(0) as usize,
        y0: (-p.dy).max(0) as usize,
        x1: (w as i64 - p.dx).clamp(0, p.nw as i64) as usize,
        y1: (h as i64 - p.dy).clamp(0, p.nh as i64) as usize,
    };
    let visible = win.x1 > win.x0 && win.y1 > win.y0;
    // Canvas rows cy0..cy1 and columns start..start + pw receive the image (mirrored placement:
    // canvas column cx goes to w - 1 - cx); everything else is grey.
    let (cy0, cy1, start, pw) = if visible {
        let pw = win.x1 - win.x0;
        let cx0 = (p.dx + win.x0 as i64) as usize;
        let cy0 = (p.dy + win.y0 as i64) as usize;
        let start = if p.flip { w - cx0 - pw } else { cx0 };
        (cy0, cy0 + (win.y1 - win.y0), start, pw)
    } else {
        (0, 0, 0, 0)
    };
    for (chunk, &g) in out.chunks_exact_mut(plane).zip(&grey) {
        fill(&mut chunk[..cy0 * w], g);
        fill(&mut chunk[cy1 * w..], g);
        for row in chunk[cy0 * w..cy1 * w].chunks_exact_mut(w) {
            fill(&mut row[..start], g);
            fill(&mut row[start + pw..], g);
        }
    }

    if visible {
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        resize_region_rows(image, p.nw, p.nh, win, |ry, row| {
            let at = (cy0 + ry) * w + start;
            hsv.apply_row(
                row,
                &mut r_plane[at..at + pw],
                &mut g_plane[at..at + pw],
                &mut b_plane[at..at + pw],
                p.flip,
            );
        });
    }

    let (wf, hf) = (w as f64, h as f64);
    let mut kept = Vec::with_capacity(boxes.len().min(max_boxes));
    for b in boxes {
        let mx = |v: f32| (v as f64 * p.nw as f64 / iw as f64 + p.dx as f64).trunc();
        let my = |v: f32| (v as f64 * p.nh as f64 / ih as f64 + p.dy as f64).trunc();
        let (mut x0, mut y0, mut x1, mut y1) = (mx(b.x_min), my(b.y_min), mx(b.x_max), my(b.y_max));
        if p.flip {
            (x0, x1) = (wf - x1, wf - x0);
        }
        // keras-yolo3 clips the minima at 0 and the maxima at the canvas size only.
        x0 = x0.max(0.0);
        y0 = y0.max(0.0);
        x1 = x1.min(wf);
        y1 = y1.min(hf);
        if x1 - x0 > 1.0 && y1 - y0 > 1.0 {
            kept.push(BoxLabel {
                x_min: x0 as f32,
                y_min: y0 as f32,
                x_max: x1 as f32,
                y_max: y1 as f32,
                class: b.class,
            });
        }
    }
    kept.truncate(max_boxes);
    kept
}

/// matplotlib's `rgb_to_hsv` / `hsv_to_rgb` round trip with keras-yolo3's distortion in between,
/// in f32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hsv {
    hue: f32,
    sat: f32,
    val: f32,
}

impl Hsv {
    pub(crate) fn new(hue: f32, sat: f32, val: f32) -> Self {
        Self { hue, sat, val }
    }

    /// One pixel. Branch-free (selects only) so that [`Hsv::apply_row`] vectorises.
    #[inline(always)]
    fn apply(&self, r: u8, g: u8, b: u8) -> [f32; 3] {
        const INV255: f32 = 1.0 / 255.0;
        let (r, g, b) = (r as f32 * INV255, g as f32 * INV255, b as f32 * INV255);
        let v = r.max(g).max(b);
        let delta = v - r.min(g).min(b);
        let s = if v > 0.0 { delta / v } else { 0.0 };
        // matplotlib assigns the r, then g, then b cases, so the last matching maximum wins;
        // `(h / 6) % 1` needs one wrap since h / 6 lies in [-1/6, 5/6].
        let inv_d = if delta > 0.0 { 1.0 / delta } else { 0.0 };
        let h_r = (g - b) * inv_d;
        let h_g = 2.0 + (b - r) * inv_d;
        let h_b = 4.0 + (r - g) * inv_d;
        let h = if b == v {
            h_b
        } else if g == v {
            h_g
        } else {
            h_r
        } / 6.0;
        let h = if h < 0.0 { h + 1.0 } else { h };
        let h = if delta > 0.0 { h } else { 0.0 };
        // keras-yolo3: shift the hue and wrap once, scale s and v, clamp everything to [0, 1].
        let h = h + self.hue;
        let h = if h > 1.0 { h - 1.0 } else { h };
        let h = if h < 0.0 { h + 1.0 } else { h };
        let h = h.clamp(0.0, 1.0);
        let s = (s * self.sat).clamp(0.0, 1.0);
        let v = (v * self.val).clamp(0.0, 1.0);
        // matplotlib's hsv_to_rgb; h6 >= 0 so truncation is floor; i = 6 (h = 1) is sector 0.
        let h6 = h * 6.0;
        let i = h6 as i32;
        let f = h6 - i as f32;
        let p = v * (1.0 - s);
        let q = v * (1.0 - s * f);
        let t = v * (1.0 - s * (1.0 - f));
        let r = if i == 1 {
            q
        } else if i == 2 || i == 3 {
            p
        } else if i == 4 {
            t
        } else {
            v
        };
        let g = if i == 1 || i == 2 {
            v
        } else if i == 3 {
            q
        } else if i == 4 || i == 5 {
            p
        } else {
            t
        };
        let b = if i == 3 || i == 4 {
            v
        } else if i == 2 {
            t
        } else if i == 5 {
            q
        } else {
            p
        };
        [r, g, b]
    }

    /// A row of interleaved RGB pixels (`3n` bytes) into the planar rows `r`, `g`, `b` (`n` each),
    /// mirrored (pixel `k` to position `n - 1 - k`) when `flip`.
    pub(crate) fn apply_row(
        &self,
        px: &[u8],
        r: &mut [MaybeUninit<f32>],
        g: &mut [MaybeUninit<f32>],
        b: &mut [MaybeUninit<f32>],
        flip: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is available, checked just above.
                return unsafe { self.apply_row_avx2(px, r, g, b, flip) };
            }
        }
        self.apply_row_impl(px, r, g, b, flip)
    }

    /// AVX2 version of [`Hsv::apply`] over 8 pixels at a time: the same f32 operations in the
    /// same order (no FMA contraction, true divisions, selects as blends), so every value is
    /// bit-identical to the scalar function, which does the last `n % 8` pixels (for finite
    /// hue, saturation and value factors: a NaN would truncate to another hue sector).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_row_avx2(
        &self,
        px: &[u8],
        r: &mut [MaybeUninit<f32>],
        g: &mut [MaybeUninit<f32>],
        b: &mut [MaybeUninit<f32>],
        flip: bool,
    ) {
        // SAFETY: the caller guarantees AVX2; with `k + 8 <= n`, the 24 bytes read at
        // `3 * k` lie inside `px` (`n <= px.len() / 3`) and the 8 floats stored at `at` (`k` or
        // `n - 8 - k`) lie inside `r`, `g` and `b` (each at least `n` long).
        unsafe {
            use std::arch::x86_64::*;
            let n = (px.len() / 3).min(r.len()).min(g.len()).min(b.len());
            // Byte positions of each channel in 24 bytes of RGB: the first 16 bytes give 6, 5 and 5
            // of the 8 values, the last 8 bytes the rest (-1 zeroes a byte).
            let sr_lo = _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
            let sr_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, -1, -1, -1, -1, -1, -1, -1, -1);
            let sg_lo = _mm_setr_epi8(1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
            let sg_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, 0, 3, 6, -1, -1, -1, -1, -1, -1, -1, -1);
            let sb_lo = _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
            let sb_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, -1, -1, -1, -1, -1, -1, -1, -1);
            const INV255: f32 = 1.0 / 255.0;
            let inv255 = _mm256_set1_ps(INV255);
            let zero = _mm256_setzero_ps();
            let one = _mm256_set1_ps(1.0);
            let two = _mm256_set1_ps(2.0);
            let four = _mm256_set1_ps(4.0);
            let six = _mm256_set1_ps(6.0);
            let (hue, sat, val) = (
                _mm256_set1_ps(self.hue),
                _mm256_set1_ps(self.sat),
                _mm256_set1_ps(self.val),
            );
            // f32::clamp(x, 0, 1) exactly: x < 0 gives 0, x > 1 gives 1, anything else (-0.0 and
            // NaN included) stays. max_ps(a, b) is `a > b ? a : b` and min_ps(a, b) `a < b ? a : b`,
            // so with the constant first they are those two tests.
            let clamp01 = |x: __m256| _mm256_min_ps(one, _mm256_max_ps(zero, x));
            // `if c { a } else { b }`.
            let sel = |c: __m256, a: __m256, b: __m256| _mm256_blendv_ps(b, a, c);
            let reverse = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
            let unit =
                |v: __m128i| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), inv255);
            let mut k = 0;
            while k + 8 <= n {
                let p = px.as_ptr().add(3 * k);
                let lo = _mm_loadu_si128(p as *const __m128i);
                let hi = _mm_loadl_epi64(p.add(16) as *const __m128i);
                let cr = unit(_mm_or_si128(
                    _mm_shuffle_epi8(lo, sr_lo),
                    _mm_shuffle_epi8(hi, sr_hi),
                ));
                let cg = unit(_mm_or_si128(
                    _mm_shuffle_epi8(lo, sg_lo),
                    _mm_shuffle_epi8(hi, sg_hi),
                ));
                let cb = unit(_mm_or_si128(
                    _mm_shuffle_epi8(lo, sb_lo),
                    _mm_shuffle_epi8(hi, sb_hi),
                ));

                let v = _mm256_max_ps(_mm256_max_ps(cr, cg), cb);
                let delta = _mm256_sub_ps(v, _mm256_min_ps(_mm256_min_ps(cr, cg), cb));
                let s = sel(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(v, zero),
                    _mm256_div_ps(delta, v),
                    zero,
                );
                let has_d = _mm256_cmp_ps::<_CMP_GT_OQ>(delta, zero);
                let inv_d = sel(has_d, _mm256_div_ps(one, delta), zero);
                let h_r = _mm256_mul_ps(_mm256_sub_ps(cg, cb), inv_d);
                let h_g = _mm256_add_ps(two, _mm256_mul_ps(_mm256_sub_ps(cb, cr), inv_d));
                let h_b = _mm256_add_ps(four, _mm256_mul_ps(_mm256_sub_ps(cr, cg), inv_d));
                let h = sel(
                    _mm256_cmp_ps::<_CMP_EQ_OQ>(cb, v),
                    h_b,
                    sel(_mm256_cmp_ps::<_CMP_EQ_OQ>(cg, v), h_g, h_r),
                );
                let h = _mm256_div_ps(h, six);
                let h = sel(
                    _mm256_cmp_ps::<_CMP_LT_OQ>(h, zero),
                    _mm256_add_ps(h, one),
                    h,
                );
                let h = sel(has_d, h, zero);
                let h = _mm256_add_ps(h, hue);
                let h = sel(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(h, one),
                    _mm256_sub_ps(h, one),
                    h,
                );
                let h = sel(
                    _mm256_cmp_ps::<_CMP_LT_OQ>(h, zero),
                    _mm256_add_ps(h, one),
                    h,
                );
                let h = clamp01(h);
                let s = clamp01(_mm256_mul_ps(s, sat));
                let v = clamp01(_mm256_mul_ps(v, val));

                let h6 = _mm256_mul_ps(h, six);
                let i = _mm256_cvttps_epi32(h6);
                let f = _mm256_sub_ps(h6, _mm256_cvtepi32_ps(i));
                let pp = _mm256_mul_ps(v, _mm256_sub_ps(one, s));
                let q = _mm256_mul_ps(v, _mm256_sub_ps(one, _mm256_mul_ps(s, f)));
                let t = _mm256_mul_ps(
                    v,
                    _mm256_sub_ps(one, _mm256_mul_ps(s, _mm256_sub_ps(one, f))),
                );
                let is = |c: i32| _mm256_castsi256_ps(_mm256_cmpeq_epi32(i, _mm256_set1_epi32(c)));
                let (i1, i2, i3, i4, i5) = (is(1), is(2), is(3), is(4), is(5));
                let or = |a: __m256, b: __m256| _mm256_or_ps(a, b);
                let out_r = sel(i1, q, sel(or(i2, i3), pp, sel(i4, t, v)));
                let out_g = sel(or(i1, i2), v, sel(i3, q, sel(or(i4, i5), pp, t)));
                let out_b = sel(or(i3, i4), v, sel(i2, t, sel(i5, q, pp)));
                let (at, out) = if flip {
                    (
                        n - 8 - k,
                        [out_r, out_g, out_b].map(|v| _mm256_permutevar8x32_ps(v, reverse)),
                    )
                } else {
                    (k, [out_r, out_g, out_b])
                };
                _mm256_storeu_ps(r.as_mut_ptr().add(at) as *mut f32, out[0]);
                _mm256_storeu_ps(g.as_mut_ptr().add(at) as *mut f32, out[1]);
                _mm256_storeu_ps(b.as_mut_ptr().add(at) as *mut f32, out[2]);
                k += 8;
            }
            // The last n - k pixels go to the end of the row, or mirrored to its start.
            let tail = if flip { 0..n - k } else { k..n };
            self.apply_row_impl(
                &px[3 * k..3 * n],
                &mut r[tail.clone()],
                &mut g[tail.clone()],
                &mut b[tail],
                flip,
            );
        }
    }

    #[inline(always)]
    fn apply_row_impl(
        &self,
        px: &[u8],
        r: &mut [MaybeUninit<f32>],
        g: &mut [MaybeUninit<f32>],
        b: &mut [MaybeUninit<f32>],
        flip: bool,
    ) {
        let n = px.len() / 3;
        for (k, p) in px.chunks_exact(3).enumerate() {
            let at = if flip { n - 1 - k } else { k };
            let [x, y, z] = self.apply(p[0], p[1], p[2]);
            r[at].write(x);
            g[at].write(y);
            b[at].write(z);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_distortion_keeps_colours() {
        let hsv = Hsv::new(0.0, 1.0, 1.0);
        for (r, g, b) in [
            (0, 0, 0),
            (255, 255, 255),
            (10, 200, 30),
            (255, 0, 128),
            (3, 3, 250),
            (128, 128, 128),
        ] {
            let out = hsv.apply(r, g, b);
            for (o, e) in out.iter().zip([r, g, b]) {
                assert!((o * 255.0 - e as f32).abs() < 1e-3, "{r},{g},{b}: {out:?}");
            }
        }
    }

    #[test]
    fn hue_shift_by_one_third_rotates_channels() {
        // Pure red shifted by 1/3 of the hue circle is pure green; value halving halves it.
        let out = Hsv::new(1.0 / 3.0, 1.0, 0.5).apply(255, 0, 0);
        assert!(
            (out[0]).abs() < 1e-6 && (out[1] - 0.5).abs() < 1e-6 && out[2].abs() < 1e-6,
            "{out:?}"
        );
        // Saturation 0 gives grey at the value.
        let out = Hsv::new(0.0, 0.0, 1.0).apply(200, 100, 0);
        assert!(
            out.iter().all(|&v| (v - 200.0 / 255.0).abs() < 1e-6),
            "{out:?}"
        );
        // Value above 1 is clamped.
        let out = Hsv::new(0.0, 1.0, 1.5).apply(250, 250, 250);
        assert_eq!(out, [1.0; 3]);
    }

    #[test]
    fn boxes_follow_keras_arithmetic() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([50, 60, 70]));
        let input = InputShape::new(96, 128).unwrap();
        let p = AugmentParams {
            nw: 150,
            nh: 60,
            dx: -10,
            dy: 20,
            flip: false,
            hue: 0.0,
            sat: 1.0,
            val: 1.0,
        };
        let boxes = [
            BoxLabel {
                x_min: 3.0,
                y_min: 10.0,
                x_max: 101.0,
                y_max: 55.0,
                class: 2,
            },
            // Maps to x 140.. beyond the canvas: x_max clipped to 128, x_min 140 stays, width < 0: dropped.
            BoxLabel {
                x_min: 200.0,
                y_min: 10.0,
                x_max: 199.0,
                y_max: 90.0,
                class: 1,
            },
        ];
        let s = augment_with_params(&img, &boxes, input, &p, 20);
        // x: 3*150/200 - 10 = -7.75 -> trunc -7 -> clipped 0; 101*0.75 - 10 = 65.75 -> 65
        // y: 10*0.6 + 20 = 26; 55*0.6+20 = 53
        assert_eq!(
            s.boxes,
            vec![BoxLabel {
                x_min: 0.0,
                y_min: 26.0,
                x_max: 65.0,
                y_max: 53.0,
                class: 2
            }]
        );
        let flipped =
            augment_with_params(&img, &boxes, input, &AugmentParams { flip: true, ..p }, 20);
        // Flip before clipping: x = 128 - 65 = 63, 128 - (-7) = 135 -> clipped 128.
        assert_eq!(
            flipped.boxes,
            vec![BoxLabel {
                x_min: 63.0,
                y_min: 26.0,
                x_max: 128.0,
                y_max: 53.0,
                class: 2
            }]
        );
        // The image covers rows 20..80; above it is grey.
        let plane = 96 * 128;
        assert_eq!(s.image[0], (128.0f32 / 255.0));
        assert!((s.image[30 * 128 + 5] - 50.0 / 255.0).abs() < 1e-6);
        assert!((s.image[plane + 30 * 128 + 5] - 60.0 / 255.0).abs() < 1e-6);
        assert!((s.image[2 * plane + 30 * 128 + 5] - 70.0 / 255.0).abs() < 1e-6);
        // The image spans canvas columns -10..140, so the whole width is covered.
        assert!((s.image[30 * 128 + 127] - 50.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn random_path_is_deterministic_for_a_seed() {
        use rand::SeedableRng;
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 77]));
        let boxes = [BoxLabel {
            x_min: 5.0,
            y_min: 6.0,
            x_max: 40.0,
            y_max: 30.0,
            class: 0,
        }];
        let input = InputShape::new(64, 96).unwrap();
        let cfg = AugmentConfig::default();
        let a = get_random_data(
            &img,
            &boxes,
            input,
            true,
            &cfg,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(7),
        );
        let b = get_random_data(
            &img,
            &boxes,
            input,
            true,
            &cfg,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(7),
        );
        let c = get_random_data(
            &img,
            &boxes,
            input,
            true,
            &cfg,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(8),
        );
        assert_eq!(a, b);
        assert_ne!(a.image, c.image);
        assert_eq!(a.image.len(), 3 * 64 * 96);
    }

    #[test]
    fn row_kernel_equals_pixel_function_and_f64_reference() {
        let hsv = Hsv::new(-0.07, 1.3, 0.8);
        let px: Vec<u8> = (0..3 * 517)
            .map(|i| ((i * 97 + i / 7) % 256) as u8)
            .collect();
        let mut out = vec![0f32; 3 * 517];
        let (r, rest) = out.split_at_mut(517);
        let (g, b) = rest.split_at_mut(517);
        hsv.apply_row(&px, as_uninit(r), as_uninit(g), as_uninit(b), false);
        for (k, p) in px.chunks_exact(3).enumerate() {
            let one = hsv.apply(p[0], p[1], p[2]);
            let row = [out[k], out[517 + k], out[2 * 517 + k]];
            assert_eq!(one.map(f32::to_bits), row.map(f32::to_bits), "pixel {k}");
            // Independent f64 model of matplotlib's rgb_to_hsv / hsv_to_rgb with the distortion.
            let want = reference(p, -0.07, 1.3, 0.8);
            for c in 0..3 {
                assert!(
                    (row[c] as f64 - want[c]).abs() < 1e-5,
                    "pixel {k} {p:?}: {row:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn simd_row_is_bit_identical_to_the_pixel_function_over_a_colour_grid() {
        // Every hue sector, greys, saturated and dark colours, ties between channels; rows of
        // odd length so the scalar tail runs too.
        let levels = [0u8, 1, 2, 17, 63, 64, 127, 128, 129, 200, 254, 255];
        let mut px = Vec::new();
        for &r in &levels {
            for &g in &levels {
                for &b in &levels {
                    px.extend([r, g, b]);
                }
            }
        }
        px.extend((0..3 * 301).map(|i| ((i * 131 + i / 5) % 256) as u8));
        let n = px.len() / 3;
        for (hue, sat, val) in [
            (0.0, 1.0, 1.0),
            (0.1, 1.5, 1.5),
            (-0.1, 1.0 / 1.5, 1.0 / 1.5),
            (0.0999, 1.37, 0.71),
            (-0.0431, 0.9, 1.2),
            (1.0, 2.0, 0.0),
        ] {
            let hsv = Hsv::new(hue, sat, val);
            for flip in [false, true] {
                let mut out = vec![f32::NAN; 3 * n];
                let (r, rest) = out.split_at_mut(n);
                let (g, b) = rest.split_at_mut(n);
                hsv.apply_row(&px, as_uninit(r), as_uninit(g), as_uninit(b), flip);
                for (k, p) in px.chunks_exact(3).enumerate() {
                    let at = if flip { n - 1 - k } else { k };
                    let want = hsv.apply(p[0], p[1], p[2]).map(f32::to_bits);
                    let got = [r[at], g[at], b[at]].map(f32::to_bits);
                    assert_eq!(got, want, "pixel {p:?} with {hue} {sat} {val}, flip {flip}");
                }
            }
        }
    }

    fn reference(p: &[u8], hue: f64, sat: f64, val: f64) -> [f64; 3] {
        let (r, g, b) = (
            p[0] as f64 / 255.0,
            p[1] as f64 / 255.0,
            p[2] as f64 / 255.0,
        );
        let v = r.max(g).max(b);
        let d = v - r.min(g).min(b);
        let s = if v > 0.0 { d / v } else { 0.0 };
        let mut h = 0.0;
        if d > 0.0 {
            h = if b == v {
                4.0 + (r - g) / d
            } else if g == v {
                2.0 + (b - r) / d
            } else {
                (g - b) / d
            };
            h = (h / 6.0).rem_euclid(1.0);
        }
        h += hue;
        if h > 1.0 {
            h -= 1.0
        }
        if h < 0.0 {
            h += 1.0
        }
        let (s, v) = ((s * sat).clamp(0.0, 1.0), (v * val).clamp(0.0, 1.0));
        let i = (h * 6.0).floor();
        let f = h * 6.0 - i;
        let (pp, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        match (i as i64).rem_euclid(6) {
            0 => [v, t, pp],
            1 => [q, v, pp],
            2 => [pp, v, t],
            3 => [pp, q, v],
            4 => [t, pp, v],
            _ => [v, pp, q],
        }
    }
}
