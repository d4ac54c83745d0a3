//! A synthetic detection dataset: saturated coloured shapes with exact boxes on textured, noisy,
//! low-saturation backgrounds. Each class is one shape drawn in its own hue range, so a class is
//! recognisable by shape and by colour; objects never touch each other and lie fully inside the
//! image. Generation is deterministic for a seed, image by image (image `i` depends only on the seed
//! and `i`), so images can be made in parallel or one at a time.
//!
//! The default ([`SynthConfig::default`]): 200 images of 128x128, classes circle (red), square
//! (green), triangle (blue), 1-4 objects of 12-48 pixels each. It is the dataset of `yolo demo` and
//! of the integration tests: clean enough that a small model trained for minutes on a CPU detects
//! it well, yet with varied sizes, positions, colours and backgrounds.
//!
//! Boxes are the tight box of the painted pixels: `x_min` is the first painted column and `x_max`
//! one past the last (so `x_max - x_min` is the width in pixels), likewise for y.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{write_annotations, write_classes, Annotation, BoxLabel, DataError};

/// A shape the generator can draw; each has its own hue range (centre ± [`HUE_HALF_RANGE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthShape {
    /// A filled disc, red (hue 0°).
    Circle,
    /// A filled axis-aligned square, green (hue 120°).
    Square,
    /// A filled upright triangle (apex at the top), blue (hue 240°).
    Triangle,
    /// A filled diamond (square on its tip), yellow (hue 60°).
    Diamond,
}

/// Half width of each class's hue range, in degrees.
pub const HUE_HALF_RANGE: f32 = 15.0;

impl SynthShape {
    /// The centre of the shape's hue range, in degrees.
    pub fn hue(self) -> f32 {
        match self {
            SynthShape::Circle => 0.0,
            SynthShape::Square => 120.0,
            SynthShape::Triangle => 240.0,
            SynthShape::Diamond => 60.0,
        }
    }

    /// The class name written to the classes file.
    pub fn name(self) -> &'static str {
        match self {
            SynthShape::Circle => "circle",
            SynthShape::Square => "square",
            SynthShape::Triangle => "triangle",
            SynthShape::Diamond => "diamond",
        }
    }

    /// Whether the point (x, y), relative to the shape's s x s square, is inside the shape.
    fn contains(self, x: f32, y: f32, s: f32) -> bool {
        let (u, v) = (x / s, y / s); // unit square coordinates
        match self {
            SynthShape::Circle => (u - 0.5).powi(2) + (v - 0.5).powi(2) <= 0.25,
            SynthShape::Square => (0.0..=1.0).contains(&u) && (0.0..=1.0).contains(&v),
            // Apex (0.5, 0), base from (0, 1) to (1, 1).
            SynthShape::Triangle => v <= 1.0 && (u - 0.5).abs() <= v / 2.0,
            SynthShape::Diamond => (u - 0.5).abs() + (v - 0.5).abs() <= 0.5,
        }
    }
}

/// Image file format of the generated images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthFormat {
    /// Lossless PNG (colours exact).
    Png,
    /// JPEG at quality 90 (closer to real photos; colours approximate).
    Jpeg,
}

/// What to generate. The defaults are the demo's dataset (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Width and height of the square images, in pixels.
    pub image_size: u32,
    /// Number of images.
    pub count: usize,
    /// The classes, in id order.
    pub classes: Vec<SynthShape>,
    /// Seed; the same seed and config give the same dataset.
    pub seed: u64,
    /// Smallest object side, in pixels.
    pub min_object_size: u32,
    /// Largest object side, in pixels.
    pub max_object_size: u32,
    /// Most objects per image (at least one is always placed).
    pub max_objects: usize,
    /// Image file format.
    pub format: SynthFormat,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            image_size: 128,
            count: 200,
            classes: vec![SynthShape::Circle, SynthShape::Square, SynthShape::Triangle],
            seed: 0,
            min_object_size: 12,
            max_object_size: 48,
            max_objects: 4,
            format: SynthFormat::Png,
        }
    }
}

