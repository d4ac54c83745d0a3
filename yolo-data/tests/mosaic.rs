//! Mosaic augmentation: boxes follow their image and are clipped exactly to its visible part,
//! tiny boxes are dropped, draws are reproducible, flip and HSV move no box but the flip's
//! mirror, and with `mosaic = 0` the loader gives exactly `get_random_data`'s samples.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use yolo_data::{
    get_random_data, mosaic, mosaic_with_params, Anchors, Annotation, AugmentConfig, BatchLoader,
    BoxLabel, InputShape, LoaderConfig, MosaicParams,
};

const COLOURS: [[u8; 3]; 4] = [[220, 20, 20], [20, 200, 40], [30, 40, 210], [230, 220, 10]];

fn solid(k: usize, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_pixel(w, h, image::Rgb(COLOURS[k]))
}

fn bx(x_min: f32, y_min: f32, x_max: f32, y_max: f32, class: usize) -> BoxLabel {
    BoxLabel {
        x_min,
        y_min,
        x_max,
        y_max,
        class,
    }
}

/// No distortion: colours stay what they are (up to the `/ 255`).
fn no_hsv() -> AugmentConfig {
    AugmentConfig {
        hue: 0.0,
        sat: 1.0,
        val: 1.0,
        ..AugmentConfig::default()
    }
}

fn pixel(s: &[f32], input: InputShape, x: usize, y: usize) -> [f32; 3] {
    let plane = input.w * input.h;
    let at = y * input.w + x;
    [s[at], s[plane + at], s[2 * plane + at]]
}

fn is_colour(px: [f32; 3], c: [u8; 3]) -> bool {
    px.iter()
        .zip(c)
        .all(|(&v, c)| (v - c as f32 / 255.0).abs() < 1e-6)
}

#[test]
fn every_box_lies_in_its_images_colour_and_inside_the_input() {
    let images = [
        solid(0, 120, 90),
        solid(1, 60, 140),
        solid(2, 300, 200),
        solid(3, 90, 90),
    ];
    // Boxes of every size, some past the image borders; the class names the image.
    let boxes: Vec<Vec<BoxLabel>> = (0..4)
        .map(|k| {
            let (w, h) = (images[k].width() as f32, images[k].height() as f32);
            vec![
                bx(0.0, 0.0, w, h, k),
                bx(w * 0.1, h * 0.2, w * 0.6, h * 0.9, k),
                bx(w * 0.5, h * 0.5, w * 1.2, h * 1.1, k),
                bx(-5.0, -3.0, w * 0.3, h * 0.4, k),
            ]
        })
        .collect();
    let input = InputShape::new(160, 224).unwrap();
    let cfg = no_hsv();
    let mut seen = 0;
    for seed in 0..40 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s = mosaic(
            [&images[0], &images[1], &images[2], &images[3]],
            [&boxes[0], &boxes[1], &boxes[2], &boxes[3]],
            input,
            &cfg,
            &mut rng,
        );
        assert_eq!(s.image.len(), 3 * 160 * 224);
        assert!(s.boxes.len() <= cfg.max_boxes);
        for b in &s.boxes {
            assert!(b.x_min >= 0.0 && b.y_min >= 0.0, "seed {seed}: {b:?}");
            assert!(b.x_max <= 224.0 && b.y_max <= 160.0, "seed {seed}: {b:?}");
            assert!(b.x_max - b.x_min > 1.0 && b.y_max - b.y_min > 1.0, "{b:?}");
            for y in b.y_min as usize..b.y_max as usize {
                for x in b.x_min as usize..b.x_max as usize {
                    let px = pixel(&s.image, input, x, y);
                    assert!(
                        is_colour(px, COLOURS[b.class]),
                        "seed {seed}: box {b:?} covers ({x}, {y}) = {px:?}"
                    );
                }
            }
            seen += 1;
        }
    }
    assert!(seen > 100, "{seen} boxes checked");
}

