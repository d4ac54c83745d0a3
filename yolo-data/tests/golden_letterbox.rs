//! Golden tests: keras-yolo3's `get_random_data(random=False)` / `letterbox_image` against the
//! letterbox fixtures (Pillow 13 BICUBIC): boxes exact (compared sorted, since keras-yolo3 shuffles
//! them), image bit-exact from Pillow's decoded originals, grey padding exact, and within the
//! README's tolerance (mean <= 0.25, max <= 20 grey levels) when our own JPEG decoder is in the loop.

use rand::SeedableRng;
use yolo_data::{
    get_random_data, letterbox_image, load_rgb, AugmentConfig, BoxLabel, InputShape,
    LetterboxParams,
};
use yolo_testutil::{keras_fixture, read_json, read_tensors, shared_path, FixtureTensor};

const CASES: [&str; 8] = [
    "raccoon-1_416x416",
    "raccoon-1_320x416",
    "raccoon-119_416x416",
    "raccoon-119_320x416",
    "raccoon-168_416x416",
    "raccoon-168_320x416",
    "raccoon-150_416x416",
    "raccoon-150_320x416",
];

fn boxes_of(t: &FixtureTensor) -> Vec<BoxLabel> {
    let ints = t.ints.as_ref().unwrap();
    ints.chunks_exact(5)
        .map(|v| BoxLabel {
            x_min: v[0] as f32,
            y_min: v[1] as f32,
            x_max: v[2] as f32,
            y_max: v[3] as f32,
            class: v[4] as usize,
        })
        .collect()
}

fn image_of(t: &FixtureTensor) -> image::RgbImage {
    let (h, w) = (t.shape[0] as u32, t.shape[1] as u32);
    let bytes: Vec<u8> = t.ints.as_ref().unwrap().iter().map(|&v| v as u8).collect();
    image::RgbImage::from_raw(w, h, bytes).unwrap()
}

struct Case {
    input: InputShape,
    file: String,
    tensors: std::collections::HashMap<String, FixtureTensor>,
}

fn load_case(name: &'static str) -> Option<Case> {
    let st = keras_fixture(&format!("letterbox/{name}.safetensors"))?;
    let js = keras_fixture(&format!("letterbox/{name}.json"))?;
    let meta = read_json(&js);
    let hw = &meta["input_shape_hw"];
    let input = InputShape::new(
        hw[0].as_u64().unwrap() as usize,
        hw[1].as_u64().unwrap() as usize,
    )
    .unwrap();
    Some(Case {
        input,
        file: meta["file"].as_str().unwrap().to_string(),
        tensors: read_tensors(&st),
    })
}

