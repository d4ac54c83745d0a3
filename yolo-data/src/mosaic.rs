//! Mosaic augmentation (ultralytics' `load_mosaic`, 2x2): four images tiled around a random
//! centre, then the same HSV distortion and left-right flip as `get_random_data`'s random path.
//! Off unless [`AugmentConfig::mosaic`] is above 0; keras-yolo3 has no mosaic.
//!
//! Layout. The centre `(cx, cy)` is drawn in `[0.25, 0.75)` of the input width and height
//! (ultralytics draws it in `[0.5, 1.5)` of a canvas twice the input size, the same quarter
//! margins). The quadrants are `[0, cx) x [0, cy)` (image 0, top left), `[cx, w) x [0, cy)`
//! (image 1, top right), `[0, cx) x [cy, h)` (image 2, bottom left) and `[cx, w) x [cy, h)`
//! (image 3, bottom right). Each image keeps its aspect ratio and is scaled to fit a box of half
//! the input (`w / 2 x h / 2`), times a random factor `U(1 - jitter, 1 + jitter)` of
//! [`AugmentConfig::jitter`] (so 0.7 to 1.3 by default); it is placed with its corner at the
//! centre (image 0's bottom-right corner, image 1's bottom-left, ...) and cut to its quadrant, so
//! images never overlap. Whatever no image covers is grey 128, as in `get_random_data`.
//!
//! Boxes. Each box is mapped like keras-yolo3 does (`int(v * nw / iw + offset)`), clipped to the
//! part of its image that is visible in its quadrant (hence also to the input), mirrored with the
//! canvas when flipped, and dropped when its width or height is `<= 1` pixel (keras-yolo3's rule).
//! The boxes of the four images are then shuffled together and at most
//! [`AugmentConfig::max_boxes`] are kept.
//!
//! Random draws, in this order: `cx`, `cy`, the four scale factors, then flip, hue, saturation and
//! value exactly as `get_random_data` draws them, then the box shuffle.

use std::mem::MaybeUninit;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::annotation::BoxLabel;
use crate::augment::{rand_range, sample_flip_hsv, AugmentConfig, Hsv, Sample};
use crate::input_shape::InputShape;
use crate::letterbox::GREY;
use crate::resize::{resize_region_rows, Window};
use crate::uninit::as_uninit;

/// The random draws of one mosaic. Exposed so tests (and tools) can fix them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MosaicParams {
    /// Centre column: the vertical line between the left and right quadrants.
    pub cx: usize,
    /// Centre row: the horizontal line between the top and bottom quadrants.
    pub cy: usize,
    /// Resized `(width, height)` of images 0 to 3 (top left, top right, bottom left, bottom right).
    pub sizes: [(usize, usize); 4],
    /// Whether the whole canvas is mirrored left-right.
    pub flip: bool,
    /// Hue shift.
    pub hue: f32,
    /// Saturation factor.
    pub sat: f32,
    /// Value factor.
    pub val: f32,
}

impl MosaicParams {
    /// Draws the parameters for images of sizes `image_sizes` (`(width, height)`), in the order
    /// the module documentation gives. The centre is at least 1 pixel from every edge and every
    /// resized size at least 1 pixel.
    pub fn sample(
        rng: &mut impl Rng,
        input: InputShape,
        image_sizes: [(usize, usize); 4],
        cfg: &AugmentConfig,
    ) -> Self {
        let (w, h) = (input.w as f64, input.h as f64);
        let cx = ((rand_range(rng, 0.25, 0.75) * w) as usize).clamp(1, input.w.max(2) - 1);
        let cy = ((rand_range(rng, 0.25, 0.75) * h) as usize).clamp(1, input.h.max(2) - 1);
        let j = cfg.jitter;
        let sizes = image_sizes.map(|(iw, ih)| {
            let (iw, ih) = (iw.max(1) as f64, ih.max(1) as f64);
            let fit = (w / 2.0 / iw).min(h / 2.0 / ih);
            let s = fit * rand_range(rng, 1.0 - j, 1.0 + j);
            (((iw * s) as usize).max(1), ((ih * s) as usize).max(1))
        });
        let (flip, hue, sat, val) = sample_flip_hsv(rng, cfg);
        Self {
            cx,
            cy,
            sizes,
            flip,
            hue,
            sat,
            val,
        }
    }

