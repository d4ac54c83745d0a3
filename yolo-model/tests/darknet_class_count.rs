//! Darknet `.weights` of another class count, as keras-yolo3 users load them: `convert.py` on the
//! 80-class COCO weights, then `load_weights(by_name=True, skip_mismatch=True)` into a model with
//! their own classes. The file's class count is solved from its float count; the body loads and
//! the output convs are skipped and reported with both shapes. Counts no class count explains keep
//! the exact size errors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{
    conv_table, infer_file_filters, load_darknet_weights, save_darknet_weights, ModelError,
    YoloBody, YoloConfig,
};
use yolo_testutil::keras_fixture;

fn build(cfg: &YoloConfig) -> VarMap {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    YoloBody::new(cfg, vb).unwrap();
    varmap
}

/// Every variable's values, by name.
fn values(varmap: &VarMap) -> HashMap<String, Vec<f32>> {
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| {
            let t = v.as_tensor().flatten_all().unwrap();
            (k.clone(), t.to_vec1::<f32>().unwrap())
        })
        .collect()
}

fn darknet_floats(cfg: &YoloConfig) -> usize {
    conv_table(cfg).iter().map(|c| c.darknet_floats()).sum()
}

/// The tiny model's skip list for a file with `file_filters` output filters and a model with
/// `model_filters`: (name, model shape, file shape), sorted by name.
fn tiny_skips(model_filters: usize, file_filters: usize) -> Vec<(String, Vec<usize>, Vec<usize>)> {
    vec![
        (
            "head.out0.bias".into(),
            vec![model_filters],
            vec![file_filters],
        ),
        (
            "head.out0.weight".into(),
            vec![model_filters, 512, 1, 1],
            vec![file_filters, 512, 1, 1],
        ),
        (
            "head.out1.bias".into(),
            vec![model_filters],
            vec![file_filters],
        ),
        (
            "head.out1.weight".into(),
            vec![model_filters, 256, 1, 1],
            vec![file_filters, 256, 1, 1],
        ),
    ]
}

/// Loads `file` (written from a model of `file_classes`) into a fresh tiny model of
/// `model_classes` and checks: the body equals `reference` (the file's values), the two output
/// convs are skipped with both shapes and keep their values, nothing is missing.
fn check_tiny_import(
    file: &Path,
    reference: &HashMap<String, Vec<f32>>,
    file_classes: usize,
    model_classes: usize,
) {
    let cfg = YoloConfig::tiny(model_classes);
    let varmap = build(&cfg);
    let before = values(&varmap);
    let report = load_darknet_weights(&varmap, &cfg, file).unwrap();
    let (mf, ff) = (3 * (5 + model_classes), 3 * (5 + file_classes));
    assert_eq!(report.skipped_shape, tiny_skips(mf, ff));
    assert!(report.missing.is_empty(), "{report}");
    assert!(report.unexpected.is_empty(), "{report}");
    // 11 BN convs x 5 variables.
    assert_eq!(report.loaded.len(), 55, "{report}");
    let after = values(&varmap);
    for name in &report.loaded {
        assert_eq!(after[name], reference[name], "{name}");
        // Fresh BN vectors are constants in both models; the kernels are independent draws.
        if name.ends_with("conv.weight") {
            assert_ne!(after[name], before[name], "{name} was not replaced");
        }
    }
    for (name, ..) in &report.skipped_shape {
        assert_eq!(after[name], before[name], "{name} changed although skipped");
    }
    let text = report.to_string();
    assert!(
        text.starts_with("loaded 55 variables, skipped 4 (shape mismatch), 0 missing"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "skipped head.out1.weight: model [{mf}, 256, 1, 1], file [{ff}, 256, 1, 1]"
        )),
        "{text}"
    );
}

#[test]
fn eighty_class_tiny_weights_into_a_three_class_model_load_the_body_and_skip_the_output_convs() {
    let dir = tempfile::tempdir().unwrap();
    let c80 = YoloConfig::tiny(80);
    let varmap80 = build(&c80);
    let file = dir.path().join("yolov3-tiny_c80.weights");
    save_darknet_weights(&varmap80, &c80, &file).unwrap();
    // yolov3-tiny.weights is 35,434,956 bytes: 20-byte header + 8,858,734 floats.
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 35_434_956);
    check_tiny_import(&file, &values(&varmap80), 80, 3);
}

