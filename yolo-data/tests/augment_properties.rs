//! Property tests of keras-yolo3's `get_random_data(random=True)` augmentation: boxes stay inside
//! the canvas, a box is dropped only when its mapped, clipped size is <= 1 pixel, the flip mirrors
//! boxes and pixels exactly, pixel values stay in [0, 1], and at most `max_boxes` survive.

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use yolo_data::{
    augment_with_params, get_random_data, AugmentConfig, AugmentParams, BoxLabel, InputShape,
};

fn test_image(w: u32, h: u32, salt: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 + y * 3) as u8 ^ salt,
            (x * 13) as u8,
            (y * 11 + salt as u32) as u8,
        ])
    })
}

/// Boxes with integer corners inside a `w x h` image (keras-yolo3 annotations are integers).
fn boxes_in(w: u32, h: u32) -> impl Strategy<Value = Vec<BoxLabel>> {
    prop::collection::vec((0..w, 0..h, 0..w, 0..h, 0usize..5), 0..30).prop_map(|v| {
        v.into_iter()
            .map(|(a, b, c, d, class)| BoxLabel {
                x_min: a.min(c) as f32,
                y_min: b.min(d) as f32,
                x_max: a.max(c) as f32,
                y_max: b.max(d) as f32,
                class,
            })
            .collect()
    })
}

fn input_shape() -> impl Strategy<Value = InputShape> {
    (1usize..5, 1usize..5).prop_map(|(h, w)| InputShape::new(h * 32, w * 32).unwrap())
}