/// The letterboxed box rows sorted by (x_min, y_min, x_max, y_max, class), as `box_data_sorted`.
fn sorted(mut b: Vec<BoxLabel>) -> Vec<[f32; 5]> {
    let mut rows: Vec<[f32; 5]> = b
        .drain(..)
        .map(|b| [b.x_min, b.y_min, b.x_max, b.y_max, b.class as f32])
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn letterbox_boxes_exact_for_all_cases() {
    for name in CASES {
        let Some(c) = load_case(name) else { return };
        let boxes = boxes_of(&c.tensors["boxes_in"]);
        let want = &c.tensors["box_data_sorted"];
        let n = boxes.len();
        let want_rows: Vec<[f32; 5]> = want
            .data
            .chunks_exact(5)
            .take(n)
            .map(|r| r.try_into().unwrap())
            .collect();
        assert!(
            want.data[n * 5..].iter().all(|&v| v == 0.0),
            "{name}: padding"
        );
        // The boxes do not depend on the pixels: run get_random_data on a blank image of the
        // original size, with several shuffles.
        let meta = read_json(&keras_fixture(&format!("letterbox/{name}.json")).unwrap());
        let (iw, ih) = (
            meta["size_wh"][0].as_u64().unwrap() as u32,
            meta["size_wh"][1].as_u64().unwrap() as u32,
        );
        let blank = image::RgbImage::new(iw, ih);
        for seed in 0..3 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let s = get_random_data(
                &blank,
                &boxes,
                c.input,
                false,
                &AugmentConfig::default(),
                &mut rng,
            );
            assert_eq!(sorted(s.boxes), want_rows, "{name} seed {seed}");
        }
        let p = LetterboxParams::new(iw as usize, ih as usize, c.input);
        let resized: Vec<u64> = meta["resized_wh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let offset: Vec<u64> = meta["paste_offset_xy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            (p.nw as u64, p.nh as u64, p.dx as u64, p.dy as u64),
            (resized[0], resized[1], offset[0], offset[1]),
            "{name}"
        );
    }
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn letterbox_image_bit_exact_from_pillow_decoded_originals() {
    let mut checked = 0;
    for name in CASES {
        let Some(c) = load_case(name) else { return };
        let stem = name.split('_').next().unwrap();
        // The fixture README ships Pillow-decoded originals for these two images only.
        if !["raccoon-119", "raccoon-150"].contains(&stem) {
            continue;
        }
        let Some(dec) = keras_fixture(&format!("letterbox/decoded/{stem}_decoded.safetensors"))
        else {
            return;
        };
        let original = image_of(&read_tensors(&dec)["image"]);
        let want = image_of(&c.tensors["letterbox_u8"]);
        let got = letterbox_image(&original, c.input);
        let differing = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} values differ from Pillow"
        );

        // get_random_data(random=False) returns the same pixels / 255 in CHW order, and equals the
        // fixture's float image bit for bit where it is stored.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(401);
        let s = get_random_data(
            &original,
            &[],
            c.input,
            false,
            &AugmentConfig::default(),
            &mut rng,
        );
        let (h, w) = (c.input.h, c.input.w);
        if let Some(f) = c.tensors.get("image_data") {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..3 {
                        let a = s.image[(ch * h + y) * w + x];
                        let b = f.data[(y * w + x) * 3 + ch];
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{name} image_data at ({y},{x},{ch})"
                        );
                    }
                }
            }
        } else {
            for (i, v) in want.as_raw().iter().enumerate() {
                let (pix, ch) = (i / 3, i % 3);
                assert_eq!(
                    s.image[ch * h * w + pix],
                    (*v as f64 / 255.0) as f32,
                    "{name}"
                );
            }
        }
        checked += 1;
    }
    if checked > 0 {
        assert_eq!(
            checked, 4,
            "raccoon-119 and raccoon-150 at two input shapes"
        );
    }
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
#[cfg_attr(
    shared_missing = "datasets/raccoon",
    ignore = "needs shared/datasets/raccoon (absent)"
)]
fn letterbox_image_from_our_jpeg_decode_within_tolerance() {
    for name in CASES {
        let Some(c) = load_case(name) else { return };
        let Some(path) = shared_path(&format!("datasets/raccoon/images/{}", c.file)) else {
            return;
        };
        let original = load_rgb(&path).unwrap();
        let want = image_of(&c.tensors["letterbox_u8"]);
        let got = letterbox_image(&original, c.input);
        let p = LetterboxParams::new(
            original.width() as usize,
            original.height() as usize,
            c.input,
        );
        let (mut sum, mut max, mut count) = (0u64, 0u8, 0u64);
        for (x, y, g) in got.enumerate_pixels() {
            let wv = want.get_pixel(x, y);
            let inside = (p.dx..p.dx + p.nw).contains(&(x as usize))
                && (p.dy..p.dy + p.nh).contains(&(y as usize));
            if !inside {
                // Grey padding: exact on both sides.
                assert_eq!(g.0, [128; 3], "{name} padding at ({x},{y})");
                assert_eq!(wv.0, [128; 3], "{name} fixture padding at ({x},{y})");
                continue;
            }
            for ch in 0..3 {
                let d = g.0[ch].abs_diff(wv.0[ch]);
                sum += d as u64;
                max = max.max(d);
                count += 1;
            }
        }
        let mean = sum as f64 / count as f64;
        eprintln!(
            "{name}: our JPEG decode + Pillow-exact resize vs Pillow: mean {mean:.4}, max {max}"
        );
        assert!(
            mean <= 0.25 && max <= 20,
            "{name}: mean {mean:.4}, max {max}"
        );
    }
}
