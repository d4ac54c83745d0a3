//! Precision-recall curves as small PNG plots drawn with plotters in DejaVu Sans: a grid, axis
//! titles, the raw curve, its interpolated (monotone) envelope, a legend, and a title with the
//! class and AP.

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::error::{EvalError, Result};
use crate::font::font;

/// Plot width in pixels.
pub const PLOT_W: u32 = 480;
/// Plot height in pixels.
pub const PLOT_H: u32 = 360;

/// Colour of the raw precision-recall points.
pub const CURVE: Rgb<u8> = Rgb([30, 90, 200]);
/// Colour of the interpolated envelope.
pub const ENVELOPE: Rgb<u8> = Rgb([220, 60, 40]);

fn rgb(c: Rgb<u8>) -> RGBColor {
    RGBColor(c.0[0], c.0[1], c.0[2])
}

/// The interpolated envelope of `precision` drawn as steps: precision made non-increasing from
/// the right, held constant until the next recall value.
fn envelope_steps(recall: &[f64], precision: &[f64]) -> Vec<(f64, f64)> {
    let mut env = precision.to_vec();
    for i in (1..env.len()).rev() {
        env[i - 1] = env[i - 1].max(env[i]);
    }
    let mut pts = Vec::with_capacity(2 * env.len() + 1);
    let mut prev = match env.first() {
        Some(&p) => (0.0, p),
        None => return pts,
    };
    pts.push(prev);
    for (&r, &p) in recall.iter().zip(&env) {
        pts.push((r, prev.1));
        pts.push((r, p));
        prev = (r, p);
    }
    pts
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn plot(buf: &mut [u8], recall: &[f64], precision: &[f64], title: &str) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, (PLOT_W, PLOT_H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, font(18.0))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1.05f64)?;
    chart
        .configure_mesh()
        .x_desc("recall")
        .y_desc("precision")
        .x_labels(11)
        .y_labels(11)
        .label_style(font(12.0))
        .axis_desc_style(font(14.0))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    let clamp = |v: f64| v.clamp(0.0, 1.0);
    let pts: Vec<(f64, f64)> = recall
        .iter()
        .zip(precision)
        .map(|(&r, &p)| (clamp(r), clamp(p)))
        .collect();
    let (r, p): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
    let env = rgb(ENVELOPE);
    chart
        .draw_series(LineSeries::new(envelope_steps(&r, &p), env.stroke_width(2)))?
        .label("interpolated")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], env.stroke_width(2)));
    let curve = rgb(CURVE);
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), curve))?
        .label("precision")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], curve.stroke_width(2)));
    chart.draw_series(pts.iter().map(|&q| Circle::new(q, 2, curve.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(font(13.0))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Renders the curve of one class. `recall` and `precision` are the per-detection arrays of
/// [`crate::VocClassResult`] (ranked order); `title` is printed on top (e.g. `"raccoon AP 0.812"`).
pub fn draw_pr_curve(recall: &[f64], precision: &[f64], title: &str) -> RgbImage {
    let mut buf = vec![255u8; (PLOT_W * PLOT_H * 3) as usize];
    let n = recall.len().min(precision.len());
    // Drawing into memory with the embedded font cannot fail; a failure would only leave the
    // plot incomplete, which is better than aborting an evaluation over a picture.
    let drawn = plot(&mut buf, &recall[..n], &precision[..n], title);
    debug_assert!(drawn.is_ok(), "{drawn:?}");
    RgbImage::from_raw(PLOT_W, PLOT_H, buf).unwrap_or_else(|| RgbImage::new(PLOT_W, PLOT_H))
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