/// keras-yolo3's box arithmetic written out independently: `int(v * n / i + d)`, mirror, clip the
/// minima at 0 and the maxima at the canvas size. Returns the box and whether keras keeps it.
fn keras_box(
    b: &BoxLabel,
    iw: u32,
    ih: u32,
    p: &AugmentParams,
    input: InputShape,
) -> ([i64; 4], bool) {
    let (w, h) = (input.w as i64, input.h as i64);
    let mx = |v: f32| ((v as i64 * p.nw as i64) as f64 / iw as f64 + p.dx as f64) as i64;
    let my = |v: f32| ((v as i64 * p.nh as i64) as f64 / ih as f64 + p.dy as f64) as i64;
    let (mut x0, y0, mut x1, y1) = (mx(b.x_min), my(b.y_min), mx(b.x_max), my(b.y_max));
    if p.flip {
        (x0, x1) = (w - x1, w - x0);
    }
    let r = [x0.max(0), y0.max(0), x1.min(w), y1.min(h)];
    (r, r[2] - r[0] > 1 && r[3] - r[1] > 1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn boxes_inside_canvas_values_in_unit_range(
        (iw, ih, boxes) in (8u32..120, 8u32..120).prop_flat_map(|(w, h)| (Just(w), Just(h), boxes_in(w, h))),
        input in input_shape(),
        seed in any::<u64>(),
        max_boxes in 1usize..25,
    ) {
        let img = test_image(iw, ih, seed as u8);
        let cfg = AugmentConfig { max_boxes, ..AugmentConfig::default() };
        let s = get_random_data(&img, &boxes, input, true, &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(s.image.len(), 3 * input.h * input.w);
        prop_assert!(s.image.iter().all(|v| (0.0..=1.0).contains(v)));
        prop_assert!(s.boxes.len() <= max_boxes.min(boxes.len()));
        for b in &s.boxes {
            prop_assert!(b.x_min >= 0.0 && b.y_min >= 0.0, "{:?}", b);
            prop_assert!(b.x_max <= input.w as f32 && b.y_max <= input.h as f32, "{:?}", b);
            prop_assert!(b.x_max - b.x_min > 1.0 && b.y_max - b.y_min > 1.0, "{:?}", b);
            prop_assert_eq!(b.x_min.fract(), 0.0);
            prop_assert!(b.class < 5);
        }
    }

    #[test]
    fn dropped_only_when_degenerate(
        (iw, ih, boxes) in (8u32..120, 8u32..120).prop_flat_map(|(w, h)| (Just(w), Just(h), boxes_in(w, h))),
        input in input_shape(),
        seed in any::<u64>(),
    ) {
        let img = test_image(iw, ih, 3);
        let p = AugmentParams::sample(&mut ChaCha8Rng::seed_from_u64(seed), input, &AugmentConfig::default());
        let s = augment_with_params(&img, &boxes, input, &p, 1000);
        let expected: Vec<BoxLabel> = boxes
            .iter()
            .filter_map(|b| {
                let (r, keep) = keras_box(b, iw, ih, &p, input);
                keep.then_some(BoxLabel {
                    x_min: r[0] as f32, y_min: r[1] as f32, x_max: r[2] as f32, y_max: r[3] as f32, class: b.class,
                })
            })
            .collect();
        prop_assert_eq!(s.boxes, expected);
    }

    #[test]
    fn flip_mirrors_boxes_and_pixels(
        (iw, ih, boxes) in (8u32..120, 8u32..120).prop_flat_map(|(w, h)| (Just(w), Just(h), boxes_in(w, h))),
        input in input_shape(),
        seed in any::<u64>(),
    ) {
        let img = test_image(iw, ih, 9);
        let p = AugmentParams::sample(&mut ChaCha8Rng::seed_from_u64(seed), input, &AugmentConfig::default());
        let plain = augment_with_params(&img, &boxes, input, &AugmentParams { flip: false, ..p }, 1000);
        let flipped = augment_with_params(&img, &boxes, input, &AugmentParams { flip: true, ..p }, 1000);
        let w = input.w as f32;
        let mirrored: Vec<BoxLabel> = plain
            .boxes
            .iter()
            .map(|b| BoxLabel { x_min: w - b.x_max, x_max: w - b.x_min, ..*b })
            .collect();
        prop_assert_eq!(&flipped.boxes, &mirrored);
        let (h, w) = (input.h, input.w);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let a = plain.image[(c * h + y) * w + x];
                    let b = flipped.image[(c * h + y) * w + (w - 1 - x)];
                    prop_assert_eq!(a.to_bits(), b.to_bits());
                }
            }
        }
    }

    #[test]
    fn letterbox_path_keeps_every_box_and_is_unit_range(
        (iw, ih, boxes) in (8u32..120, 8u32..120).prop_flat_map(|(w, h)| (Just(w), Just(h), boxes_in(w, h))),
        input in input_shape(),
        seed in any::<u64>(),
    ) {
        let img = test_image(iw, ih, 1);
        let cfg = AugmentConfig::default();
        let s = get_random_data(&img, &boxes, input, false, &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(s.boxes.len(), boxes.len().min(cfg.max_boxes));
        prop_assert!(s.image.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn identity_params_reproduce_the_image() {
    // Same size, no offset, no flip, no colour change: the output is the input / 255.
    let img = test_image(64, 32, 5);
    let input = InputShape::new(32, 64).unwrap();
    let p = AugmentParams {
        nw: 64,
        nh: 32,
        dx: 0,
        dy: 0,
        flip: false,
        hue: 0.0,
        sat: 1.0,
        val: 1.0,
    };
    let s = augment_with_params(&img, &[], input, &p, 20);
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = s.image[(c * 32 + y as usize) * 64 + x as usize];
            assert!(
                (v - px.0[c] as f32 / 255.0).abs() < 2e-6,
                "({x},{y},{c}): {v}"
            );
        }
    }
}

#[test]
fn keras_draw_order_gives_documented_ranges() {
    // Over many draws: scale puts the long side in [0.25, 2) x the input, flips are about half,
    // hue within +-0.1, saturation and value within [1/1.5, 1.5].
    let input = InputShape::square416();
    let cfg = AugmentConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut flips = 0;
    for _ in 0..2000 {
        let p = AugmentParams::sample(&mut rng, input, &cfg);
        flips += p.flip as usize;
        assert!(p.nw.max(p.nh) <= 832 && p.nw.max(p.nh) >= 104, "{p:?}");
        assert!(p.hue.abs() <= 0.1);
        assert!((1.0 / 1.5..=1.5).contains(&p.sat) && (1.0 / 1.5..=1.5).contains(&p.val));
        // dx lies between 0 and w - nw, truncated toward zero.
        let lim = 416 - p.nw as i64;
        assert!(
            p.dx.abs() <= lim.abs() && (p.dx == 0 || p.dx.signum() == lim.signum()),
            "{p:?}"
        );
    }
    assert!((850..1150).contains(&flips), "{flips}");
}
