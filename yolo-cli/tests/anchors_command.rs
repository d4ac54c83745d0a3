//! `yolo anchors` run as the built binary: boxes letterboxed to the network input by default,
//! original pixels with `--original`, anchors sorted by area in the `--anchors` file format, the
//! average IoU, and errors naming the annotation file and line.

mod common;

use common::{s, yolo};
use std::path::{Path, PathBuf};

use yolo_testutil::shared_path;

fn ok(args: &[&str]) -> String {
    let out = yolo(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "yolo {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fails(args: &[&str]) -> String {
    let out = yolo(args);
    assert!(!out.status.success(), "yolo {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The text after `prefix` on the first stdout line that starts with it.
fn field<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in\n{stdout}"))
}

/// The printed average IoU as a fraction.
fn printed_iou(stdout: &str) -> f64 {
    let v = field(stdout, "average IoU: ");
    v.strip_suffix('%')
        .unwrap_or_else(|| panic!("`{v}` lacks %"))
        .parse::<f64>()
        .unwrap()
        / 100.0
}

/// A grey PNG of `w` x `h` at `dir/name`.
fn png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let p = dir.join(name);
    image::RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]))
        .save(&p)
        .unwrap();
    p
}

#[test]
fn one_box_letterboxed_at_416_608_and_in_original_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let img = png(dir.path(), "wide.png", 800, 400);
    let ann = dir.path().join("train.txt");
    std::fs::write(&ann, format!("{} 0,0,400,200,0\n", s(&img))).unwrap();
    let out_file = dir.path().join("anchors.txt");

    // 800x400 into 416x416: scale min(416/800, 416/400) = 0.52, so 400x200 becomes 208x104.
    let out = ok(&["anchors", s(&ann), "--k", "1", "--out", s(&out_file)]);
    assert_eq!(field(&out, "anchors: "), "208,104", "{out}");
    assert!(
        out.lines()
            .any(|l| l == "clustered in the 416x416 letterboxed input space"),
        "{out}"
    );
    assert_eq!(field(&out, "1 boxes, k = "), "1, seed 0");
    assert_eq!(printed_iou(&out), 1.0);
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "208,104\n");

    // 608: scale 0.76.
    let out = ok(&[
        "anchors",
        s(&ann),
        "-k",
        "1",
        "--input-size",
        "608",
        "--out",
        s(&out_file),
    ]);
    assert_eq!(field(&out, "anchors: "), "304,152", "{out}");
    assert!(
        out.lines()
            .any(|l| l == "clustered in the 608x608 letterboxed input space"),
        "{out}"
    );

    // --original: kmeans.py's pixels, no image read (the image may even be gone).
    std::fs::remove_file(&img).unwrap();
    let out = ok(&[
        "anchors",
        s(&ann),
        "--k",
        "1",
        "--original",
        "--out",
        s(&out_file),
    ]);
    assert_eq!(field(&out, "anchors: "), "400,200", "{out}");
    assert!(
        out.lines()
            .any(|l| l == "clustered in original image pixels (--original)"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "400,200\n");
}

#[test]
fn two_images_of_different_shapes_sorted_by_area() {
    let dir = tempfile::tempdir().unwrap();
    let wide = png(dir.path(), "wide.png", 800, 400);
    let tall = png(dir.path(), "tall.png", 400, 800);
    let ann = dir.path().join("train.txt");
    // The same picture listed twice shares one header read each time; a line without boxes adds
    // nothing.
    std::fs::write(
        &ann,
        format!(
            "{w} 0,0,400,200,0\n{t} 0,0,100,400,1\n{t}\n{w} 0,0,400,200,0\n",
            w = s(&wide),
            t = s(&tall)
        ),
    )
    .unwrap();
    let out_file = dir.path().join("anchors.txt");
    // Letterboxed: 400x200 on the wide image -> 208x104 (area 21632); 100x400 on the tall one
    // (scale 0.52 too) -> 52x208 (area 10816): the smaller area comes first.
    let out = ok(&["anchors", s(&ann), "-k", "2", "--out", s(&out_file)]);
    assert_eq!(field(&out, "anchors: "), "52,208,  208,104", "{out}");
    assert_eq!(field(&out, "3 boxes, k = "), "2, seed 0");
    assert_eq!(printed_iou(&out), 1.0);
    // 320x416 (height x width): scale min(416/800, 320/400) = 0.52 on the wide image and
    // min(416/400, 320/800) = 0.4 on the tall one.
    let out = ok(&[
        "anchors",
        s(&ann),
        "-k",
        "2",
        "--input-size",
        "320x416",
        "--out",
        s(&out_file),
    ]);
    assert_eq!(field(&out, "anchors: "), "40,160,  208,104", "{out}");
    assert!(
        out.lines()
            .any(|l| l == "clustered in the 320x416 (height x width) letterboxed input space"),
        "{out}"
    );
    let out = ok(&[
        "anchors",
        s(&ann),
        "-k",
        "2",
        "--original",
        "--out",
        s(&out_file),
    ]);
    assert_eq!(field(&out, "anchors: "), "100,400,  400,200", "{out}");
}

