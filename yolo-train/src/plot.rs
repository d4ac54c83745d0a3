//! The training-curve PNG (`loss.png`), drawn with plotters in DejaVu Sans
//! ([`yolo_eval::font`]): a top panel with train and validation loss per epoch on a log scale, a
//! bottom panel with validation mAP@0.5 on the epochs it was computed, a shared `epoch` axis,
//! legends, and grey vertical lines at the phase boundaries with the phase names above the plot.

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use yolo_eval::font::font;

use crate::atomic::atomic_write;
use crate::error::{Result, TrainError};
use crate::metrics::EpochRecord;

const W: u32 = 900;
const H: u32 = 640;
/// Height of the band above the panels holding the phase names.
const BAND: u32 = 28;
/// Height of the loss panel (the mAP panel takes the rest below it).
const LOSS_H: u32 = 380;
const Y_LABEL_AREA: u32 = 80;
/// Train loss colour.
pub const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
/// Validation loss colour.
pub const VAL: Rgb<u8> = Rgb([214, 39, 40]);
/// Validation mAP colour.
pub const MAP: Rgb<u8> = Rgb([44, 160, 44]);
/// Phase boundary colour.
pub const PHASE: Rgb<u8> = Rgb([150, 150, 150]);
const GRID: RGBColor = RGBColor(225, 225, 225);

fn rgb(c: Rgb<u8>) -> RGBColor {
    RGBColor(c.0[0], c.0[1], c.0[2])
}

/// Where things landed in the picture, for the tests.
#[derive(Debug, Default)]
struct Layout {
    /// Pixel of each finite train-loss point, in run order.
    train: Vec<(i32, i32)>,
    /// Pixel of each validation mAP point.
    map: Vec<(i32, i32)>,
    /// x pixel of each phase boundary.
    boundaries: Vec<i32>,
    /// Centre pixel of each phase name.
    phase_labels: Vec<(String, (i32, i32))>,
}

/// The phases of `rows` as `(name, first index, end index)`, in run order.
fn phase_spans(rows: &[EpochRecord]) -> Vec<(&str, usize, usize)> {
    let mut spans: Vec<(&str, usize, usize)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match spans.last_mut() {
            Some(last) if last.0 == r.phase => last.2 = i + 1,
            _ => spans.push((r.phase.as_str(), i, i + 1)),
        }
    }
    spans
}

/// Log-axis range: the finite positive losses with a little room above and below (1..10 when
/// there are none).
fn loss_range(rows: &[EpochRecord]) -> (f64, f64) {
    let (lo, hi) = rows
        .iter()
        .flat_map(|r| [r.train.total, r.val.total])
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    (lo / 1.15, hi * 1.15)
}

/// Loss tick values in `[lo, hi]`: the sparsest of powers of ten, 1-2-5 and 1-1.5-2-3-5-7 per
/// decade that gives at least four ticks (so a run whose loss stays within one decade still gets
/// a readable axis).
fn loss_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let sets: [&[f64]; 3] = [&[1.0], &[1.0, 2.0, 5.0], &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0]];
    let mut ticks = Vec::new();
    for set in sets {
        ticks.clear();
        let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        for d in d0..=d1 {
            for m in set {
                let v = m * 10f64.powi(d);
                if (lo..=hi).contains(&v) {
                    ticks.push(v);
                }
            }
        }
        if ticks.len() >= 4 {
            break;
        }
    }
    ticks
}

/// Epoch tick positions: about ten whole numbers from 1 to `n`.
fn epoch_ticks(n: usize) -> Vec<f64> {
    let step = n.div_ceil(10).max(1);
    (1..=n.max(1)).step_by(step).map(|e| e as f64).collect()
}

/// A plotters axis with the ticks given instead of the ones plotters would pick: whole epochs
/// on the linear epoch axis (so phase boundaries can still sit between epochs), round values on
/// the log loss axis.
#[derive(Clone)]
struct Ticked<R> {
    inner: R,
    ticks: Vec<f64>,
}

/// The epoch axis of `n` epochs, placed at `1..=n` with half an epoch of room on either side.
fn epoch_axis(n: usize) -> Ticked<RangedCoordf64> {
    Ticked {
        inner: (0.5..n.max(1) as f64 + 0.5).into(),
        ticks: epoch_ticks(n),
    }
}

