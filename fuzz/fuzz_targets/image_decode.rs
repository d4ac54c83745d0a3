//! Image files named by annotation lines (JPEG, PNG): decoding must fail cleanly, and the image
//! crate's default limits bound what a header can make it allocate.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = yolo_data::decode_rgb(data, Path::new("i.jpg"));
});