#[test]
fn errors_name_annotation_file_line_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let good = png(dir.path(), "good.png", 64, 48);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let missing = dir.path().join("missing.jpg");
    let out_file = dir.path().join("anchors.txt");
    let ann = dir.path().join("train.txt");

    std::fs::write(
        &ann,
        format!("{} 1,1,30,30,0\n\n{} 2,2,20,20,0\n", s(&good), s(&missing)),
    )
    .unwrap();
    let e = fails(&["anchors", s(&ann), "-k", "1", "--out", s(&out_file)]);
    assert!(
        e.contains(&format!("{}:3: {}: ", ann.display(), missing.display())),
        "{e}"
    );
    assert!(!out_file.exists(), "nothing written on error");
    // --original reads no image, so the same file clusters.
    let out = ok(&[
        "anchors",
        s(&ann),
        "-k",
        "1",
        "--original",
        "--out",
        s(&out_file),
    ]);
    assert_eq!(field(&out, "2 boxes, k = "), "1, seed 0");
    std::fs::remove_file(&out_file).unwrap();

    std::fs::write(&ann, format!("{} 1,1,30,30,0\n", s(&cut))).unwrap();
    let e = fails(&["anchors", s(&ann), "-k", "1", "--out", s(&out_file)]);
    assert!(
        e.contains(&format!(
            "{}:1: {}: image is truncated",
            ann.display(),
            cut.display()
        )),
        "{e}"
    );

    // No boxes at all: a clear error, with or without --original.
    std::fs::write(&ann, format!("{}\n{}\n", s(&good), s(&good))).unwrap();
    for extra in [None, Some("--original")] {
        let mut args = vec!["anchors", s(&ann), "--out", s(&out_file)];
        args.extend(extra);
        let e = fails(&args);
        assert!(
            e.contains(&format!(
                "{}: no boxes to cluster (2 image lines, none with a box)",
                ann.display()
            )),
            "{e}"
        );
    }
    std::fs::write(&ann, "").unwrap();
    let e = fails(&["anchors", s(&ann), "--out", s(&out_file)]);
    assert!(e.contains("no boxes to cluster (0 image lines"), "{e}");

    // More clusters than boxes, a bad size and contradictory options.
    std::fs::write(&ann, format!("{} 1,1,30,30,0\n", s(&good))).unwrap();
    let e = fails(&["anchors", s(&ann), "--out", s(&out_file)]);
    assert!(
        e.contains("k-means: cannot make 9 clusters from 1 boxes"),
        "{e}"
    );
    let e = fails(&["anchors", s(&ann), "--input-size", "400"]);
    assert!(
        e.contains("--input-size `400`: 400 is not a positive multiple of 32"),
        "{e}"
    );
    let e = fails(&["anchors", s(&ann), "--input-size", "416", "--original"]);
    assert!(e.contains("cannot be used with"), "{e}");
    assert!(!out_file.exists());
}

#[test]
#[cfg_attr(
    shared_missing = "datasets/raccoon",
    ignore = "needs shared/datasets/raccoon (absent)"
)]
fn raccoon_k9_letterboxed_anchors_fit_the_input_and_parse() {
    let Some(root) = shared_path("datasets/raccoon") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = yolo_data::convert_voc(&root, &yolo_data::VocOptions::default()).unwrap();
    let ann = dir.path().join("raccoon.txt");
    yolo_data::write_annotations(&ann, &d.annotations).unwrap();
    let out_file = dir.path().join("anchors.txt");

    let out = ok(&["anchors", s(&ann), "--k", "9", "--out", s(&out_file)]);
    println!("{out}");
    assert_eq!(field(&out, "217 boxes, k = "), "9, seed 0", "{out}");
    assert!(
        out.lines()
            .any(|l| l == "clustered in the 416x416 letterboxed input space"),
        "{out}"
    );
    let line = field(&out, "anchors: ");
    let printed = yolo_data::parse_anchors(line, Path::new("stdout")).unwrap();
    assert_eq!(yolo_data::read_anchors(&out_file).unwrap(), printed);
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        format!("{line}\n")
    );
    assert_eq!(printed.wh.len(), 9);
    for [w, h] in &printed.wh {
        assert!(
            *w >= 1.0 && *w <= 416.0 && *h >= 1.0 && *h <= 416.0,
            "{line}"
        );
    }
    let areas: Vec<f32> = printed.wh.iter().map(|[w, h]| w * h).collect();
    assert!(areas.windows(2).all(|p| p[0] <= p[1]), "by area: {line}");

    // The printed IoU is the mean best IoU of the letterboxed boxes with these anchors.
    let iou = printed_iou(&out);
    assert!(iou > 0.0 && iou <= 1.0, "{iou}");
    let sizes = yolo_data::image_sizes(&d.annotations, &ann).unwrap();
    let boxes = yolo_data::letterboxed_box_wh(&d.annotations, &sizes, (416, 416));
    assert_eq!(boxes.len(), 217);
    let clusters: Vec<[i64; 2]> = printed
        .wh
        .iter()
        .map(|&[w, h]| [w as i64, h as i64])
        .collect();
    let want = yolo_data::avg_iou(&boxes, &clusters);
    assert!(
        (iou - want).abs() <= 0.00005,
        "printed {iou}, recomputed {want}"
    );
    // At least the best of keras-yolo3's five kmeans.py runs on the same letterboxed boxes
    // (84.44 %, shared/fixtures/keras-yolo3/kmeans/kmeans_raccoon.json); seed 0 gives 84.65 %.
    assert!(iou >= 0.8444, "{iou}");

    // --original: the pixel anchors of kmeans.py, the largest well beyond a 416 input.
    let out = ok(&[
        "anchors",
        s(&ann),
        "--k",
        "9",
        "--original",
        "--out",
        s(&out_file),
    ]);
    println!("{out}");
    let orig = yolo_data::read_anchors(&out_file).unwrap();
    let largest = orig.wh.last().unwrap();
    assert!(largest[0] > 416.0 || largest[1] > 416.0, "{out}");
    // At least kmeans.py's best run on the original pixels (79.80 %).
    assert!(printed_iou(&out) >= 0.798, "{out}");
}