/// The log-scale loss axis over `[lo, hi]`.
fn loss_axis(lo: f64, hi: f64) -> Ticked<LogCoord<f64>> {
    Ticked {
        inner: (lo..hi).log_scale().into(),
        ticks: loss_ticks(lo, hi),
    }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// A short tick label: `0.5`, `20`, `1e-4`.
fn tick(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e5).contains(&v.abs()) {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn draw(root: &DrawingArea<BitMapBackend<'_>, Shift>, rows: &[EpochRecord]) -> DrawResult<Layout> {
    let mut layout = Layout::default();
    root.fill(&WHITE)?;
    let (band, rest) = root.split_vertically(BAND);
    let (upper, lower) = rest.split_vertically(LOSS_H);
    let n = rows.len();
    let xs = epoch_axis(n);
    let spans = phase_spans(rows);
    // Boundary between epochs i and i + 1 (1-based) sits at x = i + 0.5.
    let bounds: Vec<f64> = spans.iter().skip(1).map(|s| s.1 as f64 + 0.5).collect();
    let (lo, hi) = loss_range(rows);

    // Loss panel.
    let mut loss = ChartBuilder::on(&upper)
        .margin_left(8)
        .margin_right(20)
        .margin_top(4)
        .x_label_area_size(30)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(xs.clone(), loss_axis(lo, hi))?;
    loss.configure_mesh()
        .y_desc("loss")
        .label_style(font(13.0))
        .axis_desc_style(font(15.0))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| tick(*v))
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .draw()?;
    let phase = rgb(PHASE);
    for &b in &bounds {
        loss.draw_series(LineSeries::new([(b, lo), (b, hi)], phase.stroke_width(2)))?;
        layout.boundaries.push(loss.backend_coord(&(b, hi)).0);
    }
    for (pick, colour, name) in [(0, TRAIN, "train loss"), (1, VAL, "val loss")] {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let v = if pick == 0 {
                    r.train.total
                } else {
                    r.val.total
                };
                (v.is_finite() && v > 0.0).then_some(((i + 1) as f64, v))
            })
            .collect();
        if pick == 0 {
            layout.train = pts.iter().map(|p| loss.backend_coord(p)).collect();
        }
        let c = rgb(colour);
        loss.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        loss.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    loss.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    // Phase names, centred over each phase in the band above the panels.
    for &(name, start, end) in &spans {
        let x0 = loss.backend_coord(&(start as f64 + 0.5, hi)).0;
        let x1 = loss.backend_coord(&(end as f64 + 0.5, hi)).0;
        let centre = ((x0 + x1) / 2, BAND as i32 / 2);
        let style = font(15.0)
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        band.draw(&Text::new(name.to_string(), centre, style))?;
        layout.phase_labels.push((name.to_string(), centre));
    }

    // mAP panel.
    let mut map = ChartBuilder::on(&lower)
        .margin_left(8)
        .margin_right(20)
        .margin_top(10)
        .margin_bottom(6)
        .x_label_area_size(45)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(xs, 0f64..1f64)?;
    map.configure_mesh()
        .x_desc("epoch")
        .y_desc("mAP@0.5")
        .y_labels(6)
        .label_style(font(13.0))
        .axis_desc_style(font(15.0))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| tick(*v))
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .draw()?;
    for &b in &bounds {
        map.draw_series(LineSeries::new([(b, 0.0), (b, 1.0)], phase.stroke_width(2)))?;
    }
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let m = r.map.filter(|m| m.is_finite())?;
            Some(((i + 1) as f64, m.clamp(0.0, 1.0)))
        })
        .collect();
    layout.map = pts.iter().map(|p| map.backend_coord(p)).collect();
    let c = rgb(MAP);
    map.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
        .label("val mAP@0.5")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
    map.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    if pts.is_empty() {
        let (x, y) = map.backend_coord(&(0.5 + n.max(1) as f64 / 2.0, 0.5));
        let style = font(14.0)
            .color(&RGBColor(120, 120, 120))
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new("no mAP computed yet", (x, y), style))?;
    }
    // mAP rises over a run, so the top left is where its legend is least in the way.
    map.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(layout)
}