#[test]
fn visible_rectangles_are_the_image_colours_and_the_rest_is_grey() {
    let images = [
        solid(0, 100, 80),
        solid(1, 200, 100),
        solid(2, 100, 100),
        solid(3, 40, 40),
    ];
    let input = InputShape::new(96, 128).unwrap();
    let p = MosaicParams {
        cx: 50,
        cy: 40,
        sizes: [(40, 32), (100, 50), (60, 60), (20, 20)],
        flip: false,
        hue: 0.0,
        sat: 1.0,
        val: 1.0,
    };
    let s = mosaic_with_params(
        [&images[0], &images[1], &images[2], &images[3]],
        [&[], &[], &[], &[]],
        input,
        &p,
        20,
    );
    let rects: Vec<[usize; 4]> = (0..4).map(|k| p.placement(k, input).1.unwrap()).collect();
    assert_eq!(
        rects,
        vec![
            [10, 8, 50, 40],
            [50, 0, 128, 40],
            [0, 40, 50, 96],
            [50, 40, 70, 60]
        ]
    );
    for y in 0..96 {
        for x in 0..128 {
            let px = pixel(&s.image, input, x, y);
            let inside = rects
                .iter()
                .position(|r| (r[0]..r[2]).contains(&x) && (r[1]..r[3]).contains(&y));
            let want = inside.map_or([128; 3], |k| COLOURS[k]);
            assert!(is_colour(px, want), "({x}, {y}) = {px:?}, want {want:?}");
        }
    }
}

/// Images 100x80, 200x100, 100x100, 40x40 at half size (60x60 for image 2) around (50, 40) on a
/// 128x96 input; every box's clipping worked out by hand.
fn fixed() -> (
    Vec<image::RgbImage>,
    Vec<Vec<BoxLabel>>,
    InputShape,
    MosaicParams,
) {
    let images = vec![
        solid(0, 100, 80),
        solid(1, 200, 100),
        solid(2, 100, 100),
        solid(3, 40, 40),
    ];
    let boxes = vec![
        // Past image 0's right border (x 20..130 -> 10..65): cut at the centre line x = 50.
        vec![bx(20.0, 10.0, 130.0, 60.0, 0)],
        // Image 1 at (50, -10): x 100..180 -> 100..140, cut at the input edge 128; y 0..40 ->
        // -10..10, cut at the top.
        vec![bx(100.0, 0.0, 180.0, 40.0, 1)],
        // Image 2 at (-10, 40), scale 0.6: x 0..50 -> -10..20, cut at 0; y 50..100 -> 70..100,
        // cut at the bottom 96. A box past its top border (y -30 -> 22) is cut at the centre
        // line y = 40.
        vec![
            bx(0.0, 50.0, 50.0, 100.0, 2),
            bx(20.0, -30.0, 60.0, 20.0, 2),
        ],
        // Image 3 at (50, 40), scale 0.5: 4 px -> 2 px kept; 2 px -> 1 px dropped; a box that
        // maps to 1 px tall dropped; a box outside the image entirely dropped.
        vec![
            bx(0.0, 0.0, 4.0, 4.0, 3),
            bx(10.0, 10.0, 12.0, 30.0, 3),
            bx(10.0, 10.0, 30.0, 12.0, 3),
            bx(50.0, 50.0, 70.0, 70.0, 3),
        ],
    ];
    let p = MosaicParams {
        cx: 50,
        cy: 40,
        sizes: [(50, 40), (100, 50), (60, 60), (20, 20)],
        flip: false,
        hue: 0.0,
        sat: 1.0,
        val: 1.0,
    };
    (images, boxes, InputShape::new(96, 128).unwrap(), p)
}

fn run_fixed(p: &MosaicParams) -> yolo_data::Sample {
    let (images, boxes, input, _) = fixed();
    mosaic_with_params(
        [&images[0], &images[1], &images[2], &images[3]],
        [&boxes[0], &boxes[1], &boxes[2], &boxes[3]],
        input,
        p,
        20,
    )
}

