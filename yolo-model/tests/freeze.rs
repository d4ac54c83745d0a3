//! Freezing (keras-yolo3's `freeze_body`), BatchNorm modes, the bottleneck split, the L2 penalty
//! and input shapes.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap, SGD};
use yolo_model::{
    l2_penalty, trainable_vars, FreezeBody, KerasBatchNorm, YoloBody, YoloConfig, BN_EPSILON,
};

fn build(cfg: &YoloConfig) -> (VarMap, YoloBody) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = YoloBody::new(cfg, vb).unwrap();
    (varmap, model)
}

fn input(n: usize, h: usize, w: usize) -> Tensor {
    let len = n * 3 * h * w;
    let v: Vec<f32> = (0..len)
        .map(|i| ((i as u64 * 2654435761 % 1000) as f32) / 1000.0)
        .collect();
    Tensor::from_vec(v, (n, 3, h, w), &Device::Cpu).unwrap()
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

fn snapshot(varmap: &VarMap) -> HashMap<String, Vec<u32>> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), bits(v.as_tensor())))
        .collect()
}

/// One SGD step on `sum(outputs^2)` under `freeze`; returns the names of the variables that
/// changed.
fn step_and_diff(cfg: YoloConfig, freeze: FreezeBody, h: usize, w: usize) -> Vec<String> {
    let (varmap, model) = build(&cfg);
    let before = snapshot(&varmap);
    let vars: Vec<_> = trainable_vars(&varmap, &cfg, freeze)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut sgd = SGD::new(vars, 1e-3).unwrap();
    let outs = model.forward_t(&input(2, h, w), true, freeze).unwrap();
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for o in &outs {
        loss = (loss + o.sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    // The frozen prefix built no graph: no gradient reaches any frozen variable.
    let trainable_names: Vec<String> = trainable_vars(&varmap, &cfg, freeze)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let trainable = trainable_names.contains(name);
        if !trainable && !name.ends_with("running_mean") && !name.ends_with("running_var") {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "gradient for frozen {name}"
            );
        }
    }
    sgd.step(&grads).unwrap();
    let after = snapshot(&varmap);
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before[*k] != **v)
        .map(|(k, _)| k.clone())
        .collect();
    changed.sort();
    changed
}

#[test]
fn freeze_body_2_sgd_step_changes_only_the_output_convs_tiny() {
    let changed = step_and_diff(YoloConfig::tiny(3), FreezeBody::AllButOutputs, 64, 64);
    assert_eq!(
        changed,
        [
            "head.out0.bias",
            "head.out0.weight",
            "head.out1.bias",
            "head.out1.weight"
        ]
    );
}

#[test]
fn freeze_body_2_sgd_step_changes_only_the_output_convs_yolov3() {
    let changed = step_and_diff(YoloConfig::v3(2), FreezeBody::AllButOutputs, 64, 64);
    let want: Vec<String> = (0..3)
        .flat_map(|l| [format!("head.out{l}.bias"), format!("head.out{l}.weight")])
        .collect();
    assert_eq!(changed, want);
}

#[test]
fn freeze_body_1_step_keeps_the_backbone_and_its_bn_stats_and_trains_the_rest() {
    let cfg = YoloConfig::tiny(3);
    let changed = step_and_diff(cfg, FreezeBody::Body, 64, 64);
    assert!(
        changed.iter().all(|n| !n.starts_with("backbone.")),
        "{changed:?}"
    );
    // Every non-backbone variable moves: weights by SGD, BN statistics by the training pass.
    let (varmap, _) = build(&cfg);
    let n_rest = varmap
        .data()
        .lock()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("backbone."))
        .count();
    assert_eq!(changed.len(), n_rest);
    assert!(changed.contains(&"neck.conv6.bn.running_mean".to_string()));
}

#[test]
fn freeze_none_training_pass_updates_backbone_bn_stats() {
    let changed = step_and_diff(YoloConfig::tiny(3), FreezeBody::None, 64, 64);
    assert!(changed.contains(&"backbone.conv0.bn.running_var".to_string()));
    assert!(changed.contains(&"backbone.conv0.conv.weight".to_string()));
}

#[test]
fn inference_mode_leaves_every_variable_unchanged() {
    let (varmap, model) = build(&YoloConfig::tiny(3));
    let before = snapshot(&varmap);
    model
        .forward_t(&input(2, 64, 64), false, FreezeBody::None)
        .unwrap();
    assert_eq!(before, snapshot(&varmap));
}

