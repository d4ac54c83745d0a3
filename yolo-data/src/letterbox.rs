//! keras-yolo3's letterbox: resize with unchanged aspect ratio (Pillow BICUBIC) and paste centred on
//! a grey (128, 128, 128) canvas. Used by `get_random_data(random=False)` (validation, bottleneck
//! features) and by the detector (`letterbox_image`).

use std::mem::MaybeUninit;

use image::RgbImage;

use crate::annotation::BoxLabel;
use crate::input_shape::InputShape;
use crate::resize::{resize_bicubic, resize_region_rows, Window};
use crate::uninit::{as_uninit, fill};

/// Grey level of the canvas around the pasted image.
pub const GREY: u8 = 128;

/// Geometry of a letterbox, computed exactly as keras-yolo3 does it in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LetterboxParams {
    /// `min(w / iw, h / ih)`.
    pub scale: f64,
    /// Resized width, `int(iw * scale)` (truncated; at least 1, where Pillow would refuse 0).
    pub nw: usize,
    /// Resized height, `int(ih * scale)` (truncated; at least 1).
    pub nh: usize,
    /// Paste column, `(w - nw) // 2`.
    pub dx: usize,
    /// Paste row, `(h - nh) // 2`.
    pub dy: usize,
}

impl LetterboxParams {
    /// Geometry for an `iw x ih` image on the `input` canvas.
    pub fn new(iw: usize, ih: usize, input: InputShape) -> Self {
        let (w, h) = (input.w as f64, input.h as f64);
        let scale = (w / iw as f64).min(h / ih as f64);
        let nw = ((iw as f64 * scale) as usize).clamp(1, input.w);
        let nh = ((ih as f64 * scale) as usize).clamp(1, input.h);
        Self {
            scale,
            nw,
            nh,
            dx: (input.w - nw) / 2,
            dy: (input.h - nh) / 2,
        }
    }

    /// Maps a box from original pixels to the canvas: `int(v * scale + offset)` in f64 with
    /// truncation, not clipped (keras-yolo3 stores the result in an integer array).
    pub fn map_box(&self, b: &BoxLabel) -> BoxLabel {
        let fx = |v: f32| (v as f64 * self.scale + self.dx as f64).trunc() as f32;
        let fy = |v: f32| (v as f64 * self.scale + self.dy as f64).trunc() as f32;
        BoxLabel {
            x_min: fx(b.x_min),
            y_min: fy(b.y_min),
            x_max: fx(b.x_max),
            y_max: fy(b.y_max),
            class: b.class,
        }
    }
}

/// keras-yolo3's `letterbox_image`: the image resized (Pillow BICUBIC, bit-exact) into the input
/// shape with its aspect ratio kept, centred on grey 128.
pub fn letterbox_image(image: &RgbImage, input: InputShape) -> RgbImage {
    let p = LetterboxParams::new(image.width() as usize, image.height() as usize, input);
    let resized = resize_bicubic(image, p.nw, p.nh);
    let mut canvas = RgbImage::from_pixel(input.w as u32, input.h as u32, image::Rgb([GREY; 3]));
    let row = p.nw * 3;
    let canvas_stride = input.w * 3;
    let dst = &mut *canvas;
    for (y, src) in resized.as_raw().chunks_exact(row).enumerate() {
        let at = (p.dy + y) * canvas_stride + p.dx * 3;
        dst[at..at + row].copy_from_slice(src);
    }
    canvas
}

/// [`letterbox_image`] followed by [`to_chw_unit`], written straight into `out` (`3 * h * w`
/// values, every one overwritten): the grey border is filled once and each resized row is
/// converted into the three planes as it is produced, without the intermediate images.
///
/// # Panics
/// When `out.len() != 3 * input.h * input.w`.
pub fn letterbox_chw_into(image: &RgbImage, input: InputShape, out: &mut [f32]) {
    letterbox_chw_uninit(image, input, as_uninit(out))
}

