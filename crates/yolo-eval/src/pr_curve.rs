//! Precision-recall curves as small PNG plots drawn pixel by pixel: axes with ticks at 0, 0.5 and
//! 1, the raw curve, its interpolated (monotone) envelope, and a title with the class and AP.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{EvalError, Result};
use crate::font::{draw_text, fill_rect, text_size};

/// Plot width in pixels.
pub const PLOT_W: u32 = 480;
/// Plot height in pixels.
pub const PLOT_H: u32 = 360;
const LEFT: i64 = 44;
const RIGHT: i64 = 16;
const TOP: i64 = 30;
const BOTTOM: i64 = 34;

const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([200, 200, 200]);
/// Colour of the raw precision-recall points.
pub const CURVE: Rgb<u8> = Rgb([30, 90, 200]);
/// Colour of the interpolated envelope.
pub const ENVELOPE: Rgb<u8> = Rgb([220, 60, 40]);

/// Draws a 1 px line from `(x0, y0)` to `(x1, y1)` (Bresenham), clipped to the image.
pub fn draw_line(image: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        fill_rect(image, x, y, x + 1, y + 1, color);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Pixel of the plot point `(recall, precision)` in `[0, 1]^2`.
pub fn to_pixel(recall: f64, precision: f64) -> (i64, i64) {
    let pw = (PLOT_W as i64 - LEFT - RIGHT) as f64;
    let ph = (PLOT_H as i64 - TOP - BOTTOM) as f64;
    let x = LEFT + (recall.clamp(0.0, 1.0) * pw).round() as i64;
    let y = TOP + ((1.0 - precision.clamp(0.0, 1.0)) * ph).round() as i64;
    (x, y)
}

/// Renders the curve of one class. `recall` and `precision` are the per-detection arrays of
/// [`crate::VocClassResult`] (ranked order); `title` is printed on top (e.g. `"raccoon AP 0.812"`).
pub fn draw_pr_curve(recall: &[f64], precision: &[f64], title: &str) -> RgbImage {
    let mut img = RgbImage::from_pixel(PLOT_W, PLOT_H, Rgb([255, 255, 255]));
    // Grid and axes.
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        let (x, y0) = to_pixel(v, 0.0);
        let (_, y1) = to_pixel(v, 1.0);
        draw_line(&mut img, x, y0, x, y1, GREY);
        let (x0, y) = to_pixel(0.0, v);
        let (x1, _) = to_pixel(1.0, v);
        draw_line(&mut img, x0, y, x1, y, GREY);
    }
    let (ox, oy) = to_pixel(0.0, 0.0);
    let (ex, _) = to_pixel(1.0, 0.0);
    let (_, ty) = to_pixel(0.0, 1.0);
    draw_line(&mut img, ox, oy, ex, oy, BLACK);
    draw_line(&mut img, ox, oy, ox, ty, BLACK);
    for (v, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
        let (x, _) = to_pixel(v, 0.0);
        let (tw, _) = text_size(label, 1);
        draw_line(&mut img, x, oy, x, oy + 4, BLACK);
        draw_text(&mut img, x - tw as i64 / 2, oy + 7, label, BLACK, 1);
        let (_, y) = to_pixel(0.0, v);
        draw_line(&mut img, ox - 4, y, ox, y, BLACK);
        draw_text(&mut img, ox - 8 - tw as i64, y - 3, label, BLACK, 1);
    }
    let (tw, _) = text_size("recall", 1);
    draw_text(
        &mut img,
        (ox + ex) / 2 - tw as i64 / 2,
        oy + 20,
        "recall",
        BLACK,
        1,
    );
    draw_text(&mut img, 4, TOP - 14, "precision", BLACK, 1);
    draw_text(&mut img, LEFT + 60, 6, title, BLACK, 2);

    let n = recall.len().min(precision.len());
    if n > 0 {
        // Interpolated envelope: precision made non-increasing from the right, drawn as steps.
        let mut env: Vec<f64> = precision[..n].to_vec();
        for i in (1..n).rev() {
            env[i - 1] = env[i - 1].max(env[i]);
        }
        let mut prev = to_pixel(0.0, env[0]);
        for i in 0..n {
            let p = to_pixel(recall[i], env[i]);
            draw_line(&mut img, prev.0, prev.1, p.0, prev.1, ENVELOPE);
            draw_line(&mut img, p.0, prev.1, p.0, p.1, ENVELOPE);
            prev = p;
        }
        let mut prev = to_pixel(recall[0], precision[0]);
        for i in 1..n {
            let p = to_pixel(recall[i], precision[i]);
            draw_line(&mut img, prev.0, prev.1, p.0, p.1, CURVE);
            prev = p;
        }
        for i in 0..n {
            let (x, y) = to_pixel(recall[i], precision[i]);
            fill_rect(&mut img, x - 1, y - 1, x + 2, y + 2, CURVE);
        }
    }
    img
}

/// Saves an image as PNG, naming the file in errors.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| EvalError::Image {
            path: path.to_path_buf(),
            source,
        })
}
