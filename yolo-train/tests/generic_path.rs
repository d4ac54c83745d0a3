//! The device-generic code path (candle's own ops, what CUDA and Metal run) forced onto the CPU
//! with [`yolo_train::set_generic_ops`] gives the same training step as the fast CPU kernels:
//! loss and its parts, every gradient, the BatchNorm moving statistics and one Adam update, for
//! tiny YOLOv3 and YOLOv3. One test in its own binary: the switch is process-wide.

mod common;
use common::{boxes, flat, images};

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolo_data::{preprocess_true_boxes, Anchors, InputShape};
use yolo_loss::{yolo_loss, LossConfig};
use yolo_model::{l2_penalty, trainable_vars, FreezeBody, YoloBody, YoloConfig};
use yolo_testutil::relative_l2;
use yolo_train::seeded_glorot_init;
use yolo_train::{Adam, AdamConfig};

/// Everything one step produces.
struct Step {
    loss: f64,
    parts: [f64; 4],
    grads: BTreeMap<String, Vec<f32>>,
    stats: BTreeMap<String, Vec<f32>>,
    weights: BTreeMap<String, Vec<f32>>,
}

/// One all-trainable training step at `size`, batch 2, from seeded weights and a fixed input.
fn step(tiny: bool, size: usize, generic: bool) -> Step {
    step_in(tiny, size, generic, DType::F32)
}

fn step_in(tiny: bool, size: usize, generic: bool, dtype: DType) -> Step {
    yolo_train::set_generic_ops(generic);
    let dev = Device::Cpu;
    let (cfg, anchors) = if tiny {
        (YoloConfig::tiny(3), Anchors::tiny_default())
    } else {
        (YoloConfig::v3(3), Anchors::yolo_default())
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &dev);
    let model = YoloBody::new(&cfg, vb).unwrap();
    seeded_glorot_init(&varmap, 11).unwrap();
    let x = images(size, &dev).to_dtype(dtype).unwrap();
    // The same boxes at every size: those of a 64 x 64 input.
    let boxes = boxes(64);
    let y_true: Vec<Tensor> =
        preprocess_true_boxes(&boxes, InputShape::new(size, size).unwrap(), &anchors, 3)
            .unwrap()
            .iter()
            .map(|y| y.to_tensor(&dev).unwrap())
            .collect();
    // The loss is f32 only; an f64 network feeds it through a cast (which backpropagates).
    let outputs: Vec<Tensor> = model
        .forward_t(&x, true, FreezeBody::None)
        .unwrap()
        .iter()
        .map(|o| o.to_dtype(DType::F32).unwrap())
        .collect();
    let parts = yolo_loss(&outputs, &y_true, &anchors.wh, 3, &LossConfig::default()).unwrap();
    let l2 = l2_penalty(&varmap, &cfg, FreezeBody::None, 5e-4)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let total = (&parts.total + &l2).unwrap();
    let v = parts.values().unwrap();
    let sum = |x: &[f32]| x.iter().map(|v| f64::from(*v)).sum::<f64>();
    let grads = total.backward().unwrap();
    let vars = trainable_vars(&varmap, &cfg, FreezeBody::None);
    let grad_of: BTreeMap<String, Vec<f32>> = vars
        .iter()
        .map(|(k, var)| (k.clone(), flat(grads.get(var.as_tensor()).unwrap())))
        .collect();
    let stats: BTreeMap<String, Vec<f32>> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("running_"))
        .map(|(k, v)| (k.clone(), flat(v.as_tensor())))
        .collect();
    let mut adam = Adam::new(vars.clone(), AdamConfig::default()).unwrap();
    adam.step(&grads).unwrap();
    let weights = vars
        .iter()
        .map(|(k, var)| (k.clone(), flat(var.as_tensor())))
        .collect();
    yolo_train::set_generic_ops(false);
    Step {
        loss: total
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap(),
        parts: [sum(&v.xy), sum(&v.wh), sum(&v.confidence), sum(&v.class)],
        grads: grad_of,
        stats,
        weights,
    }
}

/// Bounds on `|path - reference| / |reference|` (L2 over all tensors) for gradients, moving
/// statistics and weights after Adam. The reference is the generic path in f64 (the loss itself
/// stays f32). Seen: tiny 7e-6 (fast) and 9e-6 (generic) for the gradients; YOLOv3, 53 BatchNorm
/// layers on batch 2 amplifying every rounding difference, 0.8% (fast, as far as im2col is from
/// Winograd) and 2.7% (generic: candle's f32 ops round more).
fn bounds(tiny: bool) -> (f64, f64) {
    if tiny {
        (1e-4, 1e-4)
    } else {
        (0.02, 0.06)
    }
}

#[test]
fn generic_path_matches_the_fast_cpu_kernels_for_tiny_and_yolov3() {
    for (tiny, size) in [(true, 64), (false, 128)] {
        let what = if tiny { "tiny YOLOv3" } else { "YOLOv3" };
        let fast = step(tiny, size, false);
        let generic = step(tiny, size, true);
        let reference = step_in(tiny, size, true, DType::F64);

        // Loss and parts: f32 sums in another order.
        let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(1e-9);
        for s in [&fast, &generic] {
            assert!(
                rel(reference.loss, s.loss) < 1e-4,
                "{what}: loss {} vs {}",
                s.loss,
                reference.loss
            );
            for (k, (a, b)) in reference.parts.iter().zip(&s.parts).enumerate() {
                assert!(rel(*a, *b) < 1e-3, "{what}: part {k}: {b} vs {a}");
            }
        }
        // The same function: the fast f32 path is within f32 rounding of the generic path's
        // f64 run, and the generic f32 run too.
        let (fast_bound, generic_bound) = bounds(tiny);
        for (label, r, f, g) in [
            ("gradients", &reference.grads, &fast.grads, &generic.grads),
            (
                "moving statistics",
                &reference.stats,
                &fast.stats,
                &generic.stats,
            ),
            (
                "weights after Adam",
                &reference.weights,
                &fast.weights,
                &generic.weights,
            ),
        ] {
            assert!(!r.is_empty(), "{what}: no {label}");
            let (df, nf, wf) = relative_l2(r, f);
            let (dg, ng, wg) = relative_l2(r, g);
            eprintln!(
                "{what} {label} against f64: fast {df:.2e} (worst {nf} {wf:.2e}), generic \
                 {dg:.2e} (worst {ng} {wg:.2e})"
            );
            assert!(
                df <= fast_bound,
                "{what} {label}: fast {df:e} > {fast_bound:e}"
            );
            assert!(
                dg <= generic_bound,
                "{what} {label}: generic {dg:e} > {generic_bound:e}"
            );
        }
    }
}