#[test]
fn one_class_tiny_weights_into_an_eighty_class_model_load_the_body_too() {
    // The file is shorter than the model here: still a full file, not a partial one.
    let dir = tempfile::tempdir().unwrap();
    let c1 = YoloConfig::tiny(1);
    let varmap1 = build(&c1);
    let file = dir.path().join("raccoon.weights");
    save_darknet_weights(&varmap1, &c1, &file).unwrap();
    assert!(darknet_floats(&c1) < darknet_floats(&YoloConfig::tiny(80)));
    check_tiny_import(&file, &values(&varmap1), 1, 80);
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn keras_fixture_random_c80_weights_into_three_classes_match_the_eighty_class_import() {
    let Some(file) = keras_fixture("tiny_yolo_forward/yolov3-tiny_random_c80.weights") else {
        return;
    };
    let c80 = YoloConfig::tiny(80);
    let varmap80 = build(&c80);
    let full = load_darknet_weights(&varmap80, &c80, &file).unwrap();
    assert!(full.is_complete(), "{full}");
    let reference = values(&varmap80);
    // The first conv's beta is the first 16 floats after the 20-byte header.
    let bytes = std::fs::read(&file).unwrap();
    let beta: Vec<f32> = bytes[20..20 + 64]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(reference["backbone.conv0.bn.bias"], beta);
    check_tiny_import(&file, &reference, 80, 3);
}

#[test]
fn infer_file_filters_solves_the_class_count_of_the_published_weight_files() {
    // yolov3.weights: 248,007,048 bytes = 20-byte header + 62,001,757 floats (80 classes).
    let v3_coco = (248_007_048 - 20) / 4;
    assert_eq!(darknet_floats(&YoloConfig::v3(80)), v3_coco);
    let v3_one = conv_table(&YoloConfig::v3(1));
    assert_eq!(infer_file_filters(&v3_one, 3, v3_coco), Some(255));
    // yolov3-tiny.weights: 8,858,734 floats.
    let tiny3 = conv_table(&YoloConfig::tiny(3));
    assert_eq!(infer_file_filters(&tiny3, 3, 8_858_734), Some(255));
    // The model's own count is not "another" class count.
    assert_eq!(infer_file_filters(&tiny3, 3, 8_680_864), None);
    // One float off, or a filter count that is not A * (5 + C) with C >= 1.
    let fixed = 8_680_864 - 24 * (513 + 257);
    assert_eq!(infer_file_filters(&tiny3, 3, 8_858_734 - 1), None);
    assert_eq!(infer_file_filters(&tiny3, 3, fixed + 256 * 770), None);
    assert_eq!(infer_file_filters(&tiny3, 3, fixed + 15 * 770), None);
    assert_eq!(infer_file_filters(&tiny3, 3, fixed + 18 * 770), Some(18));
    // darknet53.conv.74 is shorter than the body: a partial file, not another class count.
    assert_eq!(infer_file_filters(&v3_one, 3, 40_620_640), None);
}

/// A darknet file (version 0.2, int64 `seen`) of `floats` values.
fn write_weights(path: &Path, floats: usize) {
    let mut b = Vec::new();
    for h in [0i32, 2, 0] {
        b.extend_from_slice(&h.to_le_bytes());
    }
    b.extend_from_slice(&0u64.to_le_bytes());
    for i in 0..floats {
        b.extend_from_slice(&((i % 5) as f32 * 0.5).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn counts_that_no_class_count_explains_keep_the_exact_size_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = YoloConfig::tiny(3);
    let varmap = build(&cfg);
    let p = dir.path().join("odd.weights");
    let f = p.display();
    let load = |p: &Path| load_darknet_weights(&varmap, &cfg, p).unwrap_err();

    // The 80-class file less one float: too long for 3 classes, and no class count fits.
    write_weights(&p, 8_858_733);
    assert_eq!(
        load(&p).to_string(),
        format!(
            "{f}: darknet weights hold 8858733 floats after the 20-byte header, expected 8680864 \
             for yolov3-tiny (3 classes, 3 anchors/layer); the file is 177869 floats too long \
             (another class count or network?)"
        )
    );
    // 256 output filters (not 3 * (5 + C)) and 15 (C = 0): shorter than the model, and they end
    // inside a conv of the 3-class layout.
    let fixed = 8_680_864 - 24 * 770;
    for filters in [256, 15] {
        let found = fixed + filters * 770;
        write_weights(&p, found);
        let err = load(&p);
        match &err {
            ModelError::WeightsSize {
                found: n, detail, ..
            } if *n == found && (detail.contains("ends inside") || detail.contains("too long")) => {
            }
            other => panic!("{filters} filters: {other}"),
        }
    }
    // Nothing was loaded by the failed attempts: the model still has its own output shape.
    let data = varmap.data().lock().unwrap();
    assert_eq!(data["head.out0.weight"].dims(), &[24, 512, 1, 1]);
}
