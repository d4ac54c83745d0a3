//! Drawing detections and PR curves: box edges get the class colour at the right pixels.

use image::{Rgb, RgbImage};
use yolo_eval::{class_color, draw_detections, draw_pr_curve, label_text, Detection};

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
fn pr_curve_plot_has_axes_and_curve_pixels() {
    let img = draw_pr_curve(&[0.5, 0.5, 1.0], &[1.0, 0.5, 2.0 / 3.0], "a AP 0.83");
    assert_eq!(
        img.dimensions(),
        (yolo_eval::pr_curve::PLOT_W, yolo_eval::pr_curve::PLOT_H)
    );
    let (x, y) = yolo_eval::pr_curve::to_pixel(0.5, 1.0);
    assert_eq!(
        *img.get_pixel(x as u32, y as u32),
        yolo_eval::pr_curve::CURVE
    );
    let (ox, oy) = yolo_eval::pr_curve::to_pixel(0.0, 0.0);
    assert_eq!(*img.get_pixel(ox as u32 + 50, oy as u32), Rgb([0, 0, 0]));
}
