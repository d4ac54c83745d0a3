//! Drawing detections on an image: one colour per class, a 2-3 px box and a filled label with the
//! class name and score, written in DejaVu Sans ([`crate::font`]) through plotters' bitmap backend
//! on the image's own RGB buffer.

use image::{Rgb, RgbImage};
use plotters::backend::{BitMapBackend, DrawingBackend};
use plotters::style::RGBColor;

use crate::detection::Detection;
use crate::font::{text_size, text_style};

/// A distinct, saturated colour for `class`: hues spread by the golden ratio, so neighbouring class
/// ids get far-apart hues whatever the number of classes.
pub fn class_color(class: usize) -> Rgb<u8> {
    let hue = (class as f64 * 0.618_033_988_749_895).fract();
    hsv_to_rgb(hue, 0.85, 0.95)
}

/// HSV (all in `[0, 1]`) to 8-bit RGB.
fn hsv_to_rgb(h: f64, s: f64, v: f64) -> Rgb<u8> {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    let (r, g, b) = match i as i64 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    let c = |x: f64| (x * 255.0).round().clamp(0.0, 255.0) as u8;
    Rgb([c(r), c(g), c(b)])
}

/// Box line thickness for an image: 2 px, 3 px once `width + height >= 1000`.
pub fn box_thickness(image: &RgbImage) -> u32 {
    if image.width() + image.height() >= 1000 {
        3
    } else {
        2
    }
}

/// Label font size in pixels for an image: keras-yolo3's `floor(0.03 * height + 0.5)`, at least
/// 10 px so labels stay readable, so the label grows with the image instead of covering small ones.
pub fn label_font_size(image: &RgbImage) -> f64 {
    (0.03 * image.height() as f64 + 0.5).floor().max(10.0)
}

fn rgb(c: Rgb<u8>) -> RGBColor {
    RGBColor(c.0[0], c.0[1], c.0[2])
}

/// Fills the pixels `x0 <= x < x1`, `y0 <= y < y1` (clipped to the image).
fn fill(backend: &mut BitMapBackend<'_>, x0: i64, y0: i64, x1: i64, y1: i64, color: RGBColor) {
    let c = |v: i64| v.clamp(-1, i32::MAX as i64) as i32;
    if x1 > x0 && y1 > y0 {
        // The bitmap backend's fill never fails (it clips and writes to memory).
        let _ = backend.draw_rect((c(x0), c(y0)), (c(x1), c(y1)), &color, true);
    }
}

/// Draws the outline of the pixel rectangle `[x0, x1] x [y0, y1]` (inclusive), `thickness` px wide
/// and growing inwards, clipped to the image.
pub fn draw_box(
    image: &mut RgbImage,
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
    color: Rgb<u8>,
    thickness: u32,
) {
    let dims = image.dimensions();
    let mut backend = BitMapBackend::with_buffer(image, dims);
    outline(&mut backend, x0, y0, x1, y1, rgb(color), thickness);
}

fn outline(
    backend: &mut BitMapBackend<'_>,
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
    color: RGBColor,
    thickness: u32,
) {
    let t = thickness as i64;
    fill(backend, x0, y0, x1 + 1, y0 + t, color); // top
    fill(backend, x0, y1 - t + 1, x1 + 1, y1 + 1, color); // bottom
    fill(backend, x0, y0, x0 + t, y1 + 1, color); // left
    fill(backend, x1 - t + 1, y0, x1 + 1, y1 + 1, color); // right
}

/// The label text of a detection, as keras-yolo3 writes it: `"<class> 0.87"`.
pub fn label_text(det: &Detection, class_names: &[String]) -> String {
    let name = class_names
        .get(det.class)
        .cloned()
        .unwrap_or_else(|| format!("class_{}", det.class));
    format!("{name} {:.2}", det.score)
}

/// Black or white, whichever reads better on `bg`.
fn text_color_on(bg: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = bg.0;
    let luma = 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64;
    if luma > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

/// Top-left corner of the `lw x lh` label band of a box whose top-left corner is `(x0, y0)` on an
/// image `w` px wide: above the box, or inside it when there is no room above; shifted left to stay
/// inside the image.
fn label_rect(x0: i64, y0: i64, lw: i64, lh: i64, w: i64) -> (i64, i64) {
    let ly = if y0 - lh >= 0 { y0 - lh } else { y0 };
    let lx = x0.min((w - lw).max(0));
    (lx, ly)
}

/// Draws every detection: its box (rounded and clipped to the image like keras-yolo3's
/// `detect_image`) in the class colour, and a filled label above the box (inside it when there is
/// no room above) with the class name and score, the font sized by [`label_font_size`].
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection], class_names: &[String]) {
    if image.width() == 0 || image.height() == 0 {
        return;
    }
    let thickness = box_thickness(image);
    let size = label_font_size(image);
    let (w, h) = (image.width() as i64, image.height() as i64);
    let dims = image.dimensions();
    let mut backend = BitMapBackend::with_buffer(image, dims);
    for det in detections {
        let color = class_color(det.class);
        let x0 = (det.x_min.round() as i64).clamp(0, w - 1);
        let y0 = (det.y_min.round() as i64).clamp(0, h - 1);
        let x1 = (det.x_max.round() as i64).clamp(0, w - 1);
        let y1 = (det.y_max.round() as i64).clamp(0, h - 1);
        outline(&mut backend, x0, y0, x1, y1, rgb(color), thickness);

        let text = label_text(det, class_names);
        let (tw, _) = text_size(&text, size);
        let pad = (size / 6.0).round().max(1.0) as i64;
        let (lw, lh) = (tw as i64 + 2 * pad, size.round() as i64 + 2 * pad);
        let (lx, ly) = label_rect(x0, y0, lw, lh, w);
        fill(&mut backend, lx, ly, lx + lw, ly + lh, rgb(color));
        // plotters' ab_glyph renderer puts the baseline half a size below the anchor; DejaVu's
        // ascent is 0.8 of the size, so an anchor 0.3 size below the band's inner top puts the
        // ascent there and the descent at its inner bottom.
        let anchor = (lx + pad, ly + pad + (0.3 * size).round() as i64);
        let style = text_style(size, rgb(text_color_on(color)));
        let _ = backend.draw_text(&text, &style, (anchor.0 as i32, anchor.1 as i32));
    }
}
