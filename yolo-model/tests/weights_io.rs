//! Weight files: safetensors checkpoints and darknet `.weights` round trips, partial loading with
//! keras' `skip_mismatch` semantics, and clear errors for wrong-sized darknet files.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{
    conv_table, load_checkpoint_partial, load_darknet_weights, save_checkpoint,
    save_darknet_weights, FreezeBody, ModelError, YoloBody, YoloConfig,
};

fn build(cfg: &YoloConfig) -> (VarMap, YoloBody) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = YoloBody::new(cfg, vb).unwrap();
    (varmap, model)
}

fn input(h: usize, w: usize, seed: u64) -> Tensor {
    let n = 3 * h * w;
    // A deterministic pattern in [0, 1).
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32) / 1000.0)
        .collect();
    Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// A trained-looking tiny model: one training-mode pass moves the BN running statistics away from
/// their 0/1 initial values, so a loader that forgot them would be caught.
fn trained_tiny(classes: usize) -> (VarMap, YoloBody) {
    let cfg = YoloConfig::tiny(classes);
    let (varmap, model) = build(&cfg);
    let x = Tensor::cat(&[input(64, 64, 1), input(64, 64, 2)], 0).unwrap();
    model.forward_t(&x, true, FreezeBody::None).unwrap();
    (varmap, model)
}

#[test]
fn safetensors_checkpoint_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    let (varmap, model) = trained_tiny(3);
    save_checkpoint(&varmap, &path).unwrap();
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let (varmap2, model2) = build(&YoloConfig::tiny(3));
    let report = load_checkpoint_partial(&varmap2, &path).unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.loaded.len(), varmap.all_vars().len());
    let x = input(64, 64, 3);
    for (a, b) in model
        .forward(&x)
        .unwrap()
        .iter()
        .zip(model2.forward(&x).unwrap())
    {
        assert_eq!(bits(a), bits(&b));
    }
    let rm = "backbone.conv2.bn.running_var";
    let d1 = varmap.data().lock().unwrap()[rm].as_tensor().clone();
    let d2 = varmap2.data().lock().unwrap()[rm].as_tensor().clone();
    assert_eq!(bits(&d1), bits(&d2));
    assert_ne!(
        bits(&d1),
        bits(&Tensor::ones(64, DType::F32, &Device::Cpu).unwrap())
    );
}

#[test]
fn darknet_export_import_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.weights");
    let cfg = YoloConfig::tiny(3);
    let (varmap, model) = trained_tiny(3);
    save_darknet_weights(&varmap, &cfg, &path).unwrap();
    let floats: usize = conv_table(&cfg).iter().map(|c| c.darknet_floats()).sum();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        20 + 4 * floats
    );

    let (varmap2, model2) = build(&cfg);
    let report = load_darknet_weights(&varmap2, &cfg, &path).unwrap();
    assert!(report.is_complete(), "{report}");
    let x = input(64, 96, 4);
    for (a, b) in model
        .forward(&x)
        .unwrap()
        .iter()
        .zip(model2.forward(&x).unwrap())
    {
        assert_eq!(bits(a), bits(&b));
    }
}

