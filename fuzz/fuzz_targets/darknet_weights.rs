//! Darknet .weights files: the header parser on the raw bytes, then the loader on the bytes
//! written to a file, into a tiny YOLOv3 (1 class) built once.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use libfuzzer_sys::fuzz_target;
use yolo_model::{load_darknet_weights, DarknetHeader, YoloBody, YoloConfig};

fn model() -> &'static (VarMap, YoloConfig, PathBuf) {
    static M: OnceLock<(VarMap, YoloConfig, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let cfg = YoloConfig::tiny(1);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        YoloBody::new(&cfg, vb).expect("build tiny model");
        let file =
            std::env::temp_dir().join(format!("fuzz-darknet-{}.weights", std::process::id()));
        (varmap, cfg, file)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = DarknetHeader::parse(data, Path::new("w.weights"));
    let (varmap, cfg, file) = model();
    std::fs::write(file, data).expect("write temp file");
    let _ = load_darknet_weights(varmap, cfg, file);
});
