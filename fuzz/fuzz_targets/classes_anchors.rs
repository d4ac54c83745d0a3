//! Classes and anchors files.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = yolo_data::parse_classes(&text, Path::new("c.txt"));
    let _ = yolo_data::parse_anchors(&text, Path::new("a.txt"));
});
