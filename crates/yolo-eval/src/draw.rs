//! Drawing detections on an image: one colour per class, a 2-3 px box and a filled label with the
//! class name and score, written with the embedded [`crate::font`].

use image::{Rgb, RgbImage};

use crate::detection::Detection;
use crate::font::{draw_text, fill_rect, text_size};

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
    let t = thickness as i64;
    fill_rect(image, x0, y0, x1 + 1, y0 + t, color); // top
    fill_rect(image, x0, y1 - t + 1, x1 + 1, y1 + 1, color); // bottom
    fill_rect(image, x0, y0, x0 + t, y1 + 1, color); // left
    fill_rect(image, x1 - t + 1, y0, x1 + 1, y1 + 1, color); // right
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

/// Draws every detection: its box (rounded and clipped to the image like keras-yolo3's
/// `detect_image`) in the class colour, and a filled label above the box (inside it when there is
/// no room above).
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection], class_names: &[String]) {
    let thickness = box_thickness(image);
    // Font pixels doubled from 400 px up, so labels stay readable on photos.
    let scale = if image.width().min(image.height()) >= 400 {
        2
    } else {
        1
    };
    let (w, h) = (image.width() as i64, image.height() as i64);
    for det in detections {
        let color = class_color(det.class);
        let x0 = (det.x_min.round() as i64).clamp(0, w - 1);
        let y0 = (det.y_min.round() as i64).clamp(0, h - 1);
        let x1 = (det.x_max.round() as i64).clamp(0, w - 1);
        let y1 = (det.y_max.round() as i64).clamp(0, h - 1);
        draw_box(image, x0, y0, x1, y1, color, thickness);

        let text = label_text(det, class_names);
        let (tw, th) = text_size(&text, scale);
        let pad = scale as i64;
        let (lw, lh) = (tw as i64 + 2 * pad, th as i64 + 2 * pad);
        let ly = if y0 - lh >= 0 { y0 - lh } else { y0 };
        let lx = x0.min((w - lw).max(0));
        fill_rect(image, lx, ly, lx + lw, ly + lh, color);
        draw_text(
            image,
            lx + pad,
            ly + pad,
            &text,
            text_color_on(color),
            scale,
        );
    }
}
