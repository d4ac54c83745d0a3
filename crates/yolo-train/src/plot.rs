//! The loss-curve PNG (`loss.png`), drawn with the `image` crate alone: axes, a log-scale y axis with
//! grid lines labelled by a built-in 3x5 pixel digit font (no font files needed), train loss in
//! blue, validation loss in red, phase boundaries as grey vertical lines.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::atomic::atomic_write;
use crate::error::{Result, TrainError};
use crate::metrics::EpochRecord;

const W: u32 = 800;
const H: u32 = 480;
const LEFT: i64 = 70;
const RIGHT: i64 = 20;
const TOP: i64 = 20;
const BOTTOM: i64 = 40;
/// Train loss colour.
pub const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
/// Validation loss colour.
pub const VAL: Rgb<u8> = Rgb([214, 39, 40]);
const AXIS: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const PHASE: Rgb<u8> = Rgb([150, 150, 150]);

/// Renders the curves of `rows` (in run order) into an image.
pub fn render(rows: &[EpochRecord]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (x0, x1, y0, y1) = (LEFT, W as i64 - RIGHT, TOP, H as i64 - BOTTOM);
    let vals: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.train.total, r.val.total])
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let (mut lo, mut hi) = vals
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        lo = 1.0;
        hi = 10.0;
    }
    let (llo, mut lhi) = (lo.log10().floor(), hi.log10().ceil());
    if lhi <= llo {
        lhi = llo + 1.0;
    }
    let ymap = |v: f64| -> i64 {
        let f = (v.max(1e-30).log10() - llo) / (lhi - llo);
        y1 - (f * (y1 - y0) as f64).round() as i64
    };
    let n = rows.len().max(2);
    let xmap = |i: usize| -> i64 {
        x0 + ((i as f64) / ((n - 1) as f64) * (x1 - x0) as f64).round() as i64
    };

    // Grid and labels at every power of ten.
    let mut d = llo;
    while d <= lhi + 1e-9 {
        let y = ymap(10f64.powf(d));
        line(&mut img, x0, y, x1, y, GRID, 1);
        line(&mut img, x0 - 5, y, x0, y, AXIS, 1);
        let label = format!("{}", 10f64.powf(d));
        let label = if label.len() > 7 {
            format!("1e{}", d as i64)
        } else {
            label
        };
        text(
            &mut img,
            x0 - 8 - 8 * label.len() as i64,
            y - 5,
            &label,
            AXIS,
            2,
        );
        d += 1.0;
    }
    // Phase boundaries and epoch ticks.
    for i in 0..rows.len() {
        let x = xmap(i);
        line(&mut img, x, y1, x, y1 + 4, AXIS, 1);
        if i > 0 && rows[i].phase != rows[i - 1].phase {
            let xb = (xmap(i) + xmap(i - 1)) / 2;
            line(&mut img, xb, y0, xb, y1, PHASE, 1);
        }
    }
    if !rows.is_empty() {
        let label = format!("{}", rows.len());
        text(
            &mut img,
            x1 - 8 * label.len() as i64,
            y1 + 10,
            &label,
            AXIS,
            2,
        );
    }
    text(&mut img, x0, y1 + 10, "1", AXIS, 2);
    // Axes.
    line(&mut img, x0, y0, x0, y1, AXIS, 1);
    line(&mut img, x0, y1, x1, y1, AXIS, 1);
    // Curves.
    for (pick, colour) in [(0usize, TRAIN), (1usize, VAL)] {
        let pts: Vec<(i64, i64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let v = if pick == 0 {
                    r.train.total
                } else {
                    r.val.total
                };
                (v.is_finite() && v > 0.0).then(|| (xmap(i), ymap(v)))
            })
            .collect();
        for w in pts.windows(2) {
            line(&mut img, w[0].0, w[0].1, w[1].0, w[1].1, colour, 2);
        }
        for &(x, y) in &pts {
            dot(&mut img, x, y, colour, 2);
        }
    }
    // Legend swatches: train (blue) above val (red), top right.
    for (k, c) in [TRAIN, VAL].into_iter().enumerate() {
        let y = y0 + 8 + 12 * k as i64;
        line(&mut img, x1 - 40, y, x1 - 10, y, c, 3);
    }
    img
}