/// [`letterbox_chw_into`] on memory that need not be initialised: every value of `out` is
/// written exactly once.
pub(crate) fn letterbox_chw_uninit(
    image: &RgbImage,
    input: InputShape,
    out: &mut [MaybeUninit<f32>],
) {
    let (w, h) = (input.w, input.h);
    let plane = w * h;
    assert_eq!(
        out.len(),
        3 * plane,
        "output buffer of 3 x {h} x {w} values"
    );
    let p = LetterboxParams::new(image.width() as usize, image.height() as usize, input);
    let lut = unit_lut();
    let grey = lut[GREY as usize];
    for chunk in out.chunks_exact_mut(plane) {
        fill(&mut chunk[..p.dy * w], grey);
        fill(&mut chunk[(p.dy + p.nh) * w..], grey);
        for row in chunk[p.dy * w..(p.dy + p.nh) * w].chunks_exact_mut(w) {
            fill(&mut row[..p.dx], grey);
            fill(&mut row[p.dx + p.nw..], grey);
        }
    }
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let full = Window {
        x0: 0,
        y0: 0,
        x1: p.nw,
        y1: p.nh,
    };
    resize_region_rows(image, p.nw, p.nh, full, |y, row| {
        let at = (p.dy + y) * w + p.dx;
        unit_row(
            row,
            &mut r[at..at + p.nw],
            &mut g[at..at + p.nw],
            &mut b[at..at + p.nw],
            &lut,
        );
    });
}

/// Interleaved RGB bytes into the planar rows `r`, `g`, `b` as `v / 255` (the values of
/// [`unit_lut`], which `lut` holds).
fn unit_row(
    px: &[u8],
    r: &mut [MaybeUninit<f32>],
    g: &mut [MaybeUninit<f32>],
    b: &mut [MaybeUninit<f32>],
    lut: &[f32; 256],
) {
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available, checked just above.
            k = unsafe { unit_row_avx2(px, r, g, b) };
        }
    }
    for (((px, r), g), b) in px[3 * k..]
        .chunks_exact(3)
        .zip(&mut r[k..])
        .zip(&mut g[k..])
        .zip(&mut b[k..])
    {
        r.write(lut[px[0] as usize]);
        g.write(lut[px[1] as usize]);
        b.write(lut[px[2] as usize]);
    }
}

/// AVX2 body of [`unit_row`], 8 pixels at a time: the bytes are split per channel with shuffles
/// and divided by 255 in f32, which gives exactly [`unit_lut`]'s values (the f64 division
/// rounded to f32; checked for all 256 values by a test). Returns how many pixels it wrote.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unit_row_avx2(
    px: &[u8],
    r: &mut [MaybeUninit<f32>],
    g: &mut [MaybeUninit<f32>],
    b: &mut [MaybeUninit<f32>],
) -> usize {
    // SAFETY: the caller guarantees AVX2; with `k + 8 <= n`, the 24 bytes read at
    // `3 * k` lie inside `px` (`n <= px.len() / 3`) and the 8 floats stored at `k` lie inside
    // `r`, `g` and `b` (each at least `n` long).
    unsafe {
        use std::arch::x86_64::*;
        let n = (px.len() / 3).min(r.len()).min(g.len()).min(b.len());
        let masks = [
            (
                _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
                _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, -1, -1, -1, -1, -1, -1, -1, -1),
            ),
            (
                _mm_setr_epi8(1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
                _mm_setr_epi8(-1, -1, -1, -1, -1, 0, 3, 6, -1, -1, -1, -1, -1, -1, -1, -1),
            ),
            (
                _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1),
                _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, -1, -1, -1, -1, -1, -1, -1, -1),
            ),
        ];
        let d255 = _mm256_set1_ps(255.0);
        let dst = [r.as_mut_ptr(), g.as_mut_ptr(), b.as_mut_ptr()];
        let mut k = 0;
        while k + 8 <= n {
            let p = px.as_ptr().add(3 * k);
            let lo = _mm_loadu_si128(p as *const __m128i);
            let hi = _mm_loadl_epi64(p.add(16) as *const __m128i);
            for (&(ml, mh), d) in masks.iter().zip(dst) {
                let bytes = _mm_or_si128(_mm_shuffle_epi8(lo, ml), _mm_shuffle_epi8(hi, mh));
                let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
                _mm256_storeu_ps(d.add(k) as *mut f32, _mm256_div_ps(v, d255));
            }
            k += 8;
        }
        k
    }
}