#[test]
fn clipping_is_exact_at_quadrant_and_input_edges_and_tiny_boxes_are_dropped() {
    let (_, _, _, p) = fixed();
    let s = run_fixed(&p);
    assert_eq!(
        s.boxes,
        vec![
            bx(10.0, 5.0, 50.0, 30.0, 0),
            bx(100.0, 0.0, 128.0, 10.0, 1),
            bx(0.0, 70.0, 20.0, 96.0, 2),
            bx(2.0, 40.0, 26.0, 52.0, 2),
            bx(50.0, 40.0, 52.0, 42.0, 3),
        ]
    );
    // max_boxes keeps the first ones.
    let (images, boxes, input, _) = fixed();
    let two = mosaic_with_params(
        [&images[0], &images[1], &images[2], &images[3]],
        [&boxes[0], &boxes[1], &boxes[2], &boxes[3]],
        input,
        &p,
        2,
    );
    assert_eq!(two.boxes, s.boxes[..2]);
}

#[test]
fn flip_mirrors_x_and_hsv_moves_nothing() {
    let (_, _, input, p) = fixed();
    let plain = run_fixed(&p);
    let flipped = run_fixed(&MosaicParams { flip: true, ..p });
    let mirrored: Vec<BoxLabel> = plain
        .boxes
        .iter()
        .map(|b| bx(128.0 - b.x_max, b.y_min, 128.0 - b.x_min, b.y_max, b.class))
        .collect();
    assert_eq!(flipped.boxes, mirrored);
    // The flipped image is the plain one mirrored, bit for bit.
    for c in 0..3 {
        for y in 0..96 {
            for x in 0..128 {
                let a = plain.image[c * 96 * 128 + y * 128 + x];
                let b = flipped.image[c * 96 * 128 + y * 128 + (127 - x)];
                assert_eq!(a.to_bits(), b.to_bits(), "channel {c} ({x}, {y})");
            }
        }
    }
    for (hue, sat, val) in [(0.1, 1.5, 0.7), (-0.08, 0.6, 1.4)] {
        for flip in [false, true] {
            let q = MosaicParams {
                hue,
                sat,
                val,
                flip,
                ..p
            };
            let d = run_fixed(&q);
            let want = if flip { &mirrored } else { &plain.boxes };
            assert_eq!(&d.boxes, want);
            assert_ne!(d.image, plain.image);
        }
    }
    let _ = input;
}

#[test]
fn mosaic_is_deterministic_for_a_seed_and_is_the_sampled_params_applied() {
    let (images, boxes, input, _) = fixed();
    let cfg = AugmentConfig::default();
    let imgs = [&images[0], &images[1], &images[2], &images[3]];
    let bxs = [&boxes[0][..], &boxes[1][..], &boxes[2][..], &boxes[3][..]];
    let run = |seed| mosaic(imgs, bxs, input, &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(a, b);
    assert_ne!(a.image, c.image);
    // The same draws through MosaicParams::sample and mosaic_with_params: the same image and the
    // same boxes (mosaic shuffles them afterwards).
    let sizes = images
        .iter()
        .map(|i| (i.width() as usize, i.height() as usize))
        .collect::<Vec<_>>();
    let p = MosaicParams::sample(
        &mut ChaCha8Rng::seed_from_u64(5),
        input,
        [sizes[0], sizes[1], sizes[2], sizes[3]],
        &cfg,
    );
    let fixed = mosaic_with_params(imgs, bxs, input, &p, 20);
    assert_eq!(
        a.image.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        fixed.image.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let key = |b: &BoxLabel| (b.class, b.x_min as i64, b.y_min as i64, b.x_max as i64);
    let mut got = a.boxes.clone();
    let mut want = fixed.boxes.clone();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
}

/// Six solid images with two boxes each, written as PNG.
fn dataset(dir: &Path) -> Vec<Annotation> {
    (0..6)
        .map(|k| {
            let (w, h) = (60 + 7 * k as u32, 50 + 5 * k as u32);
            let path = dir.join(format!("m{k}.png"));
            image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 5) as u8, (k * 40) as u8])
            })
            .save(&path)
            .unwrap();
            Annotation {
                path,
                boxes: vec![
                    bx(3.0, 4.0, 40.0, 35.0, k % 2),
                    bx(20.0, 10.0, 55.0, 45.0, 1),
                ],
                line: k + 1,
            }
        })
        .collect()
}