impl SynthConfig {
    /// Checks the ranges: image 16..=4096 px, objects 4 px up to the image size, 1..=64 objects,
    /// at least one class, no repeated class, at most 10 million images.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::Config(m));
        if !(16..=4096).contains(&self.image_size) {
            return bad(format!(
                "synth image_size {} is not in 16..=4096",
                self.image_size
            ));
        }
        if self.min_object_size < 4
            || self.min_object_size > self.max_object_size
            || self.max_object_size > self.image_size
        {
            return bad(format!(
                "synth object sizes {}..={} must satisfy 4 <= min <= max <= image_size ({})",
                self.min_object_size, self.max_object_size, self.image_size
            ));
        }
        if !(1..=64).contains(&self.max_objects) {
            return bad(format!(
                "synth max_objects {} is not in 1..=64",
                self.max_objects
            ));
        }
        if self.classes.is_empty() {
            return bad("synth needs at least one class".into());
        }
        for (i, c) in self.classes.iter().enumerate() {
            if self.classes[..i].contains(c) {
                return bad(format!("synth class `{}` is listed twice", c.name()));
            }
        }
        if self.count > 10_000_000 {
            return bad(format!("synth count {} is more than 10000000", self.count));
        }
        Ok(())
    }

    /// The class names, in id order.
    pub fn class_names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name().to_string()).collect()
    }
}

/// HSV (hue in degrees, s and v in [0, 1]) to 8-bit RGB.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [u8; 3] {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let q = |t: f32| ((t + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
}

/// 8-bit RGB to HSV (hue in degrees in [0, 360), s and v in [0, 1]).
pub fn rgb_to_hsv(p: [u8; 3]) -> (f32, f32, f32) {
    let [r, g, b] = p.map(|c| f32::from(c) / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    let s = if max == 0.0 { 0.0 } else { d / max };
    (h, s, max)
}

/// Per-pixel noise amplitude (each channel gets a uniform offset in ±this).
const NOISE: i32 = 8;

fn add_noise(p: [u8; 3], rng: &mut ChaCha8Rng) -> [u8; 3] {
    p.map(|c| (i32::from(c) + rng.random_range(-NOISE..=NOISE)).clamp(0, 255) as u8)
}

/// Textured background: a low-saturation base colour, a linear gradient, smooth value noise on
/// a coarse grid, a few faint streaks, and per-pixel noise.
fn background(size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let hue = rng.random_range(0.0..360.0f32);
    let sat = rng.random_range(0.0..0.15f32);
    let base_v = rng.random_range(0.4..0.8f32);
    let (gx, gy) = (
        rng.random_range(-0.15..0.15f32),
        rng.random_range(-0.15..0.15f32),
    );
    const CELLS: usize = 5;
    let grid: Vec<f32> = (0..(CELLS + 1) * (CELLS + 1))
        .map(|_| rng.random_range(-0.08..0.08f32))
        .collect();
    let n = size as f32;
    let mut img = RgbImage::new(size, size);
    for y in 0..size {
        for x in 0..size {
            let (u, v) = (x as f32 / n, y as f32 / n);
            // Bilinear value noise.
            let (fx, fy) = (u * CELLS as f32, v * CELLS as f32);
            let (ix, iy) = ((fx as usize).min(CELLS - 1), (fy as usize).min(CELLS - 1));
            let (tx, ty) = (fx - ix as f32, fy - iy as f32);
            let g = |i: usize, j: usize| grid[j * (CELLS + 1) + i];
            let vn = g(ix, iy) * (1.0 - tx) * (1.0 - ty)
                + g(ix + 1, iy) * tx * (1.0 - ty)
                + g(ix, iy + 1) * (1.0 - tx) * ty
                + g(ix + 1, iy + 1) * tx * ty;
            let val = (base_v + gx * (u - 0.5) + gy * (v - 0.5) + vn).clamp(0.3, 0.9);
            img.put_pixel(x, y, Rgb(hsv_to_rgb(hue, sat, val)));
        }
    }
    // Faint straight streaks (lighter or darker, unsaturated) as clutter.
    for _ in 0..rng.random_range(0..4) {
        let horizontal = rng.random_bool(0.5);
        let at = rng.random_range(0..size);
        let width = rng.random_range(1..=3u32);
        let delta: i32 = if rng.random_bool(0.5) { 25 } else { -25 };
        for t in 0..size {
            for k in 0..width {
                let (x, y) = if horizontal { (t, at + k) } else { (at + k, t) };
                if x < size && y < size {
                    let p = img.get_pixel(x, y).0;
                    let q = p.map(|c| (i32::from(c) + delta).clamp(0, 255) as u8);
                    img.put_pixel(x, y, Rgb(q));
                }
            }
        }
    }
    for p in img.pixels_mut() {
        p.0 = add_noise(p.0, rng);
    }
    img
}

/// Generates image `index` of the dataset `cfg` in memory: the image and its exact boxes.
pub fn synth_image(
    cfg: &SynthConfig,
    index: usize,
) -> Result<(RgbImage, Vec<BoxLabel>), DataError> {
    cfg.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(index as u64);
    let size = cfg.image_size;
    let mut img = background(size, &mut rng);
    let wanted = rng.random_range(1..=cfg.max_objects);
    // Placed squares (x0, y0, side), kept 3 pixels apart.
    let mut placed: Vec<(u32, u32, u32)> = Vec::new();
    let mut boxes = Vec::new();
    for _ in 0..wanted * 30 {
        if placed.len() == wanted {
            break;
        }
        let s = rng.random_range(cfg.min_object_size..=cfg.max_object_size);
        let x0 = rng.random_range(0..=size - s);
        let y0 = rng.random_range(0..=size - s);
        let gap = 3;
        let clash = placed.iter().any(|&(px, py, ps)| {
            x0 < px + ps + gap && px < x0 + s + gap && y0 < py + ps + gap && py < y0 + s + gap
        });
        if clash {
            continue;
        }
        let class = rng.random_range(0..cfg.classes.len());
        let shape = cfg.classes[class];
        let hue = shape.hue() + rng.random_range(-HUE_HALF_RANGE..=HUE_HALF_RANGE);
        let colour = hsv_to_rgb(
            hue,
            rng.random_range(0.75..=1.0),
            rng.random_range(0.7..=1.0),
        );
        let (mut x_lo, mut y_lo, mut x_hi, mut y_hi) = (u32::MAX, u32::MAX, 0, 0);
        for y in y0..y0 + s {
            for x in x0..x0 + s {
                let (fx, fy) = ((x - x0) as f32 + 0.5, (y - y0) as f32 + 0.5);
                if shape.contains(fx, fy, s as f32) {
                    img.put_pixel(x, y, Rgb(add_noise(colour, &mut rng)));
                    x_lo = x_lo.min(x);
                    y_lo = y_lo.min(y);
                    x_hi = x_hi.max(x + 1);
                    y_hi = y_hi.max(y + 1);
                }
            }
        }
        placed.push((x0, y0, s));
        if x_hi > x_lo {
            boxes.push(BoxLabel {
                x_min: x_lo as f32,
                y_min: y_lo as f32,
                x_max: x_hi as f32,
                y_max: y_hi as f32,
                class,
            });
        }
    }
    Ok((img, boxes))
}

/// What [`write_synth`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthDataset {
    /// The annotation lines, image paths absolute.
    pub annotations: Vec<Annotation>,
    /// The class names.
    pub classes: Vec<String>,
    /// The annotation file (`annotations.txt` in the output folder).
    pub annotation_file: PathBuf,
    /// The classes file (`classes.txt` in the output folder).
    pub classes_file: PathBuf,
}

