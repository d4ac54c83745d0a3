//! Pins the exact bytes of `get_random_data` (both paths), `augment_with_params` and the batch
//! loader on synthetic images: FNV-1a hashes of the f32 bits and boxes, recorded before the
//! data-pipeline speed work so that faster code provably returns the same values.
//! A change here means the pipeline's output changed: only update the constants on purpose.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use yolo_data::{
    augment_with_params, get_random_data, Anchors, Annotation, AugmentConfig, AugmentParams,
    BatchLoader, BoxLabel, InputShape, LoaderConfig,
};

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn floats(&mut self, v: &[f32]) {
        for x in v {
            self.bytes(&x.to_bits().to_le_bytes());
        }
    }
    fn boxes(&mut self, b: &[BoxLabel]) {
        for b in b {
            self.floats(&[b.x_min, b.y_min, b.x_max, b.y_max]);
            self.bytes(&(b.class as u64).to_le_bytes());
        }
    }
}

/// Deterministic noisy image with smooth gradients, so every resize tap and HSV sector matters.
fn noise_image(w: u32, h: u32, salt: u32) -> image::RgbImage {
    let mut s = 0x1234_5678u32 ^ salt;
    image::RgbImage::from_fn(w, h, |x, y| {
        let mut c = [0u8; 3];
        for (k, v) in c.iter_mut().enumerate() {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let smooth = (x * (3 + k as u32) + y * (5 - k as u32)) as u8;
            *v = smooth.wrapping_add(((s >> 16) as u8) >> 2);
        }
        image::Rgb(c)
    })
}

fn boxes() -> Vec<BoxLabel> {
    (0..6)
        .map(|k| BoxLabel {
            x_min: 3.0 + 17.0 * k as f32,
            y_min: 5.0 + 11.0 * k as f32,
            x_max: 60.0 + 19.0 * k as f32,
            y_max: 40.0 + 13.0 * k as f32,
            class: k % 3,
        })
        .collect()
}

fn sample_hash(random: bool, seed: u64, input: InputShape, img: &image::RgbImage) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = get_random_data(
        img,
        &boxes(),
        input,
        random,
        &AugmentConfig::default(),
        &mut rng,
    );
    let mut h = Fnv::new();
    h.floats(&s.image);
    h.boxes(&s.boxes);
    h.0
}

#[test]
fn get_random_data_bytes_are_pinned() {
    let img = noise_image(203, 157, 1);
    let sq = InputShape::square416();
    let wide = InputShape::new(320, 416).unwrap();
    let got: Vec<u64> = [
        sample_hash(true, 0, sq, &img),
        sample_hash(true, 1, sq, &img),
        sample_hash(true, 2, sq, &img),
        sample_hash(true, 3, wide, &img),
        sample_hash(true, 4, wide, &img),
        sample_hash(false, 0, sq, &img),
        sample_hash(false, 0, wide, &img),
    ]
    .to_vec();
    let want: Vec<u64> = vec![
        17920519983353734697,
        15539686459349761,
        15793835204985662953,
        11974083791368893044,
        17384433747053432530,
        4718991464137076295,
        12352596038802476753,
    ];
    assert_eq!(got, want);
}

#[test]
fn augment_with_params_bytes_are_pinned() {
    // Up- and downscaling, each flip, offsets inside and outside the canvas, strong HSV.
    let img = noise_image(500, 375, 2);
    let input = InputShape::new(320, 416).unwrap();
    let cases = [
        (832, 600, -100, -150, false, 0.1, 1.5, 0.7),
        (832, 600, -300, -10, true, -0.1, 0.67, 1.5),
        (104, 90, 12, 200, false, 0.05, 1.2, 1.3),
        (104, 90, 300, 7, true, -0.05, 0.8, 0.9),
        (416, 320, 0, 0, false, 0.0, 1.0, 1.0),
        (450, 299, 5, -3, true, 0.09, 1.4, 1.1),
        (37, 500, 400, -90, false, -0.09, 1.0, 0.66),
    ];
    let got: Vec<u64> = cases
        .iter()
        .map(|&(nw, nh, dx, dy, flip, hue, sat, val)| {
            let p = AugmentParams {
                nw,
                nh,
                dx,
                dy,
                flip,
                hue,
                sat,
                val,
            };
            let s = augment_with_params(&img, &boxes(), input, &p, 20);
            let mut h = Fnv::new();
            h.floats(&s.image);
            h.boxes(&s.boxes);
            h.0
        })
        .collect();
    let want: Vec<u64> = vec![
        11268926306768009694,
        2069131989496429132,
        16373704844800059261,
        4231216877453582578,
        13135550810462409252,
        16866065934134297542,
        11212377912519000239,
    ];
    assert_eq!(got, want);
}

fn write_images(dir: &Path) -> Vec<Annotation> {
    (0..6)
        .map(|k| {
            let path = dir.join(format!("img{k}.png"));
            if k == 4 {
                std::fs::write(&path, b"not a png").unwrap();
            } else {
                noise_image(90 + 23 * k as u32, 70 + 9 * k as u32, k as u32)
                    .save(&path)
                    .unwrap();
            }
            Annotation {
                path,
                boxes: boxes()[..3].to_vec(),
                line: k + 1,
            }
        })
        .collect()
}

fn loader_hash(random: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let anns = write_images(dir.path());
    let cfg = LoaderConfig {
        batch_size: 4,
        input: InputShape::new(96, 128).unwrap(),
        random,
        seed: 11,
        prefetch: 0,
        ..LoaderConfig::default()
    };
    let loader = BatchLoader::new(anns, cfg, Anchors::yolo_default(), 3).unwrap();
    let mut h = Fnv::new();
    for batch in loader.batches(0, 3) {
        let b = batch.unwrap();
        h.bytes(&(b.len() as u64).to_le_bytes());
        h.bytes(&(b.skipped.len() as u64).to_le_bytes());
        h.floats(&b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        for y in &b.y_true {
            h.floats(&y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        for bx in &b.boxes {
            h.boxes(bx);
        }
    }
    h.0
}

#[test]
fn loader_batches_are_pinned_with_a_skipped_image() {
    let got = [loader_hash(true), loader_hash(false)];
    let want: [u64; 2] = [1003611789227571014, 13814352100146817233];
    assert_eq!(got, want);
}

#[test]
fn into_variants_write_every_value_and_match_the_allocating_ones() {
    let img = noise_image(211, 167, 3);
    let input = InputShape::new(96, 128).unwrap();
    let mut out = vec![f32::NAN; 3 * 96 * 128];
    for (nw, nh, dx, dy, flip) in [
        (300, 250, -40, -60, true),
        (60, 40, 20, 30, false),
        (60, 40, 20, 30, true),
        (128, 96, 0, 0, false),
        (50, 20, 200, 10, false),
    ] {
        let p = AugmentParams {
            nw,
            nh,
            dx,
            dy,
            flip,
            hue: 0.03,
            sat: 1.2,
            val: 0.9,
        };
        out.fill(f32::NAN);
        let b = yolo_data::augment_with_params_into(&img, &boxes(), input, &p, 20, &mut out);
        let s = augment_with_params(&img, &boxes(), input, &p, 20);
        assert_eq!(b, s.boxes);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&s.image), "{p:?}");
    }
    for (w, h) in [(211, 167), (40, 300), (128, 96)] {
        let img = noise_image(w, h, 4);
        out.fill(f32::NAN);
        yolo_data::letterbox_chw_into(&img, input, &mut out);
        let want = yolo_data::to_chw_unit(&yolo_data::letterbox_image(&img, input));
        assert!(out
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