/// Inference mode (frozen layers, validation, detection, the bottleneck features) builds no
/// gradient graph, so a frozen prefix frees its activations layer by layer: only the output
/// convs, which always train, can receive a gradient through `forward_t(.., false, ..)`.
#[test]
fn inference_mode_builds_no_gradient_graph_except_for_the_output_convs() {
    let cfg = YoloConfig::tiny(3);
    let (varmap, model) = build(&cfg);
    let outs = model
        .forward_t(&input(1, 64, 64), false, FreezeBody::None)
        .unwrap();
    let loss = outs
        .iter()
        .map(|o| o.sqr().unwrap().sum_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    let mut with_grad: Vec<String> = vars
        .iter()
        .filter(|(_, v)| grads.get(v.as_tensor()).is_some())
        .map(|(n, _)| n.clone())
        .collect();
    with_grad.sort();
    assert_eq!(
        with_grad,
        vec![
            "head.out0.bias",
            "head.out0.weight",
            "head.out1.bias",
            "head.out1.weight"
        ]
    );
}

#[test]
fn forward_equals_forward_last_of_forward_bottleneck_bit_for_bit() {
    for cfg in [YoloConfig::v3(3), YoloConfig::tiny(3)] {
        let (_, model) = build(&cfg);
        let x = input(1, 64, 96);
        let feats = model.forward_bottleneck(&x).unwrap();
        let chans: Vec<usize> = feats.iter().map(|f| f.dim(1).unwrap()).collect();
        assert_eq!(chans, cfg.bottleneck_channels());
        let split = model.forward_last(&feats).unwrap();
        let full = model.forward(&x).unwrap();
        for (a, b) in split.iter().zip(&full) {
            assert_eq!(bits(a), bits(b));
        }
        // Freezing does not change inference-mode values either.
        let frozen = model
            .forward_t(&x, false, FreezeBody::AllButOutputs)
            .unwrap();
        for (a, b) in frozen.iter().zip(&full) {
            assert_eq!(bits(a), bits(b));
        }
    }
}

#[test]
fn non_square_input_gives_h_by_w_grids_for_every_stride() {
    let (_, v3) = build(&YoloConfig::v3(3));
    let shapes: Vec<Vec<usize>> = v3
        .forward(&input(1, 64, 96))
        .unwrap()
        .iter()
        .map(|t| t.dims().to_vec())
        .collect();
    assert_eq!(
        shapes,
        vec![vec![1, 24, 2, 3], vec![1, 24, 4, 6], vec![1, 24, 8, 12]]
    );
    let (_, tiny) = build(&YoloConfig::tiny(1));
    let shapes: Vec<Vec<usize>> = tiny
        .forward(&input(2, 96, 64))
        .unwrap()
        .iter()
        .map(|t| t.dims().to_vec())
        .collect();
    assert_eq!(shapes, vec![vec![2, 18, 3, 2], vec![2, 18, 6, 4]]);
}

#[test]
fn input_size_not_a_multiple_of_32_is_an_error() {
    let (_, tiny) = build(&YoloConfig::tiny(1));
    let err = tiny.forward(&input(1, 64, 80)).unwrap_err().to_string();
    assert!(
        err.contains("multiples of 32") && err.contains("64, 80"),
        "{err}"
    );
}

#[test]
fn keras_batch_norm_training_uses_batch_stats_and_updates_moving_stats_like_keras_2_1_5() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let bn = KerasBatchNorm::new(2, vb).unwrap();
    // Channel 0: 1, 2, 3, 4 (mean 2.5, biased var 1.25); channel 1: 10, 10, 10, 14 (mean 11, var 3).
    let x = Tensor::from_vec(
        vec![1f32, 2., 10., 10., 3., 4., 10., 14.],
        (2, 2, 1, 2),
        &Device::Cpu,
    )
    .unwrap();
    let y = bn.forward_t(&x, true).unwrap();
    let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let expect0 = (1.0 - 2.5) / (1.25f64 + BN_EPSILON).sqrt();
    assert!((y[0] as f64 - expect0).abs() < 1e-6, "{y:?}");
    let expect3 = (10.0 - 11.0) / (3.0f64 + BN_EPSILON).sqrt();
    assert!((y[2] as f64 - expect3).abs() < 1e-6, "{y:?}");
    // moving = 0.99 * moving + 0.01 * stat; variance times n / (n - 1 - eps), n = 4.
    let rm = bn.running_mean().to_vec1::<f32>().unwrap();
    let rv = bn.running_var().to_vec1::<f32>().unwrap();
    assert!((rm[0] as f64 - 0.025).abs() < 1e-7 && (rm[1] as f64 - 0.11).abs() < 1e-7);
    let corr = 4.0 / (4.0 - 1.0 - BN_EPSILON);
    assert!(
        (rv[0] as f64 - (0.99 + 0.01 * 1.25 * corr)).abs() < 1e-6,
        "{rv:?}"
    );
    assert!(
        (rv[1] as f64 - (0.99 + 0.01 * 3.0 * corr)).abs() < 1e-6,
        "{rv:?}"
    );
    // The VarMap's variables are the ones updated (so checkpoints carry them).
    let d = varmap.data().lock().unwrap();
    assert_eq!(d["running_mean"].as_tensor().to_vec1::<f32>().unwrap(), rm);
}