/// Writes the dataset to `out_dir`: `images/synth-NNNNNN.png` (or `.jpg`), `annotations.txt`
/// (keras-yolo3 lines with absolute image paths), `classes.txt` and `synth.json` (the config).
pub fn write_synth(cfg: &SynthConfig, out_dir: &Path) -> Result<SynthDataset, DataError> {
    cfg.validate()?;
    let images = out_dir.join("images");
    std::fs::create_dir_all(&images).map_err(|e| DataError::io(&images, e))?;
    let out_dir = out_dir
        .canonicalize()
        .map_err(|e| DataError::io(out_dir, e))?;
    let images = out_dir.join("images");
    let (ext, fmt) = match cfg.format {
        SynthFormat::Png => ("png", image::ImageFormat::Png),
        SynthFormat::Jpeg => ("jpg", image::ImageFormat::Jpeg),
    };
    let annotations = (0..cfg.count)
        .into_par_iter()
        .map(|i| {
            let (img, boxes) = synth_image(cfg, i)?;
            let path = images.join(format!("synth-{i:06}.{ext}"));
            let written = match cfg.format {
                SynthFormat::Png => img.save_with_format(&path, fmt),
                SynthFormat::Jpeg => std::fs::File::create(&path)
                    .map_err(image::ImageError::IoError)
                    .and_then(|f| {
                        let mut w = std::io::BufWriter::new(f);
                        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 90)
                            .encode_image(&img)
                    }),
            };
            written.map_err(|e| DataError::Image {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Ok(Annotation {
                path,
                boxes,
                line: i + 1,
            })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    let annotation_file = out_dir.join("annotations.txt");
    write_annotations(&annotation_file, &annotations)?;
    let classes = cfg.class_names();
    let classes_file = out_dir.join("classes.txt");
    write_classes(&classes_file, &classes)?;
    let json_file = out_dir.join("synth.json");
    let json = serde_json::to_string_pretty(cfg).map_err(|e| DataError::Config(e.to_string()))?;
    std::fs::write(&json_file, json + "\n").map_err(|e| DataError::io(&json_file, e))?;
    Ok(SynthDataset {
        annotations,
        classes,
        annotation_file,
        classes_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hue_dist(a: f32, b: f32) -> f32 {
        let d = (a - b).rem_euclid(360.0);
        d.min(360.0 - d)
    }

    fn is_object(p: [u8; 3]) -> bool {
        let (_, s, v) = rgb_to_hsv(p);
        s > 0.5 && v > 0.4
    }

    #[test]
    fn hsv_round_trip() {
        for &(h, s, v) in &[
            (0.0, 1.0, 1.0),
            (120.0, 0.8, 0.7),
            (240.0, 0.9, 0.8),
            (60.0, 1.0, 0.9),
        ] {
            let (h2, s2, v2) = rgb_to_hsv(hsv_to_rgb(h, s, v));
            assert!(hue_dist(h, h2) < 1.0 && (s - s2).abs() < 0.01 && (v - v2).abs() < 0.01);
        }
        assert_eq!(hsv_to_rgb(0.0, 1.0, 1.0), [255, 0, 0]);
        assert_eq!(hsv_to_rgb(120.0, 1.0, 1.0), [0, 255, 0]);
    }

    #[test]
    fn same_seed_same_images_other_seed_differs() {
        let cfg = SynthConfig::default();
        let (a, ba) = synth_image(&cfg, 3).unwrap();
        let (b, bb) = synth_image(&cfg, 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(ba, bb);
        let other = SynthConfig {
            seed: 1,
            ..cfg.clone()
        };
        let (c, _) = synth_image(&other, 3).unwrap();
        assert_ne!(a, c);
        let (d, _) = synth_image(&cfg, 4).unwrap();
        assert_ne!(a, d);
    }

    #[test]
    fn boxes_are_exact_inside_and_coloured_by_class() {
        let cfg = SynthConfig::default();
        let mut per_class = [0usize; 3];
        let mut counts = [0usize; 5];
        for i in 0..60 {
            let (img, boxes) = synth_image(&cfg, i).unwrap();
            assert!((1..=4).contains(&boxes.len()), "image {i}: {}", boxes.len());
            counts[boxes.len()] += 1;
            for b in &boxes {
                per_class[b.class] += 1;
                let (x0, y0, x1, y1) = (
                    b.x_min as u32,
                    b.y_min as u32,
                    b.x_max as u32,
                    b.y_max as u32,
                );
                assert!(x1 <= 128 && y1 <= 128 && x0 < x1 && y0 < y1);
                let side = (x1 - x0).max(y1 - y0);
                assert!((11..=48).contains(&side), "side {side}");
                // The box centre has the class colour.
                let c = img.get_pixel((x0 + x1) / 2, (y0 + y1) / 2).0;
                let (h, s, _) = rgb_to_hsv(c);
                assert!(s > 0.5, "image {i} box {b:?}: centre {c:?} not saturated");
                let want = cfg.classes[b.class].hue();
                assert!(
                    hue_dist(h, want) <= HUE_HALF_RANGE + 12.0,
                    "hue {h} vs {want}"
                );
                // Tight: each edge row/column has an object pixel, the ones just outside none.
                let col_has = |x: u32| (y0..y1).any(|y| is_object(img.get_pixel(x, y).0));
                let row_has = |y: u32| (x0..x1).any(|x| is_object(img.get_pixel(x, y).0));
                assert!(col_has(x0) && col_has(x1 - 1) && row_has(y0) && row_has(y1 - 1));
                if x0 > 0 {
                    assert!(!col_has(x0 - 1), "image {i}: column left of {b:?}");
                }
                if x1 < 128 {
                    assert!(!col_has(x1), "image {i}: column right of {b:?}");
                }
                if y0 > 0 {
                    assert!(!row_has(y0 - 1), "image {i}: row above {b:?}");
                }
                if y1 < 128 {
                    assert!(!row_has(y1), "image {i}: row below {b:?}");
                }
            }
        }
        assert!(per_class.iter().all(|&n| n > 15), "{per_class:?}");
        assert!(counts[1] > 0 && counts[4] > 0, "{counts:?}");
    }

    #[test]
    fn background_is_unsaturated() {
        let cfg = SynthConfig::default();
        let (img, boxes) = synth_image(&cfg, 0).unwrap();
        let inside = |x: u32, y: u32| {
            boxes.iter().any(|b| {
                (x as f32) >= b.x_min
                    && (x as f32) < b.x_max
                    && (y as f32) >= b.y_min
                    && (y as f32) < b.y_max
            })
        };
        let mut n = 0;
        for (x, y, p) in img.enumerate_pixels() {
            if !inside(x, y) {
                assert!(!is_object(p.0), "({x},{y}) {:?}", p.0);
                n += 1;
            }
        }
        assert!(n > 1000);
    }

    #[test]
    fn config_errors() {
        let e = |c: SynthConfig| c.validate().unwrap_err().to_string();
        let d = SynthConfig::default();
        assert_eq!(
            e(SynthConfig {
                image_size: 8,
                ..d.clone()
            }),
            "invalid configuration: synth image_size 8 is not in 16..=4096"
        );
        assert_eq!(
            e(SynthConfig { min_object_size: 50, ..d.clone() }),
            "invalid configuration: synth object sizes 50..=48 must satisfy 4 <= min <= max <= image_size (128)"
        );
        assert_eq!(
            e(SynthConfig {
                classes: vec![],
                ..d.clone()
            }),
            "invalid configuration: synth needs at least one class"
        );
        assert_eq!(
            e(SynthConfig {
                classes: vec![SynthShape::Circle, SynthShape::Circle],
                ..d.clone()
            }),
            "invalid configuration: synth class `circle` is listed twice"
        );
        assert_eq!(
            e(SynthConfig {
                max_objects: 0,
                ..d
            }),
            "invalid configuration: synth max_objects 0 is not in 1..=64"
        );
    }

    #[test]
    fn config_serde_defaults() {
        let c: SynthConfig =
            serde_json::from_str(r#"{"count": 5, "classes": ["diamond", "circle"]}"#).unwrap();
        assert_eq!(c.count, 5);
        assert_eq!(c.image_size, 128);
        assert_eq!(c.class_names(), vec!["diamond", "circle"]);
    }

    #[test]
    fn writes_images_annotations_and_classes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            count: 5,
            seed: 9,
            ..Default::default()
        };
        let d = write_synth(&cfg, dir.path()).unwrap();
        assert_eq!(d.annotations.len(), 5);
        let back = crate::read_annotations(&d.annotation_file).unwrap();
        assert_eq!(back, d.annotations);
        assert_eq!(
            crate::read_classes(&d.classes_file).unwrap(),
            vec!["circle", "square", "triangle"]
        );
        for (i, a) in d.annotations.iter().enumerate() {
            let img = image::open(&a.path).unwrap().to_rgb8();
            let (mem, boxes) = synth_image(&cfg, i).unwrap();
            assert_eq!(img, mem, "PNG is lossless");
            assert_eq!(boxes, a.boxes);
        }
        let again = tempfile::tempdir().unwrap();
        let d2 = write_synth(&cfg, again.path()).unwrap();
        for (a, b) in d.annotations.iter().zip(&d2.annotations) {
            assert_eq!(
                std::fs::read(&a.path).unwrap(),
                std::fs::read(&b.path).unwrap()
            );
        }
        let jcfg = SynthConfig {
            format: SynthFormat::Jpeg,
            count: 2,
            ..cfg
        };
        let dj = write_synth(&jcfg, &dir.path().join("jpeg")).unwrap();
        assert!(dj.annotations[0].path.extension().unwrap() == "jpg");
        let img = image::open(&dj.annotations[0].path).unwrap();
        assert_eq!((img.width(), img.height()), (128, 128));
    }
}