fn check_skip_report(cfg80: YoloConfig, cfg3: YoloConfig, layers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c80.safetensors");
    let (varmap80, _) = build(&cfg80);
    save_checkpoint(&varmap80, &path).unwrap();
    let (varmap3, _) = build(&cfg3);
    let report = load_checkpoint_partial(&varmap3, &path).unwrap();
    let skipped: Vec<&str> = report.skipped_shape.iter().map(|s| s.0.as_str()).collect();
    let mut want = Vec::new();
    for l in 0..layers {
        want.push(format!("head.out{l}.bias"));
        want.push(format!("head.out{l}.weight"));
    }
    want.sort();
    assert_eq!(skipped, want);
    let c_in = [1024, 512, 256];
    for (name, model, file) in &report.skipped_shape {
        let l: usize = name[8..9].parse().unwrap();
        let c = if cfg3.num_layers() == 3 {
            c_in[l]
        } else {
            c_in[l] / 2
        };
        if name.ends_with("weight") {
            assert_eq!(model, &vec![24, c, 1, 1]);
            assert_eq!(file, &vec![255, c, 1, 1]);
        } else {
            assert_eq!((model, file), (&vec![24], &vec![255]));
        }
    }
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(report.loaded.len(), varmap3.all_vars().len() - 2 * layers);
    // Everything but the output convs now equals the 80-class model.
    let a = varmap80.data().lock().unwrap();
    let b = varmap3.data().lock().unwrap();
    for name in &report.loaded {
        assert_eq!(
            bits(a[name].as_tensor()),
            bits(b[name].as_tensor()),
            "{name}"
        );
    }
    let text = report.to_string();
    assert!(
        text.contains("skipped head.out0.weight: model [24,"),
        "{text}"
    );
}

#[test]
fn checkpoint_80_classes_into_3_class_yolov3_skips_exactly_the_three_output_convs() {
    check_skip_report(YoloConfig::v3(80), YoloConfig::v3(3), 3);
}

#[test]
fn checkpoint_80_classes_into_3_class_tiny_skips_exactly_the_two_output_convs() {
    check_skip_report(YoloConfig::tiny(80), YoloConfig::tiny(3), 2);
}

