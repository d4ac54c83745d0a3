//! COCO instances JSON, with every option combination chosen by the first byte.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use yolo_data::CocoOptions;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, json)) = data.split_first() else {
        return;
    };
    let opts = CocoOptions {
        include_crowd: flags & 1 != 0,
        keep_decimals: flags & 2 != 0,
        skip_empty_images: flags & 4 != 0,
        ..Default::default()
    };
    let _ = yolo_data::parse_coco(json, Path::new("i.json"), &opts);
});