    /// Where image `k` goes: its paste offset (the canvas position of its resized top-left
    /// corner, possibly negative) and its visible rectangle `[x0, x1) x [y0, y1)` in canvas
    /// pixels (before the flip), which is its quadrant cut to the image; `None` when nothing
    /// of it is visible.
    pub fn placement(&self, k: usize, input: InputShape) -> ((i64, i64), Option<[usize; 4]>) {
        let (cx, cy) = (self.cx as i64, self.cy as i64);
        let (nw, nh) = (self.sizes[k].0 as i64, self.sizes[k].1 as i64);
        let (w, h) = (input.w as i64, input.h as i64);
        let right = k % 2 == 1;
        let bottom = k >= 2;
        let ox = if right { cx } else { cx - nw };
        let oy = if bottom { cy } else { cy - nh };
        let (qx0, qx1) = if right { (cx, w) } else { (0, cx) };
        let (qy0, qy1) = if bottom { (cy, h) } else { (0, cy) };
        let x0 = qx0.max(ox);
        let x1 = qx1.min(ox + nw);
        let y0 = qy0.max(oy);
        let y1 = qy1.min(oy + nh);
        let visible =
            (x1 > x0 && y1 > y0).then_some([x0 as usize, y0 as usize, x1 as usize, y1 as usize]);
        ((ox, oy), visible)
    }
}

