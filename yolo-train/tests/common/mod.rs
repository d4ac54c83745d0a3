//! Test inputs shared by the trainer tests: a tiny generated detection dataset, and the fixed
//! images and boxes of the one-step comparisons.
#![allow(dead_code)]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};
use yolo_data::BoxLabel;
use yolo_train::TrainConfig;

/// Writes `n` images (w x h, noisy grey background, one or two coloured rectangles; class 0 red,
/// class 1 blue) plus `train.txt`, `classes.txt` and a small-anchors file into `dir`.
pub fn synth(dir: &Path, n: usize, w: u32, h: u32) {
    let mut lines = String::new();
    let mut state = 12345u64;
    let mut rnd = |m: u32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % m as u64) as u32
    };
    for i in 0..n {
        let mut img = RgbImage::from_fn(w, h, |_, _| Rgb([100, 100, 100]));
        for p in img.pixels_mut() {
            let v = 90 + (rnd(40) as u8);
            *p = Rgb([v, v, v]);
        }
        let name = format!("img{i:03}.png");
        let mut line = dir.join(&name).display().to_string();
        for k in 0..(1 + i % 2) {
            let class = (i + k) % 2;
            let bw = 14 + rnd(w / 3);
            let bh = 14 + rnd(h / 3);
            let x0 = rnd(w - bw);
            let y0 = rnd(h - bh);
            let c = if class == 0 {
                Rgb([220, 30, 30])
            } else {
                Rgb([30, 30, 220])
            };
            for y in y0..y0 + bh {
                for x in x0..x0 + bw {
                    img.put_pixel(x, y, c);
                }
            }
            line.push_str(&format!(" {},{},{},{},{}", x0, y0, x0 + bw, y0 + bh, class));
        }
        img.save(dir.join(&name)).unwrap();
        lines.push_str(&line);
        lines.push('\n');
    }
    std::fs::write(dir.join("train.txt"), lines).unwrap();
    std::fs::write(dir.join("classes.txt"), "red\nblue\n").unwrap();
    std::fs::write(
        dir.join("anchors.txt"),
        "4,5, 8,10, 12,14, 16,20, 24,28, 32,40\n",
    )
    .unwrap();
}

pub fn config(dir: &Path) -> TrainConfig {
    TrainConfig::load(
        None,
        &[
            format!("annotations = '{}'", dir.join("train.txt").display()),
            format!("classes = '{}'", dir.join("classes.txt").display()),
            format!("anchors = '{}'", dir.join("anchors.txt").display()),
            format!("run_dir = '{}'", dir.join("run").display()),
            "tiny = true".into(),
            "input = [64, 64]".into(),
            "val_split = 0.25".into(),
            "progress = false".into(),
            "eval_map = false".into(),
        ],
    )
    .unwrap()
}

/// A tensor's values as f32, whatever its dtype.
pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// A fixed pseudo-random batch of two `size` x `size` images in [0, 1).
pub fn images(size: usize, dev: &Device) -> Tensor {
    let mut state = 12345u32;
    let pixels: Vec<f32> = (0..2 * 3 * size * size)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect();
    Tensor::from_vec(pixels, (2, 3, size, size), dev).unwrap()
}

/// Three fixed boxes for the two images of [`images`], laid out for a 64 x 64 input and scaled to
/// `size`.
pub fn boxes(size: usize) -> Vec<Vec<BoxLabel>> {
    let s = size as f32 / 64.0;
    let b = |x0: f32, y0: f32, x1: f32, y1: f32, class| BoxLabel {
        x_min: x0 * s,
        y_min: y0 * s,
        x_max: x1 * s,
        y_max: y1 * s,
        class,
    };
    vec![
        vec![b(4.0, 8.0, 40.0, 60.0, 1), b(44.0, 4.0, 52.0, 14.0, 2)],
        vec![b(10.0, 20.0, 62.0, 50.0, 0)],
    ]
}