/// Renders and atomically writes the PNG.
pub fn write_png(path: &Path, rows: &[EpochRecord]) -> Result<()> {
    let img = render(rows);
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| TrainError::format(path, e.to_string()))?;
    atomic_write(path, &bytes)
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn dot(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>, r: i64) {
    for dy in -r..=r {
        for dx in -r..=r {
            put(img, x + dx, y + dy, c);
        }
    }
}

/// Bresenham line of width `t`.
fn line(img: &mut RgbImage, mut x0: i64, mut y0: i64, x1: i64, y1: i64, c: Rgb<u8>, t: i64) {
    let dx = (x1 - x0).abs();
    let dy = -(y1 - y0).abs();
    let sx = if x0 < x1 { 1 } else { -1 };
    let sy = if y0 < y1 { 1 } else { -1 };
    let mut err = dx + dy;
    loop {
        for o in 0..t {
            put(img, x0 + o * (dy != 0) as i64, y0 + o * (dy == 0) as i64, c);
        }
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
}

/// 3x5 glyphs for digits and `.`, `e`, `-`: each row is 3 bits, MSB left.
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        'e' => [0, 7, 7, 4, 7],
        '-' => [0, 0, 7, 0, 0],
        _ => [0; 5],
    }
}

/// Draws `s` with the 3x5 font scaled by `scale`, top-left at (x, y); 4*scale px per character.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>, scale: i64) {
    for (k, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            put(
                                img,
                                x + k as i64 * 4 * scale + col * scale + sx,
                                y + row as i64 * scale + sy,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LossStats;

    fn row(phase: &str, epoch: usize, t: f64, v: f64) -> EpochRecord {
        EpochRecord {
            phase: phase.into(),
            epoch,
            train: LossStats {
                total: t,
                ..Default::default()
            },
            val: LossStats {
                total: v,
                ..Default::default()
            },
            lr: 1e-3,
            images_per_sec: 1.0,
            seconds: 1.0,
            map: None,
        }
    }

    fn count(img: &RgbImage, c: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == c).count()
    }

    #[test]
    fn loss_png_draws_both_curves_and_falls_with_the_loss() {
        let rows = vec![
            row("bottleneck", 0, 1000.0, 900.0),
            row("bottleneck", 1, 100.0, 120.0),
            row("frozen", 0, 50.0, 60.0),
            row("frozen", 1, 20.0, 30.0),
        ];
        let img = render(&rows);
        assert_eq!(img.dimensions(), (W, H));
        assert!(count(&img, TRAIN) > 200);
        assert!(count(&img, VAL) > 200);
        assert!(count(&img, PHASE) > 100, "phase boundary line");
        // The first train point is higher (smaller y) than the last.
        let col_y = |x: i64| -> Option<u32> {
            (TOP as u32..(H - BOTTOM as u32)).find(|&y| *img.get_pixel(x as u32, y) == TRAIN)
        };
        let first = col_y(LEFT).unwrap();
        let last = col_y(W as i64 - RIGHT).unwrap();
        assert!(first < last, "{first} {last}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        write_png(&p, &rows).unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(back, img);
    }

    #[test]
    fn empty_and_non_finite_rows_do_not_panic() {
        let img = render(&[]);
        // Only the legend swatch (31 px long, 3 px wide) has the train colour.
        assert_eq!(count(&img, TRAIN), 93);
        let img = render(&[row("a", 0, f64::NAN, f64::INFINITY)]);
        assert_eq!(img.dimensions(), (W, H));
    }
}
