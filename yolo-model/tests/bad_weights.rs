//! Bad weight files, each with the exact error message: truncated, oversized and headerless darknet
//! `.weights`, a darknet file of the other variant, cfg files with unknown sections and other
//! mistakes, a cfg of another model, and safetensors files that are not safetensors, lie about
//! their tensors, use a dtype candle cannot read or come from the other variant.
//! (`weights_io.rs` covers the round trips and the partial-file case.)

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{
    cfg_convs, check_cfg_matches, conv_table, darknet_cfg, load_checkpoint_partial,
    load_darknet_weights, parse_cfg, save_checkpoint, save_darknet_weights, YoloBody, YoloConfig,
};

fn build(cfg: &YoloConfig) -> VarMap {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    YoloBody::new(cfg, vb).unwrap();
    varmap
}

/// A darknet file: int32 header values, an optional int64 `seen`, then `floats` zeros.
fn write_weights(path: &Path, header: &[i32], seen64: Option<u64>, floats: usize) {
    let mut b = Vec::new();
    for h in header {
        b.extend_from_slice(&h.to_le_bytes());
    }
    if let Some(s) = seen64 {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b.resize(b.len() + 4 * floats, 0);
    std::fs::write(path, b).unwrap();
}

/// A safetensors file from a raw JSON header and data bytes (to write what no writer would).
fn write_raw_safetensors(path: &Path, header: &str, data: &[u8]) {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

const TINY3: &str = "yolov3-tiny (3 classes, 3 anchors/layer)";

#[test]
fn darknet_weights_with_bad_sizes_or_headers_name_the_file_and_the_expected_counts() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = YoloConfig::tiny(3);
    let varmap = build(&tiny);
    let expected: usize = conv_table(&tiny).iter().map(|c| c.darknet_floats()).sum();
    assert_eq!(expected, 8_680_864);
    let p = dir.path().join("a.weights");
    let load = |p: &Path| {
        load_darknet_weights(&varmap, &tiny, p)
            .unwrap_err()
            .to_string()
    };
    let f = p.display();

    // Cut inside the first conv (which spans 496 floats).
    write_weights(&p, &[0, 2, 0], Some(0), 100);
    assert_eq!(
        load(&p),
        format!(
            "{f}: darknet weights hold 100 floats after the 20-byte header, expected 8680864 for \
             {TINY3}; the file ends inside darknet conv 0 (backbone.conv0), which spans floats \
             0..496; a partial file must end at a conv boundary, the first of which is at 496 \
             floats (conv 0)"
        )
    );
    // Cut inside the second conv: both neighbouring boundaries are named.
    write_weights(&p, &[0, 2, 0], Some(0), 596);
    assert_eq!(
        load(&p),
        format!(
            "{f}: darknet weights hold 596 floats after the 20-byte header, expected 8680864 for \
             {TINY3}; the file ends inside darknet conv 1 (backbone.conv1), which spans floats \
             496..5232; a partial file must end at a conv boundary, the nearest being 496 floats \
             (conv 0) and 5232 floats (convs 0 to 1)"
        )
    );
    // One float too many.
    write_weights(&p, &[0, 2, 0], Some(0), expected + 1);
    assert_eq!(
        load(&p),
        format!(
            "{f}: darknet weights hold 8680865 floats after the 20-byte header, expected 8680864 \
             for {TINY3}; the file is 1 floats too long (another class count or network?)"
        )
    );
    // A header and nothing else.
    write_weights(&p, &[0, 2, 0], Some(0), 0);
    assert_eq!(
        load(&p),
        format!(
            "{f}: darknet weights hold 0 floats after the 20-byte header, expected 8680864 for \
             {TINY3}; the file holds no weights"
        )
    );
    // Shorter than a header: 7 bytes, and 12 bytes where version 0.2 needs 20.
    std::fs::write(&p, [1u8, 0, 0, 0, 2, 0, 0]).unwrap();
    assert_eq!(
        load(&p),
        format!("{f}: 7 bytes is too short for a darknet weights header")
    );
    write_weights(&p, &[0, 2, 0], None, 0);
    assert_eq!(
        load(&p),
        format!("{f}: 12 bytes is too short for a darknet weights header")
    );
    // A negative version is not a darknet file.
    write_weights(&p, &[-1, 2, 0], Some(0), 10);
    assert_eq!(load(&p), format!("{f}: bad darknet header: version -1.2.0"));
    // A zero-byte file.
    std::fs::write(&p, b"").unwrap();
    assert_eq!(
        load(&p),
        format!("{f}: 0 bytes is too short for a darknet weights header")
    );
}

#[test]
fn darknet_weights_of_the_other_variant_are_rejected_with_both_float_counts() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = YoloConfig::tiny(3);
    let v3 = YoloConfig::v3(3);
    let p = dir.path().join("tiny.weights");
    save_darknet_weights(&build(&tiny), &tiny, &p).unwrap();
    let err = load_darknet_weights(&build(&v3), &v3, &p).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: darknet weights hold 8680864 floats after the 20-byte header, expected 61587112 \
             for yolov3 (3 classes, 3 anchors/layer); that is exactly the size of a yolov3-tiny \
             (3 classes, 3 anchors/layer) file: weights of the other variant?",
            p.display()
        )
    );
}