fn write_weights(path: &Path, header: &[i32], seen64: Option<u64>, floats: usize) {
    let mut b = Vec::new();
    for h in header {
        b.extend_from_slice(&h.to_le_bytes());
    }
    if let Some(s) = seen64 {
        b.extend_from_slice(&s.to_le_bytes());
    }
    for i in 0..floats {
        b.extend_from_slice(&((i % 7) as f32 * 0.25).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn truncated_or_oversized_darknet_weights_name_file_and_float_counts() {
    let cfg = YoloConfig::tiny(3);
    let expected: usize = conv_table(&cfg).iter().map(|c| c.darknet_floats()).sum();
    let (varmap, _) = build(&cfg);
    let dir = tempfile::tempdir().unwrap();

    let short = dir.path().join("short.weights");
    // Ends 10 floats into conv 1.
    write_weights(&short, &[0, 2, 0], Some(0), 496 + 10);
    let err = load_darknet_weights(&varmap, &cfg, &short).unwrap_err();
    assert!(
        matches!(err, ModelError::WeightsSize { found: 506, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("short.weights"), "{msg}");
    assert!(msg.contains(&format!("expected {expected}")), "{msg}");
    assert!(
        msg.contains("506 floats") && msg.contains("backbone.conv1"),
        "{msg}"
    );

    let long = dir.path().join("long.weights");
    write_weights(&long, &[0, 2, 0], Some(0), expected + 1);
    let msg = load_darknet_weights(&varmap, &cfg, &long)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("long.weights"), "{msg}");
    assert!(msg.contains(&format!("{} floats", expected + 1)), "{msg}");
    assert!(msg.contains(&format!("expected {expected}")), "{msg}");

    // The 80-class file into a 3-class model is not silently misaligned: its class count is
    // solved from its size, the body loads and the output convs are skipped (details in
    // darknet_class_count.rs).
    let (varmap80, _) = build(&YoloConfig::tiny(80));
    let c80 = dir.path().join("c80.weights");
    save_darknet_weights(&varmap80, &YoloConfig::tiny(80), &c80).unwrap();
    let report = load_darknet_weights(&varmap, &cfg, &c80).unwrap();
    assert_eq!(report.skipped_shape.len(), 4, "{report}");
    assert_eq!(report.skipped_shape[0].2, vec![255], "{report}");

    // Old format: 16-byte header with an int32 `seen`, and a stray byte.
    let odd = dir.path().join("odd.weights");
    write_weights(&odd, &[0, 1, 0, 5], None, expected);
    let mut bytes = std::fs::read(&odd).unwrap();
    bytes.push(0);
    std::fs::write(&odd, bytes).unwrap();
    let msg = load_darknet_weights(&varmap, &cfg, &odd)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("16-byte header") && msg.contains("stray"),
        "{msg}"
    );

    let missing = dir.path().join("nope.weights");
    let msg = load_darknet_weights(&varmap, &cfg, &missing)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.weights"), "{msg}");
}

#[test]
fn partial_darknet_file_loads_the_convs_it_covers_like_a_backbone_conv_file() {
    // Like darknet53.conv.74 (the 52 Darknet-53 convs), here: tiny's 5 backbone convs, which are
    // exactly its freeze_body=1 prefix (394,096 floats), with a 32-bit `seen` (version 0.1).
    let cfg = YoloConfig::tiny(3);
    let (varmap, _) = build(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.conv.9");
    write_weights(&path, &[0, 1, 0, 7], None, 394_096);
    let report = load_darknet_weights(&varmap, &cfg, &path).unwrap();
    assert_eq!(report.loaded.len(), 25);
    assert!(report.loaded.iter().all(|n| n.starts_with("backbone.")));
    assert_eq!(report.missing.len(), 6 * 5 + 2 * 2);
    assert!(report.missing.iter().all(|n| !n.starts_with("backbone.")));
    // Conv 0: beta = floats 0..16, gamma 16..32, ..., kernel from 64.
    let data = varmap.data().lock().unwrap();
    let beta = data["backbone.conv0.bn.bias"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    let gamma = data["backbone.conv0.bn.weight"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    let w = data["backbone.conv0.conv.weight"].as_tensor();
    let w0 = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let val = |i: usize| (i % 7) as f32 * 0.25;
    assert_eq!(beta[3], val(3));
    assert_eq!(gamma[0], val(16));
    assert_eq!(w0[5], val(64 + 5));
    assert_eq!(w.dims(), &[16, 3, 3, 3]);
}

#[test]
fn a_checkpoint_builds_an_inference_model_without_a_varmap() {
    // YoloBody::new does not care whether the VarBuilder is a VarMap or a safetensors file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    let (varmap, model) = trained_tiny(2);
    save_checkpoint(&varmap, &path).unwrap();
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let frozen = YoloBody::new(&YoloConfig::tiny(2), vb).unwrap();
    let x = input(64, 64, 9);
    for (a, b) in model
        .forward(&x)
        .unwrap()
        .iter()
        .zip(frozen.forward(&x).unwrap())
    {
        assert_eq!(bits(a), bits(&b));
    }
}

#[test]
fn darknet53_backbone_floats_equal_the_darknet53_conv_74_size() {
    // darknet53.conv.74 holds the 52 Darknet-53 convs: 162,482,580 bytes = 20-byte header +
    // 40,620,640 floats, which is also Keras' freeze_body=1 parameter count.
    let table = conv_table(&YoloConfig::v3(80));
    let backbone: Vec<_> = table
        .iter()
        .take_while(|c| c.name.starts_with("backbone."))
        .collect();
    assert_eq!(backbone.len(), 52);
    let floats: usize = backbone.iter().map(|c| c.darknet_floats()).sum();
    assert_eq!(floats, 40_620_640);
    assert_eq!(20 + 4 * floats, 162_482_580);
    assert!(table[52..].iter().all(|c| !c.name.starts_with("backbone.")));
}

/// A checkpoint gets the permissions of any new file (0666 less the umask), not the 0600 of the
/// safetensors writer's private temporary file.
#[cfg(unix)]
#[test]
fn checkpoints_get_the_permissions_of_a_plain_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (vm, _) = build(&YoloConfig::tiny(1));
    let ckpt = dir.path().join("w.safetensors");
    save_checkpoint(&vm, &ckpt).unwrap();
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ckpt), mode(&plain));
    assert_ne!(mode(&plain), 0o600, "the test needs a umask other than 077");
}
