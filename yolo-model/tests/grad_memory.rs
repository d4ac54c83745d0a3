//! The gradients a training step hands to the optimizer must be plain tensors: a gradient that
//! still records a backward graph keeps every intermediate of that graph alive until the gradient
//! store is dropped. candle's composed `w.sqr().sum_all()` did that for keras-yolo3's L2 kernel
//! penalty (`l2(5e-4)`): about six kernel-sized buffers per kernel, 1.5 GB of YOLOv3's all-trainable
//! step at batch 4.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{l2_penalty, tiny_yolo_body, trainable_vars, FreezeBody, YoloConfig};

/// The values of `t`, flattened.
fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn tiny() -> (VarMap, yolo_model::YoloBody, YoloConfig) {
    let cfg = YoloConfig::tiny(1);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = tiny_yolo_body(&cfg, vb).unwrap();
    (varmap, model, cfg)
}

#[test]
fn l2_penalty_gradient_is_two_weight_w_bit_for_bit_and_records_no_graph() {
    let (varmap, _, cfg) = tiny();
    let weight = 5e-4;
    let p = l2_penalty(&varmap, &cfg, FreezeBody::None, weight).unwrap();
    let grads = p.backward().unwrap();
    let mut kernels = 0;
    for (name, var) in trainable_vars(&varmap, &cfg, FreezeBody::None) {
        let g = grads.get(var.as_tensor());
        if !yolo_model::is_conv_kernel(&name) {
            assert!(g.is_none(), "{name} is not regularised but got a gradient");
            continue;
        }
        kernels += 1;
        let g = g.unwrap_or_else(|| panic!("no L2 gradient for {name}"));
        assert!(!g.track_op(), "the L2 gradient of {name} records a graph");
        // candle's composed `sqr().sum_all() * weight` gives `(w * weight) * 2`.
        let w = values(var.as_tensor());
        let got = values(g);
        for (i, (&w, &got)) in w.iter().zip(&got).enumerate() {
            assert_eq!(got, (w * weight as f32) * 2.0, "{name}[{i}]");
        }
    }
    assert_eq!(
        kernels, 13,
        "tiny YOLOv3 has 11 hidden and 2 output conv kernels"
    );
}

#[test]
fn l2_penalty_value_is_the_f64_sum_of_squares_to_f32_precision() {
    let (varmap, _, cfg) = tiny();
    let p = l2_penalty(&varmap, &cfg, FreezeBody::Body, 5e-4)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let mut want = 0f64;
    for (name, var) in trainable_vars(&varmap, &cfg, FreezeBody::Body) {
        if yolo_model::is_conv_kernel(&name) {
            let w = values(var.as_tensor());
            want += w.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        }
    }
    want *= 5e-4;
    assert!(p > 0.0);
    // Each kernel's sum is accumulated in f64 and rounded once (candle's f32 `sum_all` was off by
    // 8e-6 relative on this model).
    assert!((p - want).abs() <= 1e-6 * want, "{p} vs {want}");
}

#[test]
fn every_gradient_of_a_training_step_with_l2_is_a_plain_tensor() {
    // Convs, fused BatchNorm + leaky, max pools, upsampling, concatenation, output biases and the
    // L2 penalty: the gradient of every trainable variable must hold no backward graph.
    let (varmap, model, cfg) = tiny();
    let x = Tensor::rand(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let outs = model.forward_t(&x, true, FreezeBody::None).unwrap();
    let mut loss = l2_penalty(&varmap, &cfg, FreezeBody::None, 5e-4).unwrap();
    for o in &outs {
        loss = (loss + o.sqr().unwrap().mean_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let vars = trainable_vars(&varmap, &cfg, FreezeBody::None);
    assert!(vars.len() > 30);
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(!g.track_op(), "the gradient of {name} records a graph");
        assert_eq!(g.dims(), var.dims(), "{name}");
    }
}
