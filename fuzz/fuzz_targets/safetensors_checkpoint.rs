//! Safetensors checkpoints: the bytes written to a file and loaded by name into a tiny YOLOv3
//! (1 class) built once.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use libfuzzer_sys::fuzz_target;
use yolo_model::{load_checkpoint_partial, YoloBody, YoloConfig};

fn model() -> &'static (VarMap, PathBuf) {
    static M: OnceLock<(VarMap, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        YoloBody::new(&YoloConfig::tiny(1), vb).expect("build tiny model");
        let file =
            std::env::temp_dir().join(format!("fuzz-ckpt-{}.safetensors", std::process::id()));
        (varmap, file)
    })
}

fuzz_target!(|data: &[u8]| {
    let (varmap, file) = model();
    std::fs::write(file, data).expect("write temp file");
    let _ = load_checkpoint_partial(varmap, file);
});