#[test]
fn cfg_mistakes_name_file_line_and_what_is_wrong() {
    let p = Path::new("my.cfg");
    let err = |text: &str| match parse_cfg(text, p).and_then(|s| cfg_convs(&s, p)) {
        Ok(c) => panic!("{text:?} parsed: {c:?}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err("[net]\nchannels=3\n\n[dropout]\nprobability=.5\n"),
        "my.cfg:4: unknown section [dropout] (supported: net, convolutional, shortcut, route, \
         upsample, maxpool, yolo)"
    );
    assert_eq!(err("[net\n"), "my.cfg:1: section header `[net` lacks `]`");
    assert_eq!(
        err("a=1\n[net]\n"),
        "my.cfg:1: option `a=1` before any [section]"
    );
    assert_eq!(err("[net]\na=1\na=2\n"), "my.cfg:3: duplicate option a");
    assert_eq!(
        err("[net]\nchannels 3\n"),
        "my.cfg:2: expected key=value, got `channels 3`"
    );
    assert_eq!(
        err("# only a comment\n[convolutional]\n"),
        "my.cfg:2: a cfg must start with [net]"
    );
    assert_eq!(err("; nothing\n"), "my.cfg: no sections");
    assert_eq!(
        err("[net]\n[route]\nlayers=1\n"),
        "my.cfg:2: layer 0 refers to layer 1, which does not precede it"
    );
    assert_eq!(
        err("[net]\n[route]\nlayers=x\n"),
        "my.cfg:2: route layer `x` is not an integer"
    );
    assert_eq!(
        err("[net]\n[convolutional]\nfilters=0\n"),
        "my.cfg:2: bad conv: filters=0 size=1 stride=1"
    );
    assert_eq!(
        err("[net]\n[convolutional]\nfilters=abc\n"),
        "my.cfg:2: [convolutional] option filters=abc is not an integer"
    );
    assert_eq!(
        err("[net]\n[shortcut]\n"),
        "my.cfg:2: [shortcut] section lacks required option from"
    );
}

#[test]
fn cfg_of_another_variant_or_class_count_names_the_first_differing_conv() {
    let p = Path::new("my.cfg");
    let text = darknet_cfg(&YoloConfig::tiny(3));
    let convs = cfg_convs(&parse_cfg(&text, p).unwrap(), p).unwrap();
    assert_eq!(
        check_cfg_matches(&YoloConfig::v3(3), &convs, p)
            .unwrap_err()
            .to_string(),
        "my.cfg:6: conv 0 is (c_in, filters, size, stride, batch_norm) = (3, 16, 3, 1, true), \
         but backbone.conv0 needs (3, 32, 3, 1, true) for yolov3 (3 classes, 3 anchors/layer)"
    );
    assert_eq!(
        check_cfg_matches(&YoloConfig::tiny(80), &convs, p)
            .unwrap_err()
            .to_string(),
        "my.cfg:102: conv 9 is (c_in, filters, size, stride, batch_norm) = (512, 24, 1, 1, \
         false), but head.out0 needs (512, 255, 1, 1, false) for yolov3-tiny (80 classes, 3 \
         anchors/layer)"
    );
    // One conv more than the model: the error points at it.
    let mut more = convs.clone();
    more.push(convs[12].clone());
    assert_eq!(
        check_cfg_matches(&YoloConfig::tiny(3), &more, p)
            .unwrap_err()
            .to_string(),
        format!(
            "my.cfg:{}: the cfg has 14 convolutions, {TINY3} has 13 (conv 13 is the first extra \
             one)",
            convs[12].line
        )
    );
    // Fewer convs than the model: only the count can differ, at no line.
    let cut: Vec<_> = convs[..5].to_vec();
    assert_eq!(
        check_cfg_matches(&YoloConfig::tiny(3), &cut, p)
            .unwrap_err()
            .to_string(),
        format!("my.cfg: the cfg has 5 convolutions, {TINY3} has 13")
    );
}

#[test]
fn unreadable_safetensors_files_name_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = build(&YoloConfig::tiny(3));
    let p = dir.path().join("c.safetensors");
    let load = |p: &Path| load_checkpoint_partial(&varmap, p).unwrap_err().to_string();
    let f = p.display();

    assert_eq!(load(&p), format!("{f}: checkpoint not found"));
    // Plain text: its first 8 bytes read as an absurd header length.
    std::fs::write(&p, b"garbage that is not safetensors").unwrap();
    assert_eq!(
        load(&p),
        format!("{f}: not a readable safetensors file: header too large")
    );
    // A header length claiming ~9e18 bytes: refused before any allocation.
    let mut b = (u64::MAX / 2).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    std::fs::write(&p, &b).unwrap();
    assert_eq!(
        load(&p),
        format!("{f}: not a readable safetensors file: header too large")
    );
    // Data offsets that do not match the shape (432 f32 need 1728 bytes, 100 given).
    write_raw_safetensors(
        &p,
        r#"{"backbone.conv0.conv.weight":{"dtype":"F32","shape":[16,3,3,3],"data_offsets":[0,100]}}"#,
        &[0; 100],
    );
    assert_eq!(
        load(&p),
        format!(
            "{f}: not a readable safetensors file: invalid shape, data type, or offset for tensor \
             (backbone.conv0.conv.weight: F32 [16, 3, 3, 3] needs 1728 bytes, its data_offsets \
             0..100 give 100)"
        )
    );
    // Cut short: the header declares 64 bytes of data, 60 are there.
    write_raw_safetensors(
        &p,
        r#"{"backbone.conv0.bn.bias":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}}"#,
        &[0; 60],
    );
    assert_eq!(
        load(&p),
        format!(
            "{f}: not a readable safetensors file: incomplete metadata, file not fully covered \
             (the tensors end at data byte 64, but the file holds 60 bytes of data)"
        )
    );
    // A dtype candle has no tensor type for.
    write_raw_safetensors(
        &p,
        r#"{"backbone.conv0.conv.weight":{"dtype":"BOOL","shape":[16,3,3,3],"data_offsets":[0,432]}}"#,
        &[0; 432],
    );
    assert_eq!(
        load(&p),
        format!(
            "{f}: tensor backbone.conv0.conv.weight has dtype BOOL, expected a float dtype (F32, \
             F16, BF16 or F64)"
        )
    );
    // A header that is not JSON.
    write_raw_safetensors(&p, "{not json", &[]);
    let msg = load(&p);
    assert!(
        msg.starts_with(&format!("{f}: not a readable safetensors file: ")),
        "{msg}"
    );
}

