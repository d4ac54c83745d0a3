//! Pascal VOC XML annotation files.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = yolo_data::parse_voc_xml(text, Path::new("x.xml"));
    }
});