/// `u8 -> f32` as keras-yolo3 computes it: `v / 255.` in f64, then stored as f32.
pub(crate) fn unit_lut() -> [f32; 256] {
    let mut lut = [0f32; 256];
    for (v, x) in lut.iter_mut().enumerate() {
        *x = (v as f64 / 255.0) as f32;
    }
    lut
}

/// An interleaved RGB `u8` image as planar CHW f32 in `[0, 1]`.
pub fn to_chw_unit(image: &RgbImage) -> Vec<f32> {
    let lut = unit_lut();
    let n = (image.width() * image.height()) as usize;
    let mut out = vec![0f32; 3 * n];
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, p) in image.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[p[0] as usize];
        g[i] = lut[p[1] as usize];
        b[i] = lut[p[2] as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raccoon_1_geometry_and_box_truncation() {
        // raccoon-1.jpg is 650x417; at 416x416 scale = 0.64, nw = 416, nh = int(266.88) = 266.
        let p = LetterboxParams::new(650, 417, InputShape::square416());
        assert_eq!((p.nw, p.nh, p.dx, p.dy), (416, 266, 0, 75));
        let b = p.map_box(&BoxLabel {
            x_min: 81.0,
            y_min: 88.0,
            x_max: 522.0,
            y_max: 408.0,
            class: 0,
        });
        // 81 * 0.64 = 51.84 -> 51; 88 * 0.64 + 75 = 131.32 -> 131; 522 * .64 = 334.08; 408 * .64 + 75 = 336.12
        assert_eq!(
            (b.x_min, b.y_min, b.x_max, b.y_max),
            (51.0, 131.0, 334.0, 336.0)
        );
    }

    #[test]
    fn f32_division_by_255_equals_the_f64_lookup_table() {
        let lut = unit_lut();
        for (v, &want) in lut.iter().enumerate() {
            assert_eq!((v as f32 / 255.0).to_bits(), want.to_bits(), "{v}");
        }
        // And the row kernel (vector body and scalar tail) gives the table's values.
        let px: Vec<u8> = (0..3 * 267).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = vec![f32::NAN; 3 * 267];
        let (r, rest) = out.split_at_mut(267);
        let (g, b) = rest.split_at_mut(267);
        unit_row(&px, as_uninit(r), as_uninit(g), as_uninit(b), &lut);
        for (k, p) in px.chunks_exact(3).enumerate() {
            assert_eq!(
                [r[k], g[k], b[k]],
                p.iter().map(|&v| lut[v as usize]).collect::<Vec<_>>()[..]
            );
        }
    }

    #[test]
    fn canvas_is_grey_outside_the_pasted_image() {
        let img = RgbImage::from_pixel(100, 50, image::Rgb([10, 20, 30]));
        let out = letterbox_image(&img, InputShape::new(64, 64).unwrap());
        // scale 0.64 -> 64 x 32 at dy = 16.
        assert_eq!(out.get_pixel(0, 15).0, [128; 3]);
        assert_eq!(out.get_pixel(0, 16).0, [10, 20, 30]);
        assert_eq!(out.get_pixel(63, 47).0, [10, 20, 30]);
        assert_eq!(out.get_pixel(63, 48).0, [128; 3]);
        let chw = to_chw_unit(&out);
        assert_eq!(chw[16 * 64], (10.0f64 / 255.0) as f32);
        assert_eq!(chw[64 * 64 + 16 * 64], (20.0f64 / 255.0) as f32);
        assert_eq!(chw[0], (128.0f64 / 255.0) as f32);
    }
}
