//! Parameter groups and layer tables against keras-yolo3's `model.layers`
//! (fixtures/keras-yolo3/model_layers, README section 6): per-group parameter counts for
//! freeze_body 1 and 2 and the output convs, conv order and shapes in darknet order.

use std::collections::HashMap;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;
use yolo_model::{
    cfg_convs, check_cfg_matches, conv_table, darknet_cfg, flops, group_of, is_bn_running_stat,
    parse_cfg, trainable_vars, FreezeBody, ParamGroup, YoloBody, YoloConfig,
};
use yolo_testutil::{keras_fixture, read_json};

fn build(cfg: &YoloConfig) -> VarMap {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    YoloBody::new(cfg, vb).unwrap();
    varmap
}

/// Parameters per group, BN moving statistics included (Keras counts them in `count_params`).
fn group_counts(varmap: &VarMap) -> HashMap<ParamGroup, usize> {
    let mut m = HashMap::new();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let g = group_of(name).unwrap_or_else(|| panic!("{name} is in no group"));
        *m.entry(g).or_default() += var.elem_count();
    }
    m
}

fn trainable_count(varmap: &VarMap, cfg: &YoloConfig, f: FreezeBody) -> usize {
    trainable_vars(varmap, cfg, f)
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum()
}

fn u(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn check_groups(file: &str, cfg: YoloConfig) {
    let Some(p) = keras_fixture(&format!("model_layers/{file}")) else {
        return;
    };
    let j = read_json(&p);
    let varmap = build(&cfg);
    let c = group_counts(&varmap);
    let (b, n, h) = (
        c[&ParamGroup::Backbone],
        c[&ParamGroup::Neck],
        c[&ParamGroup::Head],
    );
    let g = &j["groups"];
    assert_eq!(b + n + h, u(&j["total_params"]), "{file}: total");
    assert_eq!(
        b,
        u(&g["freeze_body_1"]["frozen_params"]),
        "{file}: freeze_body_1"
    );
    assert_eq!(
        b + n,
        u(&g["freeze_body_2"]["frozen_params"]),
        "{file}: freeze_body_2"
    );
    assert_eq!(h, u(&g["output_convs"]["params"]), "{file}: output convs");
    assert_eq!(
        trainable_count(&varmap, &cfg, FreezeBody::Body),
        u(&g["freeze_body_1"]["trainable_params_after_freeze"]),
        "{file}: trainable after freeze_body=1"
    );
    assert_eq!(
        trainable_count(&varmap, &cfg, FreezeBody::AllButOutputs),
        u(&g["freeze_body_2"]["trainable_params_after_freeze"]),
        "{file}: trainable after freeze_body=2"
    );
    assert_eq!(
        trainable_count(&varmap, &cfg, FreezeBody::None),
        u(&j["trainable_params_unfrozen"]),
        "{file}: trainable unfrozen"
    );
    // Per output conv, in stride order 32, 16, (8).
    let each: Vec<usize> = g["output_convs"]["params_each"]
        .as_array()
        .unwrap()
        .iter()
        .map(u)
        .collect();
    let data = varmap.data().lock().unwrap();
    for (l, want) in each.iter().enumerate() {
        let got = data[&format!("head.out{l}.weight")].elem_count()
            + data[&format!("head.out{l}.bias")].elem_count();
        assert_eq!(got, *want, "{file}: output conv {l}");
    }
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_body_c80_group_params_equal_keras() {
    check_groups("yolo_body_c80_layers.json", YoloConfig::v3(80));
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_body_c1_group_params_equal_keras() {
    check_groups("yolo_body_c1_layers.json", YoloConfig::v3(1));
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn tiny_yolo_body_c80_group_params_equal_keras() {
    check_groups("tiny_yolo_body_c80_layers.json", YoloConfig::tiny(80));
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn tiny_yolo_body_c1_group_params_equal_keras() {
    check_groups("tiny_yolo_body_c1_layers.json", YoloConfig::tiny(1));
}

/// The conv table (darknet order) equals keras' conv layers sorted by `darknet_conv_index`
/// (creation order): kernel shape, stride and bias use.
fn check_conv_order(file: &str, cfg: YoloConfig) {
    let Some(p) = keras_fixture(&format!("model_layers/{file}")) else {
        return;
    };
    let j = read_json(&p);
    let mut convs: Vec<&Value> = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["class_name"] == "Conv2D")
        .collect();
    convs.sort_by_key(|l| l["darknet_conv_index"].as_u64().unwrap());
    let table = conv_table(&cfg);
    assert_eq!(convs.len(), table.len(), "{file}: conv count");
    for (i, (k, t)) in convs.iter().zip(&table).enumerate() {
        assert_eq!(u(&k["darknet_conv_index"]), i);
        let shape: Vec<usize> = k["weight_shapes"]["kernel"]
            .as_array()
            .unwrap()
            .iter()
            .map(u)
            .collect();
        assert_eq!(
            shape,
            vec![t.size, t.size, t.c_in, t.filters],
            "{file}: conv {i} {}",
            t.name
        );
        assert_eq!(u(&k["strides"][0]), t.stride, "{file}: conv {i} stride");
        assert_eq!(
            k["use_bias"].as_bool().unwrap(),
            !t.batch_norm,
            "{file}: conv {i} bias"
        );
    }
    // Keras' model.layers[249..] (or [42..] for tiny) are the output convs, our head group.
    let heads: Vec<usize> = j["groups"]["output_convs"]["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(u)
        .collect();
    let layers = j["layers"].as_array().unwrap();
    for (l, idx) in heads.iter().enumerate() {
        let i = u(&layers[*idx]["darknet_conv_index"]);
        assert_eq!(table[i].name, format!("head.out{l}"));
    }
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_body_conv_table_follows_keras_creation_order() {
    check_conv_order("yolo_body_c80_layers.json", YoloConfig::v3(80));
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn tiny_conv_table_follows_keras_creation_order() {
    check_conv_order("tiny_yolo_body_c1_layers.json", YoloConfig::tiny(1));
}

#[test]
fn generated_cfgs_parse_back_to_the_conv_table() {
    for cfg in [YoloConfig::v3(80), YoloConfig::v3(1), YoloConfig::tiny(80)] {
        let text = darknet_cfg(&cfg);
        let path = std::path::Path::new("<generated>");
        let sections = parse_cfg(&text, path).unwrap();
        let convs = cfg_convs(&sections, path).unwrap();
        check_cfg_matches(&cfg, &convs, path).unwrap();
    }
    // yolov3.cfg has 107 layers after [net]; yolov3-tiny.cfg has 24.
    let p = std::path::Path::new("x");
    assert_eq!(
        parse_cfg(&darknet_cfg(&YoloConfig::v3(80)), p)
            .unwrap()
            .len(),
        108
    );
    assert_eq!(
        parse_cfg(&darknet_cfg(&YoloConfig::tiny(80)), p)
            .unwrap()
            .len(),
        25
    );
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn generated_tiny_cfg_matches_the_fixture_darknet_sections() {
    let Some(p) = keras_fixture("tiny_yolo_forward/tiny_forward_c80.json") else {
        return;
    };
    let j = read_json(&p);
    let want = j["darknet_sections"].as_array().unwrap();
    let text = darknet_cfg(&YoloConfig::tiny(80));
    let sections = parse_cfg(&text, std::path::Path::new("<generated>")).unwrap();
    assert_eq!(sections.len() - 1, want.len());
    for (s, w) in sections[1..].iter().zip(want) {
        let kind = format!("{:?}", s.kind).to_lowercase();
        assert_eq!(kind, w["type"].as_str().unwrap(), "section {}", w["index"]);
        for key in ["filters", "size", "stride"] {
            if let Some(v) = w.get(key) {
                assert_eq!(
                    s.options[key],
                    v.to_string(),
                    "section {} {key}",
                    w["index"]
                );
            }
        }
        if let Some(layers) = w.get("layers") {
            let got: Vec<i64> = s.options["layers"]
                .split(',')
                .map(|x| x.trim().parse().unwrap())
                .collect();
            let want: Vec<i64> = layers
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn cfg_parser_names_unknown_sections_and_bad_values() {
    let p = std::path::Path::new("my.cfg");
    let err = parse_cfg("[net]\nchannels=3\n\n[dropout]\nprobability=.5\n", p).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("my.cfg:4") && msg.contains("[dropout]"),
        "{msg}"
    );
    let err = parse_cfg("[net]\nchannels 3\n", p).unwrap_err().to_string();
    assert!(
        err.contains("my.cfg:2") && err.contains("key=value"),
        "{err}"
    );
    let s = parse_cfg("[net]\n[convolutional]\nfilters=abc\n", p).unwrap();
    let err = cfg_convs(&s, p).unwrap_err().to_string();
    assert!(
        err.contains("my.cfg:2") && err.contains("filters=abc"),
        "{err}"
    );
    // A cfg with a different class count does not match the model.
    let text = darknet_cfg(&YoloConfig::tiny(80));
    let convs = cfg_convs(&parse_cfg(&text, p).unwrap(), p).unwrap();
    let err = check_cfg_matches(&YoloConfig::tiny(3), &convs, p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head.out0"), "{err}");
}

#[test]
fn trainable_vars_never_include_bn_running_stats_and_are_sorted() {
    let cfg = YoloConfig::tiny(3);
    let varmap = build(&cfg);
    let all = trainable_vars(&varmap, &cfg, FreezeBody::None);
    assert!(all.iter().all(|(n, _)| !is_bn_running_stat(n)));
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    // 11 BN convs x (kernel, gamma, beta) + 2 output convs x (kernel, bias).
    assert_eq!(all.len(), 11 * 3 + 2 * 2);
    let body = trainable_vars(&varmap, &cfg, FreezeBody::Body);
    assert!(body.iter().all(|(n, _)| !n.starts_with("backbone.")));
    assert_eq!(body.len(), 6 * 3 + 2 * 2);
}

#[test]
fn flops_of_yolov3_at_416_is_about_65_9_gflop() {
    let g = flops(&YoloConfig::v3(80), 416, 416) / 1e9;
    assert!((g - 65.86).abs() < 0.1, "{g}");
    let t = flops(&YoloConfig::tiny(80), 416, 416) / 1e9;
    assert!((t - 5.57).abs() < 0.1, "{t}");
}
