//! Darknet .cfg files: parse, resolve the conv list, compare with both model variants.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use yolo_model::{cfg_convs, check_cfg_matches, parse_cfg, YoloConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = Path::new("f.cfg");
    let Ok(sections) = parse_cfg(text, p) else {
        return;
    };
    if let Ok(convs) = cfg_convs(&sections, p) {
        let _ = check_cfg_matches(&YoloConfig::tiny(3), &convs, p);
        let _ = check_cfg_matches(&YoloConfig::v3(80), &convs, p);
    }
});
