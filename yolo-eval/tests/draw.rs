//! Drawing detections and PR curves: box edges get the class colour at the right pixels, labels
//! and plot texts are really written (in the embedded font) where they belong.

use image::{Rgb, RgbImage};
use yolo_eval::draw::label_font_size;
use yolo_eval::pr_curve::{CURVE, ENVELOPE, PLOT_H, PLOT_W};
use yolo_eval::{class_color, draw_detections, draw_pr_curve, label_text, Detection};

/// Pixels in `[x0, x1) x [y0, y1)` that are not `bg`.
fn not_bg(img: &RgbImage, bg: Rgb<u8>, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    (y0..y1.min(img.height()))
        .flat_map(|y| (x0..x1.min(img.width())).map(move |x| (x, y)))
        .filter(|&(x, y)| *img.get_pixel(x, y) != bg)
        .count()
}

/// Pixels darker than mid-grey in `[x0, x1) x [y0, y1)`.
fn dark(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    (y0..y1.min(img.height()))
        .flat_map(|y| (x0..x1.min(img.width())).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0.iter().map(|&c| c as u32).sum::<u32>() < 300)
        .count()
}

#[test]
fn box_edges_have_the_class_colour_and_the_inside_is_untouched() {
    let mut img = RgbImage::from_pixel(200, 150, Rgb([0, 0, 0]));
    let det = Detection {
        class: 1,
        score: 0.87,
        y_min: 60.0,
        x_min: 40.0,
        y_max: 120.0,
        x_max: 150.0,
    };
    draw_detections(&mut img, &[det], &["cat".into(), "dog".into()]);
    let c = class_color(1);
    assert_ne!(c, class_color(0));
    // 2 px thick (image is small), growing inwards.
    for (x, y) in [
        (40, 90),
        (41, 90),
        (150, 90),
        (149, 90),
        (95, 120),
        (95, 119),
        (40, 120),
        (150, 120),
    ] {
        assert_eq!(*img.get_pixel(x, y), c, "edge pixel ({x}, {y})");
    }
    for (x, y) in [
        (42, 90),
        (148, 90),
        (95, 118),
        (95, 100),
        (39, 90),
        (151, 90),
        (95, 121),
    ] {
        assert_eq!(
            *img.get_pixel(x, y),
            Rgb([0, 0, 0]),
            "pixel ({x}, {y}) must stay black"
        );
    }
    // Label sits above the box: a filled band in the class colour with text in it.
    assert_eq!(label_text(&det, &["cat".into(), "dog".into()]), "dog 0.87");
    assert_eq!(*img.get_pixel(40, 59), c);
    let band: Vec<Rgb<u8>> = (40..100)
        .flat_map(|x| (51..60).map(move |y| (x, y)))
        .map(|(x, y)| *img.get_pixel(x, y))
        .collect();
    assert!(band.iter().any(|p| *p != c), "label text pixels");
}

#[test]
fn boxes_outside_the_image_are_clipped_not_panicking() {
    let mut img = RgbImage::new(32, 32);
    let det = Detection {
        class: 0,
        score: 0.5,
        y_min: -10.0,
        x_min: -5.0,
        y_max: 50.0,
        x_max: 40.0,
    };
    draw_detections(&mut img, &[det], &[]);
    assert_eq!(*img.get_pixel(0, 16), class_color(0));
    assert_eq!(*img.get_pixel(31, 16), class_color(0));
}

#[test]
fn label_text_stays_inside_its_band_and_the_font_scales_with_the_image() {
    let black = Rgb([0, 0, 0]);
    let mut img = RgbImage::from_pixel(400, 300, black);
    let det = Detection {
        class: 2,
        score: 0.5,
        y_min: 100.0,
        x_min: 100.0,
        y_max: 200.0,
        x_max: 300.0,
    };
    draw_detections(
        &mut img,
        &[det],
        &["a".into(), "b".into(), "triangle".into()],
    );
    // 300 px high: keras-yolo3's floor(0.03 * 300 + 0.5) = 9, raised to the 10 px minimum.
    assert_eq!(label_font_size(&img), 10.0);
    assert_eq!(label_font_size(&RgbImage::new(10, 1000)), 30.0);
    // Band: 2 px padding around a 10 px line, right above the box.
    let (band_top, band_bottom) = (100 - 14, 100);
    let c = class_color(2);
    let mut text_px = 0;
    for (x, y, p) in img.enumerate_pixels() {
        let in_band = (band_top..band_bottom).contains(&y) && (100..200).contains(&x);
        let on_box = (100..=300).contains(&x)
            && (100..=200).contains(&y)
            && !((102..=298).contains(&x) && (102..=198).contains(&y));
        if *p != black {
            assert!(in_band || on_box, "stray pixel ({x}, {y}) = {p:?}");
        }
        if in_band && *p != c {
            text_px += 1;
        }
    }
    assert!(
        text_px > 40,
        "\"triangle 0.50\" drawn: {text_px} text pixels"
    );
    // The band is only as wide as the text: it ends well before the box's right edge.
    assert_eq!(*img.get_pixel(250, band_top + 1), black);
}

#[test]
fn pr_curve_plot_has_curves_legend_and_axis_titles() {
    let img = draw_pr_curve(&[0.5, 0.5, 1.0], &[1.0, 0.5, 2.0 / 3.0], "a AP 0.83");
    assert_eq!(img.dimensions(), (PLOT_W, PLOT_H));
    let count = |c: Rgb<u8>| img.pixels().filter(|p| **p == c).count();
    assert!(count(CURVE) > 100, "raw curve");
    assert!(count(ENVELOPE) > 100, "envelope");
    // The raw curve reaches precision 1 at recall 0.5: its highest pixel is in the top part of the
    // plot, around the horizontal middle.
    let (x, y) = img
        .enumerate_pixels()
        .filter(|(_, _, p)| **p == CURVE)
        .map(|(x, y, _)| (x, y))
        .min_by_key(|&(_, y)| y)
        .unwrap();
    assert!(y < PLOT_H / 4, "top of curve at y {y}");
    assert!(
        (PLOT_W / 3..2 * PLOT_W / 3).contains(&x),
        "top of curve at x {x}"
    );
    // Title on top, "recall" below the x axis, "precision" left of the y axis, legend text.
    assert!(dark(&img, 0, 0, PLOT_W, 30) > 40, "title");
    assert!(
        dark(&img, PLOT_W / 2 - 60, PLOT_H - 25, PLOT_W / 2 + 60, PLOT_H) > 20,
        "recall"
    );
    assert!(
        dark(&img, 0, PLOT_H / 4, 25, 3 * PLOT_H / 4) > 20,
        "precision"
    );
    let white = Rgb([255, 255, 255]);
    assert!(not_bg(&img, white, 0, 0, PLOT_W, PLOT_H) > 2000);
    // An empty curve still draws the frame and the title.
    let empty = draw_pr_curve(&[], &[], "b AP 0.00");
    assert!(dark(&empty, 0, 0, PLOT_W, 30) > 40);
    yolo_eval::save_png(
        &img,
        &std::env::temp_dir().join("yolo_eval_pr_curve_test.png"),
    )
    .unwrap();
}