#[test]
fn l2_penalty_is_5e_4_times_squared_trainable_kernels() {
    let cfg = YoloConfig::tiny(2);
    let (varmap, _) = build(&cfg);
    let p = l2_penalty(&varmap, &cfg, FreezeBody::AllButOutputs, 5e-4)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let d = varmap.data().lock().unwrap();
    let sq = |n: &str| -> f64 {
        let v = d[n]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        v.iter().map(|x| (*x as f64).powi(2)).sum()
    };
    let want = 5e-4 * (sq("head.out0.weight") + sq("head.out1.weight"));
    assert!((p - want).abs() < 1e-6 * want.max(1e-12), "{p} vs {want}");
    // Unfrozen: every conv kernel, and never a BN parameter or a bias.
    let all: f64 = d
        .keys()
        .filter(|k| {
            k.ends_with("conv.weight") || k.starts_with("head.out") && k.ends_with("weight")
        })
        .map(|k| sq(k))
        .sum();
    drop(d);
    let p0 = l2_penalty(&varmap, &cfg, FreezeBody::None, 5e-4)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!(
        (p0 - 5e-4 * all).abs() < 1e-5 * p0,
        "{p0} vs {}",
        5e-4 * all
    );
}

#[test]
fn conv_bn_leaky_fused_path_matches_the_composed_candle_reference() {
    use yolo_model::ConvBnLeaky;
    for train in [false, true] {
        let (vm_a, vm_b) = (VarMap::new(), VarMap::new());
        let vb_a = VarBuilder::from_varmap(&vm_a, DType::F32, &Device::Cpu);
        let a = ConvBnLeaky::new(3, 8, 3, 2, vb_a).unwrap();
        // Same initial values in a second map.
        let vb_b = VarBuilder::from_varmap(&vm_b, DType::F32, &Device::Cpu);
        let b = ConvBnLeaky::new(3, 8, 3, 2, vb_b).unwrap();
        for (name, var) in vm_a.data().lock().unwrap().iter() {
            vm_b.data().lock().unwrap()[name]
                .set(var.as_tensor())
                .unwrap();
        }
        // Move the moving stats off 0/1 so inference mode is a real test.
        a.forward_t(&input(2, 32, 32), true).unwrap();
        b.forward_t_reference(&input(2, 32, 32), true).unwrap();
        let x = input(2, 32, 64);
        let ya = a.forward_t(&x, train).unwrap();
        let yb = b.forward_t_reference(&x, train).unwrap();
        let d = (ya - yb).unwrap().abs().unwrap().flatten_all().unwrap();
        let d = d.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "train={train}: max diff {d}");
        for s in ["running_mean", "running_var"] {
            let ra = vm_a.data().lock().unwrap()[&format!("bn.{s}")]
                .as_tensor()
                .clone();
            let rb = vm_b.data().lock().unwrap()[&format!("bn.{s}")]
                .as_tensor()
                .clone();
            let d = (ra - rb).unwrap().abs().unwrap().max(0).unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{s}");
        }
    }
}

/// After a short run from scratch, Keras' momentum-0.99 moving statistics lag the weights, so
/// inference mode disagrees with training mode; `recalibrate_batch_norm` replaces them with the
/// current batch statistics and the two modes agree again (up to the unbiased-variance factor).
#[test]
fn recalibrated_batch_norm_makes_inference_match_training_mode() {
    let (_varmap, model) = build(&YoloConfig::tiny(3));
    let x = input(4, 128, 128);
    let rel_gap = |model: &YoloBody| -> f32 {
        let train = model.forward_t(&x, true, FreezeBody::None).unwrap();
        let eval = model.forward_t(&x, false, FreezeBody::None).unwrap();
        let mut worst = 0f32;
        for (t, e) in train.iter().zip(&eval) {
            let scale = t
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = (t - e).unwrap().abs().unwrap().max_all().unwrap();
            worst = worst.max(d.to_scalar::<f32>().unwrap() / scale);
        }
        worst
    };
    // Fresh moving statistics (mean 0, variance 1) are far from this input's.
    let before = rel_gap(&model);
    assert!(before > 0.5, "gap before recalibration {before}");
    model
        .recalibrate_batch_norm(std::slice::from_ref(&x))
        .unwrap();
    let after = rel_gap(&model);
    // What remains is the unbiased-variance factor n/(n-1) of the small deep layers.
    assert!(
        after < before / 5.0 && after < 0.1,
        "gap after recalibration {after} (before {before})"
    );
}
