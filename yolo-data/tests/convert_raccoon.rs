//! The raccoon dataset (Pascal VOC layout) converted like keras-yolo3's `voc_annotation.py`:
//! 200 lines and 217 boxes, and the boxes' sizes are exactly the ones keras-yolo3's `kmeans.py`
//! read (fixture `kmeans/kmeans_raccoon.json`), in both variants.

use yolo_data::{
    box_wh, convert_voc, format_annotation_line, letterboxed_box_wh, parse_annotations, VocOptions,
};
use yolo_testutil::{keras_fixture, read_json, shared_path};

fn wh(v: &serde_json::Value) -> Vec<[i64; 2]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_i64().unwrap(), p[1].as_i64().unwrap()])
        .collect()
}

#[test]
#[cfg_attr(
    shared_missing = "datasets/raccoon",
    ignore = "needs shared/datasets/raccoon (absent)"
)]
fn raccoon_gives_200_lines_and_217_boxes() {
    let Some(root) = shared_path("datasets/raccoon") else {
        return;
    };
    let d = convert_voc(&root, &VocOptions::default()).unwrap();
    assert_eq!(d.classes, vec!["raccoon"]);
    assert_eq!(d.annotations.len(), 200);
    assert_eq!(
        d.annotations.iter().map(|a| a.boxes.len()).sum::<usize>(),
        217
    );
    assert_eq!(d.skipped_difficult, 0);
    let first = format_annotation_line(&d.annotations[0]);
    assert_eq!(
        first,
        format!(
            "{} 81,88,522,408,0",
            root.join("images/raccoon-1.jpg").display()
        )
    );
    assert!(d.annotations.iter().all(|a| a.path.is_file()));

    // The written text reads back to the same annotations.
    let text: String = d
        .annotations
        .iter()
        .map(|a| format_annotation_line(a) + "\n")
        .collect();
    let back = parse_annotations(&text, std::path::Path::new("raccoon.txt")).unwrap();
    assert_eq!(back, d.annotations);
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
#[cfg_attr(
    shared_missing = "datasets/raccoon",
    ignore = "needs shared/datasets/raccoon (absent)"
)]
fn raccoon_box_sizes_match_kmeans_fixture() {
    let Some(root) = shared_path("datasets/raccoon") else {
        return;
    };
    let Some(fixture) = keras_fixture("kmeans/kmeans_raccoon.json") else {
        return;
    };
    let f = read_json(&fixture);
    let d = convert_voc(&root, &VocOptions::default()).unwrap();
    assert_eq!(
        box_wh(&d.annotations),
        wh(&f["variants"]["original_pixels"]["box_wh"])
    );

    let sizes: Vec<(u32, u32)> = d
        .annotations
        .iter()
        .map(|a| image::image_dimensions(&a.path).unwrap())
        .collect();
    assert_eq!(
        letterboxed_box_wh(&d.annotations, &sizes, (416, 416)),
        wh(&f["variants"]["letterboxed_416x416"]["box_wh"])
    );
}