/// A 2x2 mosaic of `images` with their `boxes` (in each image's pixels), drawn from `rng` (see
/// the module documentation): the same [`Sample`] as `get_random_data` returns (CHW image in
/// `[0, 1]`, at most `max_boxes` boxes in input pixels), so a loader can use either.
///
/// ```
/// use rand::SeedableRng;
/// use yolo_data::{mosaic, AugmentConfig, BoxLabel, InputShape};
///
/// let img = image::RgbImage::from_pixel(100, 80, image::Rgb([200, 10, 10]));
/// let b = [BoxLabel { x_min: 10.0, y_min: 10.0, x_max: 60.0, y_max: 50.0, class: 0 }];
/// let input = InputShape::new(128, 160).unwrap();
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
/// let s = mosaic([&img; 4], [&b[..]; 4], input, &AugmentConfig::default(), &mut rng);
/// assert_eq!(s.image.len(), 3 * 128 * 160);
/// assert!(s.boxes.iter().all(|b| b.x_min >= 0.0 && b.x_max <= 160.0 && b.y_max <= 128.0));
/// ```
pub fn mosaic(
    images: [&RgbImage; 4],
    boxes: [&[BoxLabel]; 4],
    input: InputShape,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> Sample {
    let mut out = vec![0f32; 3 * input.w * input.h];
    let boxes = mosaic_into(images, boxes, input, cfg, rng, &mut out);
    Sample { image: out, boxes }
}

/// [`mosaic`] writing the image into `out` (`3 * h * w` values, every one overwritten); returns
/// the boxes. Same values, same draws.
///
/// # Panics
/// When `out.len() != 3 * input.h * input.w`.
pub fn mosaic_into(
    images: [&RgbImage; 4],
    boxes: [&[BoxLabel]; 4],
    input: InputShape,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
    out: &mut [f32],
) -> Vec<BoxLabel> {
    mosaic_uninit(images, boxes, input, cfg, rng, as_uninit(out))
}

/// [`mosaic_into`] on memory that need not be initialised: every value of `out` is written
/// exactly once.
pub(crate) fn mosaic_uninit(
    images: [&RgbImage; 4],
    boxes: [&[BoxLabel]; 4],
    input: InputShape,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
    out: &mut [MaybeUninit<f32>],
) -> Vec<BoxLabel> {
    let sizes = images.map(|im| (im.width() as usize, im.height() as usize));
    let p = MosaicParams::sample(rng, input, sizes, cfg);
    let mut kept = render(images, boxes, input, &p, out);
    kept.shuffle(rng);
    kept.truncate(cfg.max_boxes);
    kept
}

/// The mosaic with fixed draws (the boxes are not shuffled: image 0's come first, in their
/// order); at most `max_boxes` boxes are kept.
pub fn mosaic_with_params(
    images: [&RgbImage; 4],
    boxes: [&[BoxLabel]; 4],
    input: InputShape,
    p: &MosaicParams,
    max_boxes: usize,
) -> Sample {
    let mut out = vec![0f32; 3 * input.w * input.h];
    let mut kept = render(images, boxes, input, p, as_uninit(&mut out));
    kept.truncate(max_boxes);
    Sample {
        image: out,
        boxes: kept,
    }
}

/// Tiles the four images on a grey `u8` canvas, then writes it through the HSV distortion (and
/// the flip) into the three planes of `out`; returns every kept box (not truncated).
fn render(
    images: [&RgbImage; 4],
    boxes: [&[BoxLabel]; 4],
    input: InputShape,
    p: &MosaicParams,
    out: &mut [MaybeUninit<f32>],
) -> Vec<BoxLabel> {
    let (w, h) = (input.w, input.h);
    let plane = w * h;
    assert_eq!(
        out.len(),
        3 * plane,
        "output buffer of 3 x {h} x {w} values"
    );
    let mut canvas = vec![GREY; 3 * plane];
    let (wf, hf) = (w as f64, h as f64);
    let mut kept = Vec::new();
    for k in 0..4 {
        let image = images[k];
        let (nw, nh) = p.sizes[k];
        let ((ox, oy), visible) = p.placement(k, input);
        let Some([vx0, vy0, vx1, vy1]) = visible else {
            continue;
        };
        let win = Window {
            x0: (vx0 as i64 - ox) as usize,
            y0: (vy0 as i64 - oy) as usize,
            x1: (vx1 as i64 - ox) as usize,
            y1: (vy1 as i64 - oy) as usize,
        };
        resize_region_rows(image, nw, nh, win, |ry, row| {
            let at = 3 * ((vy0 + ry) * w + vx0);
            canvas[at..at + row.len()].copy_from_slice(row);
        });

        let (iw, ih) = (image.width().max(1) as f64, image.height().max(1) as f64);
        let (sx, sy) = (nw as f64 / iw, nh as f64 / ih);
        let mx = |v: f32| (v as f64 * sx + ox as f64).trunc();
        let my = |v: f32| (v as f64 * sy + oy as f64).trunc();
        for b in boxes[k] {
            let x0 = mx(b.x_min).max(vx0 as f64);
            let x1 = mx(b.x_max).min(vx1 as f64);
            let y0 = my(b.y_min).max(vy0 as f64);
            let y1 = my(b.y_max).min(vy1 as f64);
            let (x0, x1) = if p.flip { (wf - x1, wf - x0) } else { (x0, x1) };
            if x1 - x0 > 1.0 && y1 - y0 > 1.0 {
                debug_assert!(x0 >= 0.0 && x1 <= wf && y0 >= 0.0 && y1 <= hf);
                kept.push(BoxLabel {
                    x_min: x0 as f32,
                    y_min: y0 as f32,
                    x_max: x1 as f32,
                    y_max: y1 as f32,
                    class: b.class,
                });
            }
        }
    }

    let hsv = Hsv::new(p.hue, p.sat, p.val);
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for (y, px) in canvas.chunks_exact(3 * w).enumerate() {
        let at = y * w..(y + 1) * w;
        hsv.apply_row(
            px,
            &mut r_plane[at.clone()],
            &mut g_plane[at.clone()],
            &mut b_plane[at],
            p.flip,
        );
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(cx: usize, cy: usize, sizes: [(usize, usize); 4]) -> MosaicParams {
        MosaicParams {
            cx,
            cy,
            sizes,
            flip: false,
            hue: 0.0,
            sat: 1.0,
            val: 1.0,
        }
    }

    #[test]
    fn placements_touch_the_centre_and_stay_in_their_quadrants() {
        let input = InputShape::new(96, 128).unwrap();
        let p = params(50, 40, [(30, 20), (100, 90), (60, 70), (10, 10)]);
        // Top left ends at the centre.
        assert_eq!(p.placement(0, input), ((20, 20), Some([20, 20, 50, 40])));
        // Top right is larger than its quadrant: cut at the right and top edges.
        assert_eq!(p.placement(1, input), ((50, -50), Some([50, 0, 128, 40])));
        // Bottom left is wider than the 50 columns left of the centre.
        assert_eq!(p.placement(2, input), ((-10, 40), Some([0, 40, 50, 96])));
        assert_eq!(p.placement(3, input), ((50, 40), Some([50, 40, 60, 50])));
    }

    #[test]
    fn sampled_centre_and_sizes_are_in_range() {
        use rand::SeedableRng;
        let input = InputShape::new(416, 416).unwrap();
        let cfg = AugmentConfig::default();
        for seed in 0..200 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let sizes = [(500, 375), (375, 500), (100, 100), (1000, 200)];
            let p = MosaicParams::sample(&mut rng, input, sizes, &cfg);
            assert!(
                (104..312).contains(&p.cx) && (104..312).contains(&p.cy),
                "{p:?}"
            );
            for (&(nw, nh), &(iw, ih)) in p.sizes.iter().zip(&sizes) {
                let fit = (208.0 / iw as f64).min(208.0 / ih as f64);
                let s = nw as f64 / iw as f64;
                assert!(s >= 0.7 * fit - 0.01 && s <= 1.3 * fit + 0.01, "{p:?}");
                // Aspect kept to a pixel.
                assert!((nh as f64 - ih as f64 * s).abs() <= 1.0 + ih as f64 / iw as f64);
            }
        }
    }
}
