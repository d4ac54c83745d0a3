//! `--weights` with a safetensors checkpoint that does not fit the model: a tiny YOLOv3
//! checkpoint for a YOLOv3 run and the reverse, or a file in which no name matches, is an error
//! naming the file, what was expected and which setting to change; a checkpoint of the same
//! variant with another class count still initialises everything but the output convs.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{model_variables, save_checkpoint, YoloBody, YoloConfig};
use yolo_train::load_initial_weights;

fn build(cfg: &YoloConfig) -> VarMap {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    YoloBody::new(cfg, vb).unwrap();
    varmap
}

fn err(varmap: &VarMap, cfg: &YoloConfig, p: &Path) -> String {
    match load_initial_weights(varmap, cfg, p) {
        Ok(r) => panic!("{} loaded: {r}", p.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tiny_checkpoint_for_a_yolov3_run_says_use_tiny() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.safetensors");
    save_checkpoint(&build(&YoloConfig::tiny(2)), &p).unwrap();
    let v3 = YoloConfig::v3(2);
    assert_eq!(
        err(&build(&v3), &v3, &p),
        format!(
            "{}: only 10 of the 366 variables of the yolov3 (2 classes, 3 anchors/layer) model \
             load from its 59 tensors (14 names match with another shape, 35 names the model \
             lacks); it looks like a yolov3-tiny checkpoint (59 of its 59 names are \
             yolov3-tiny's): use --tiny (variant = \"tiny\")",
            p.display()
        )
    );
}

#[test]
fn yolov3_checkpoint_for_a_tiny_run_says_drop_tiny() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v3.safetensors");
    // Every YOLOv3 variable name; the 4-D kernels are stored as [1] tensors to keep the file
    // small (no YOLOv3 kernel has a tiny kernel's shape anyway, so the load is the same: the BN
    // vectors and output biases the two variants share by name and shape load, nothing else).
    let tensors: HashMap<String, Tensor> = model_variables(&YoloConfig::v3(2))
        .into_iter()
        .map(|(name, shape)| {
            let shape = if shape.len() == 4 { vec![1] } else { shape };
            (
                name,
                Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    assert_eq!(tensors.len(), 366);
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let tiny = YoloConfig::tiny(2);
    assert_eq!(
        err(&build(&tiny), &tiny, &p),
        format!(
            "{}: only 10 of the 59 variables of the yolov3-tiny (2 classes, 3 anchors/layer) \
             model load from its 366 tensors (14 names match with another shape, 342 names the \
             model lacks); it looks like a yolov3 checkpoint (366 of its 366 names are yolov3's): drop \
             --tiny (variant = \"yolov3\")",
            p.display()
        )
    );
}

#[test]
fn checkpoint_with_no_matching_name_is_an_error_naming_both_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keras.safetensors");
    let tensors: HashMap<String, Tensor> = ["conv2d_1/kernel:0", "batch_normalization_1/beta:0"]
        .into_iter()
        .map(|n| {
            (
                n.to_string(),
                Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let tiny = YoloConfig::tiny(2);
    assert_eq!(
        err(&build(&tiny), &tiny, &p),
        format!(
            "{}: none of the 59 variables of the yolov3-tiny (2 classes, 3 anchors/layer) model \
             load from its 2 tensors (0 names match with another shape, 2 names the model lacks); \
             expected a checkpoint of this model as `yolo train` or `yolo convert` write it \
             (names such as backbone.conv0.bn.bias, backbone.conv0.bn.weight), found names such \
             as batch_normalization_1/beta:0, conv2d_1/kernel:0",
            p.display()
        )
    );
}

#[test]
fn same_variant_with_another_class_count_loads_all_but_the_output_convs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny80.safetensors");
    save_checkpoint(&build(&YoloConfig::tiny(80)), &p).unwrap();
    let tiny = YoloConfig::tiny(2);
    let r = load_initial_weights(&build(&tiny), &tiny, &p).unwrap();
    assert_eq!((r.loaded.len(), r.skipped_shape.len()), (55, 4));
    assert!(r.missing.is_empty() && r.unexpected.is_empty());
}