fn render_with_layout(rows: &[EpochRecord]) -> (RgbImage, Layout) {
    let mut buf = vec![255u8; (W * H * 3) as usize];
    let layout = {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        // Drawing into memory with the embedded font cannot fail; if it ever did, an incomplete
        // plot beats stopping a training run over a picture.
        let drawn = draw(&root, rows);
        debug_assert!(drawn.is_ok(), "{:?}", drawn.as_ref().err());
        drawn.unwrap_or_default()
    };
    let img = RgbImage::from_raw(W, H, buf).unwrap_or_else(|| RgbImage::new(W, H));
    (img, layout)
}

/// Renders the curves of `rows` (in run order) into an image.
pub fn render(rows: &[EpochRecord]) -> RgbImage {
    render_with_layout(rows).0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LossStats;

    fn row(phase: &str, epoch: usize, t: f64, v: f64, map: Option<f64>) -> EpochRecord {
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
            map,
        }
    }

    fn count(img: &RgbImage, c: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == c).count()
    }

    /// Pixels darker than any grid or phase line (text, axes, curves' dark edges) in a rectangle.
    fn dark_in(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
        (y0..y1.min(img.height()))
            .flat_map(|y| (x0..x1.min(img.width())).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let [r, g, b] = img.get_pixel(x, y).0;
                (r as u32 + g as u32 + b as u32) < 3 * 100
            })
            .count()
    }

    fn three_phases() -> Vec<EpochRecord> {
        vec![
            row("bottleneck", 0, 1000.0, 900.0, None),
            row("bottleneck", 1, 300.0, 350.0, None),
            row("bottleneck", 2, 100.0, 120.0, Some(0.05)),
            row("frozen", 3, 80.0, 90.0, None),
            row("frozen", 4, 50.0, 60.0, Some(0.2)),
            row("unfreeze", 5, 40.0, 55.0, None),
            row("unfreeze", 6, 30.0, 45.0, None),
            row("unfreeze", 7, 20.0, 30.0, Some(0.45)),
        ]
    }

    #[test]
    fn loss_png_has_curves_map_phase_lines_and_text() {
        let rows = three_phases();
        let (img, layout) = render_with_layout(&rows);
        assert_eq!(img.dimensions(), (W, H));
        assert!(count(&img, TRAIN) > 200, "train curve");
        assert!(count(&img, VAL) > 200, "val curve");
        assert!(count(&img, MAP) > 50, "mAP curve");
        // The loss falls: the first train point is higher (smaller y) than the last.
        assert_eq!(layout.train.len(), 8);
        let (first, last) = (layout.train[0], layout.train[7]);
        assert!(first.1 < last.1, "{first:?} {last:?}");
        assert!(first.0 < last.0);
        assert_eq!(*img.get_pixel(first.0 as u32, first.1 as u32), TRAIN);
        // mAP rises over the three points where it was computed.
        assert_eq!(layout.map.len(), 3);
        assert!(layout.map[0].1 > layout.map[2].1);
        // Two boundaries, each a grey vertical line through both panels.
        assert_eq!(layout.boundaries.len(), 2);
        for &x in &layout.boundaries {
            let grey = (0..H)
                .filter(|&y| *img.get_pixel(x as u32, y) == PHASE)
                .count();
            assert!(grey > 300, "boundary at x {x}: {grey} grey pixels");
        }
        // The phase names are written (dark text pixels) centred over each phase, left to right.
        let names: Vec<&str> = layout.phase_labels.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(names, ["bottleneck", "frozen", "unfreeze"]);
        for (name, (x, y)) in &layout.phase_labels {
            let (x, y) = (*x as u32, *y as u32);
            let dark = dark_in(&img, x - 25, y.saturating_sub(10), x + 25, y + 10);
            assert!(dark > 20, "phase name {name}: {dark} dark pixels");
        }
        assert!(layout.phase_labels[0].1 .0 < layout.phase_labels[1].1 .0);
        assert!(layout.phase_labels[1].1 .0 < layout.phase_labels[2].1 .0);
        // Legend text in the top right corner of the loss panel, axis titles on the left and below.
        assert!(
            dark_in(&img, W - 200, BAND, W - 20, BAND + 70) > 60,
            "legend"
        );
        assert!(
            dark_in(&img, 0, BAND, 25, BAND + LOSS_H) > 10,
            "\"loss\" title"
        );
        assert!(
            dark_in(&img, 0, BAND + LOSS_H, 25, H) > 10,
            "\"mAP@0.5\" title"
        );
        assert!(
            dark_in(&img, W / 2 - 60, H - 30, W / 2 + 60, H) > 10,
            "\"epoch\" title"
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        write_png(&p, &rows).unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(back, img);
        // A copy to look at: PLOT_SAMPLE_DIR=/tmp cargo test -p yolo-train --lib plot
        if let Some(d) = std::env::var_os("PLOT_SAMPLE_DIR") {
            write_png(&Path::new(&d).join("loss.png"), &rows).unwrap();
        }
    }

    #[test]
    fn empty_and_non_finite_rows_do_not_panic() {
        let (img, layout) = render_with_layout(&[]);
        assert_eq!(img.dimensions(), (W, H));
        assert!(layout.train.is_empty() && layout.boundaries.is_empty());
        // The legend swatches are drawn even with no data; no curve otherwise.
        assert!(count(&img, TRAIN) > 0 && count(&img, TRAIN) < 200);
        let (img, layout) = render_with_layout(&[row("a", 0, f64::NAN, f64::INFINITY, None)]);
        assert_eq!(img.dimensions(), (W, H));
        assert!(layout.train.is_empty());
        assert_eq!(layout.phase_labels.len(), 1);
    }

    #[test]
    fn long_four_phase_run_labels_every_phase_and_keeps_the_map_points() {
        let mut rows = Vec::new();
        for (phase, n) in [
            ("scratch", 3),
            ("bottleneck", 20),
            ("frozen", 15),
            ("unfreeze", 22),
        ] {
            for e in 0..n {
                let k = rows.len() as f64;
                let map = (e + 1 == n || e % 5 == 4).then_some((k / 70.0).min(0.9));
                rows.push(row(
                    phase,
                    e,
                    2000.0 / (1.0 + k),
                    2400.0 / (1.0 + 0.8 * k),
                    map,
                ));
            }
        }
        let (img, layout) = render_with_layout(&rows);
        assert_eq!(img.dimensions(), (W, H));
        assert_eq!(layout.train.len(), 60);
        assert_eq!(layout.boundaries.len(), 3);
        assert_eq!(layout.phase_labels.len(), 4);
        assert_eq!(
            layout.map.len(),
            rows.iter().filter(|r| r.map.is_some()).count()
        );
        // Phase names are centred over their phases: the short first one left of the first line.
        assert!(layout.phase_labels[0].1 .0 < layout.boundaries[0]);
        for w in layout.boundaries.windows(2) {
            assert!(w[0] < w[1]);
        }
        if let Some(d) = std::env::var_os("PLOT_SAMPLE_DIR") {
            write_png(&Path::new(&d).join("loss_long.png"), &rows).unwrap();
        }
    }

    #[test]
    fn ticks_are_whole_epochs_and_short_labels() {
        assert_eq!(epoch_ticks(0), [1.0]);
        assert_eq!(epoch_ticks(4), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            epoch_ticks(25),
            [1.0, 4.0, 7.0, 10.0, 13.0, 16.0, 19.0, 22.0, 25.0]
        );
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(1e-4), "1e-4");
        assert_eq!(tick(0.0), "0");
        assert_eq!(loss_range(&[]), (1.0, 10.0));
        assert_eq!(loss_ticks(1.0, 10.0), [1.0, 2.0, 5.0, 10.0]);
        assert_eq!(
            loss_ticks(8.0, 1200.0),
            [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert_eq!(
            loss_ticks(0.9, 20000.0),
            [1.0, 10.0, 100.0, 1000.0, 10000.0]
        );
        assert_eq!(loss_ticks(26.0, 52.0), [30.0, 50.0]);
        let rows = three_phases();
        let spans = phase_spans(&rows);
        assert_eq!(
            spans,
            [("bottleneck", 0, 3), ("frozen", 3, 5), ("unfreeze", 5, 8)]
        );
    }
}