fn loader(anns: &[Annotation], mosaic: f64, random: bool, prefetch: usize) -> BatchLoader {
    let cfg = LoaderConfig {
        batch_size: 4,
        input: InputShape::new(64, 96).unwrap(),
        random,
        seed: 17,
        augment: AugmentConfig {
            mosaic,
            ..AugmentConfig::default()
        },
        shuffle: true,
        prefetch,
        multi_scale: None,
    };
    BatchLoader::new(anns.to_vec(), cfg, Anchors::yolo_default(), 2).unwrap()
}

/// Sample `s`'s image and boxes as `get_random_data` makes them with the loader's stream.
fn direct(l: &BatchLoader, anns: &[Annotation], s: u64, random: bool) -> yolo_data::Sample {
    let ann = &anns[l.sample_index(s)];
    let img = yolo_data::load_rgb(&ann.path).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(l.config().seed);
    rng.set_stream(s);
    get_random_data(
        &img,
        &ann.boxes,
        l.config().input,
        random,
        &AugmentConfig::default(),
        &mut rng,
    )
}

/// Every sample of the first `steps` batches: image values and boxes.
fn samples(l: &BatchLoader, steps: usize) -> Vec<(Vec<f32>, Vec<BoxLabel>)> {
    let mut out = Vec::new();
    for batch in l.batches(0, steps) {
        let b = batch.unwrap();
        assert!(b.skipped.is_empty());
        for (k, boxes) in b.boxes.iter().enumerate() {
            let img = b.images.get(k).unwrap().flatten_all().unwrap();
            out.push((img.to_vec1::<f32>().unwrap(), boxes.clone()));
        }
    }
    out
}

#[test]
fn loader_with_mosaic_zero_is_exactly_get_random_data() {
    let dir = tempfile::tempdir().unwrap();
    let anns = dataset(dir.path());
    let l = loader(&anns, 0.0, true, 0);
    for (s, (img, boxes)) in samples(&l, 3).into_iter().enumerate() {
        let want = direct(&l, &anns, s as u64, true);
        assert_eq!(
            img.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.image.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "sample {s}"
        );
        assert_eq!(boxes, want.boxes, "sample {s}");
    }
}

#[test]
fn loader_mosaic_is_reproducible_and_leaves_other_samples_and_letterbox_alone() {
    let dir = tempfile::tempdir().unwrap();
    let anns = dataset(dir.path());
    let n = 6; // batches
    let half = samples(&loader(&anns, 0.5, true, 0), n);
    // Reproducible whatever the prefetching.
    assert_eq!(half, samples(&loader(&anns, 0.5, true, 2), n));
    // Samples that are not mosaics are get_random_data's, bit for bit; about half are mosaics.
    let l = loader(&anns, 0.5, true, 0);
    let plain = half
        .iter()
        .enumerate()
        .filter(|(s, (img, boxes))| {
            let want = direct(&l, &anns, *s as u64, true);
            *img == want.image && *boxes == want.boxes
        })
        .count();
    assert!(
        (3..half.len() - 3).contains(&plain),
        "{plain} of {} samples are not mosaics",
        half.len()
    );
    // mosaic = 1: every sample is a mosaic (none equals get_random_data), boxes in the input.
    let all = samples(&loader(&anns, 1.0, true, 0), 2);
    let l1 = loader(&anns, 1.0, true, 0);
    for (s, (img, boxes)) in all.iter().enumerate() {
        assert_ne!(*img, direct(&l1, &anns, s as u64, true).image, "sample {s}");
        assert!(boxes.len() <= 20);
        for b in boxes {
            assert!(b.x_min >= 0.0 && b.y_min >= 0.0 && b.x_max <= 96.0 && b.y_max <= 64.0);
        }
    }
    // The letterbox path never uses the mosaic.
    let lb = loader(&anns, 1.0, false, 0);
    for (s, (img, boxes)) in samples(&lb, 2).into_iter().enumerate() {
        let want = direct(&lb, &anns, s as u64, false);
        assert_eq!(img, want.image, "sample {s}");
        assert_eq!(boxes, want.boxes, "sample {s}");
    }
}
