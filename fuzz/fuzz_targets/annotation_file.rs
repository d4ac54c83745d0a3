//! Annotation files: the strict parser and the whole-file checker (images not opened).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use yolo_data::{check_annotation_bytes, parse_annotations, CheckOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_annotations(text, Path::new("f.txt"));
    }
    let opts = CheckOptions {
        check_images: false,
        ..Default::default()
    };
    let report = check_annotation_bytes(data, Path::new("f.txt"), 3, &opts);
    let _ = report.to_string();
    let _ = report.bad_lines();
});
