//! Weight conversion between darknet `.weights` and safetensors checkpoints (`yolo convert`).

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{
    load_checkpoint_partial, load_darknet_weights, save_checkpoint, save_darknet_weights,
    tiny_yolo_body, yolo_body, LoadReport, YoloConfig,
};

use crate::dataset::is_darknet_weights;
use crate::error::{Result, TrainError};

/// Converts `input` to `output`; the direction follows the extensions (`.safetensors` one way,
/// anything else is darknet). Darknet files may stop early (e.g. `darknet53.conv.74`): the report
/// lists the variables left at their initial values. A safetensors file must cover the whole model.
pub fn convert_weights(
    input: &Path,
    output: &Path,
    num_classes: usize,
    tiny: bool,
) -> Result<LoadReport> {
    let cfg = if tiny {
        YoloConfig::tiny(num_classes)
    } else {
        YoloConfig::v3(num_classes)
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    if tiny {
        tiny_yolo_body(&cfg, vb)?;
    } else {
        yolo_body(&cfg, vb)?;
    }
    if let Some(d) = output.parent() {
        if !d.as_os_str().is_empty() {
            std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
        }
    }
    match (is_darknet_weights(input), is_darknet_weights(output)) {
        (true, false) => {
            let report = load_darknet_weights(&varmap, &cfg, input)?;
            save_checkpoint(&varmap, output)?;
            Ok(report)
        }
        (false, true) => {
            let report = load_checkpoint_partial(&varmap, input)?;
            if !report.is_complete() {
                return Err(TrainError::format(
                    input,
                    format!(
                        "does not match a {} model with {num_classes} classes: {report}",
                        if tiny { "tiny YOLOv3" } else { "YOLOv3" }
                    ),
                ));
            }
            save_darknet_weights(&varmap, &cfg, output)?;
            Ok(report)
        }
        _ => Err(TrainError::Config {
            origin: "convert".into(),
            msg: format!(
                "converts .weights to .safetensors or back; got {} -> {}",
                input.display(),
                output.display()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_to_darknet_and_back_is_lossless() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = YoloConfig::tiny(2);
        let vm = VarMap::new();
        tiny_yolo_body(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::init::seeded_glorot_init(&vm, 5).unwrap();
        let a = dir.path().join("a.safetensors");
        save_checkpoint(&vm, &a).unwrap();
        let w = dir.path().join("m.weights");
        convert_weights(&a, &w, 2, true).unwrap();
        let b = dir.path().join("b.safetensors");
        let report = convert_weights(&w, &b, 2, true).unwrap();
        assert!(report.is_complete(), "{report}");
        let ta = candle_core::safetensors::load(&a, &Device::Cpu).unwrap();
        let tb = candle_core::safetensors::load(&b, &Device::Cpu).unwrap();
        assert_eq!(ta.len(), tb.len());
        for (k, v) in &ta {
            let d = (v - &tb[k])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{k}");
        }
        let e = convert_weights(&a, &dir.path().join("x.weights"), 3, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}