#[test]
fn safetensors_with_wrong_shapes_are_skipped_and_reported_and_half_precision_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = build(&YoloConfig::tiny(3));
    let p = dir.path().join("c.safetensors");
    let t: HashMap<String, Tensor> = [
        (
            "backbone.conv0.conv.weight".to_string(),
            Tensor::ones((8, 3, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        ),
        (
            "backbone.conv0.bn.bias".to_string(),
            Tensor::full(0.5f32, 16, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        ),
    ]
    .into();
    candle_core::safetensors::save(&t, &p).unwrap();
    let r = load_checkpoint_partial(&varmap, &p).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.loaded, vec!["backbone.conv0.bn.bias"]);
    assert_eq!(
        r.skipped_shape,
        vec![(
            "backbone.conv0.conv.weight".to_string(),
            vec![16, 3, 3, 3],
            vec![8, 3, 3, 3]
        )]
    );
    let text = r.to_string();
    assert!(
        text.starts_with(
            "loaded 1 variables, skipped 1 (shape mismatch), 57 missing, 0 unexpected\n  \
             skipped backbone.conv0.conv.weight: model [16, 3, 3, 3], file [8, 3, 3, 3]\n"
        ),
        "{text}"
    );
    let bias = varmap.data().lock().unwrap()["backbone.conv0.bn.bias"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(bias, vec![0.5; 16]);
}

#[test]
fn checkpoint_of_the_other_variant_is_reported_incomplete_with_every_difference() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.safetensors");
    save_checkpoint(&build(&YoloConfig::tiny(3)), &p).unwrap();
    let v3 = build(&YoloConfig::v3(3));
    let r = load_checkpoint_partial(&v3, &p).unwrap();
    assert!(!r.is_complete());
    assert_eq!(
        r.to_string().lines().next().unwrap(),
        "loaded 10 variables, skipped 14 (shape mismatch), 342 missing, 35 unexpected"
    );
    assert!(r.skipped_shape.contains(&(
        "backbone.conv0.conv.weight".into(),
        vec![32, 3, 3, 3],
        vec![16, 3, 3, 3]
    )));
    assert_eq!(
        r.missing.len() + r.loaded.len() + r.skipped_shape.len(),
        v3.all_vars().len()
    );
}

/// A safetensors file holding one tensor of `dtype` (raw little-endian `data`) named `name`.
fn write_typed(path: &Path, name: &str, dtype: safetensors::Dtype, shape: &[usize], data: &[u8]) {
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), data).unwrap();
    let bytes = safetensors::serialize([(name, view)], None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn integer_tensors_named_like_weights_are_errors_naming_file_tensor_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = build(&YoloConfig::tiny(3));
    let p = dir.path().join("int.safetensors");
    let f = p.display();
    // I64 with the variable's own shape: candle would convert it silently.
    write_typed(
        &p,
        "backbone.conv0.bn.bias",
        safetensors::Dtype::I64,
        &[16],
        &[0u8; 16 * 8],
    );
    assert_eq!(
        load_checkpoint_partial(&varmap, &p)
            .unwrap_err()
            .to_string(),
        format!(
            "{f}: tensor backbone.conv0.bn.bias has dtype I64, expected a float dtype (F32, F16, \
             BF16 or F64)"
        )
    );
    // U8 kernel (another shape too: the dtype is reported first).
    write_typed(
        &p,
        "backbone.conv0.conv.weight",
        safetensors::Dtype::U8,
        &[2, 3],
        &[7u8; 6],
    );
    assert_eq!(
        load_checkpoint_partial(&varmap, &p)
            .unwrap_err()
            .to_string(),
        format!(
            "{f}: tensor backbone.conv0.conv.weight has dtype U8, expected a float dtype (F32, \
             F16, BF16 or F64)"
        )
    );
    // An integer tensor the model has no variable for (a step counter) is only unexpected.
    write_typed(&p, "step", safetensors::Dtype::I64, &[], &[0u8; 8]);
    let r = load_checkpoint_partial(&varmap, &p).unwrap();
    assert_eq!(r.unexpected, vec!["step"]);
    assert!(r.loaded.is_empty());
}
