//! Numerical safety, finite-difference gradients, non-square grids, the agreement of the fused CPU
//! path with the tensor-op path, and argument checks of `yolo_loss`.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{
    all_finite, flat_parts, grads_of, obj, raw_vars, scalar, tensors, to_vec, y_true, Obj, Rng,
    TINY_ANCHORS, YOLO_ANCHORS,
};
use yolo_loss::{yolo_loss, yolo_loss_tensor_ops, LossConfig, LossError};

/// A YOLOv3-shaped batch (grids 2x3, 4x6, 8x12 of a 64x96 input) with a few objects, among them
/// a 1-pixel box, a whole-image box and (image 1) nothing at all.
fn small_yolo_y_true(c: usize) -> Vec<Tensor> {
    let grids = [(2, 3), (4, 6), (8, 12)];
    let objs: [Vec<Obj>; 3] = [
        vec![
            obj(0, 2, 2, 3, [0.5, 0.5, 1.0, 1.0], 0),
            obj(2, 0, 2, 3, [0.7, 0.3, 0.4, 0.5], c - 1),
        ],
        vec![obj(0, 1, 4, 6, [0.3, 0.6, 0.3, 0.2], c / 2)],
        vec![
            obj(0, 0, 8, 12, [0.1, 0.2, 1.0 / 96.0, 1.0 / 64.0], 0),
            obj(2, 1, 8, 12, [0.9, 0.9, 0.05, 0.1], c - 1),
        ],
    ];
    grids
        .iter()
        .zip(&objs)
        .map(|(&(gh, gw), o)| y_true(3, gh, gw, c, o))
        .collect()
}

/// keras-yolo3 relies on TF's stable sigmoid cross-entropy: logits of magnitude 100 (saturated
/// sigmoids, exp overflow in the decoded sizes) must still give a finite loss and gradient.
#[test]
fn logits_of_magnitude_100_give_finite_loss_and_gradients() {
    let c = 3;
    let yt = small_yolo_y_true(c);
    let grids = [(2, 3), (4, 6), (8, 12)];
    let mut rng = Rng::new(7);
    let vars: Vec<Var> = grids
        .iter()
        .map(|&(gh, gw)| {
            let n = 3 * 3 * (5 + c) * gh * gw;
            let v: Vec<f32> = (0..n)
                .map(|_| if rng.uniform() < 0.5 { -100.0 } else { 100.0 })
                .collect();
            Var::from_vec(v, (3, 3 * (5 + c), gh, gw), &Device::Cpu).unwrap()
        })
        .collect();
    let cfg = LossConfig::default();
    for f in [yolo_loss, yolo_loss_tensor_ops] {
        let parts = f(&tensors(&vars), &yt, &YOLO_ANCHORS, c, &cfg).unwrap();
        let v = flat_parts(&parts);
        assert!(all_finite(&v), "parts {v:?}");
        assert!(
            v[0] > 100.0,
            "saturated wrong logits must cost a lot: {}",
            v[0]
        );
        for g in grads_of(&parts, &vars) {
            assert!(all_finite(&g));
        }
    }
}

/// An image batch without any box: keras-yolo3's xy, wh and class terms are 0 and the
/// confidence term is the no-object cross-entropy of every slot (nothing ignored, best IoU -inf).
#[test]
fn empty_batch_is_finite_and_only_the_no_object_term_counts() {
    let c = 2;
    let grids = [(2, 2), (4, 4)];
    let yt: Vec<Tensor> = grids
        .iter()
        .map(|&(h, w)| y_true(2, h, w, c, &[]))
        .collect();
    let vars = raw_vars(2, c, &grids, 30.0, 11);
    for f in [yolo_loss, yolo_loss_tensor_ops] {
        let parts = f(
            &tensors(&vars),
            &yt,
            &TINY_ANCHORS,
            c,
            &LossConfig::default(),
        )
        .unwrap();
        let mut want_total = 0f64;
        for (l, var) in vars.iter().enumerate() {
            assert_eq!(scalar(&parts.xy[l]), 0.0);
            assert_eq!(scalar(&parts.wh[l]), 0.0);
            assert_eq!(scalar(&parts.class[l]), 0.0);
            assert!(to_vec(&parts.ignore_mask[l]).iter().all(|&m| m == 1.0));
            assert!(to_vec(&parts.best_iou[l])
                .iter()
                .all(|&b| b == f32::NEG_INFINITY));
            // softplus(x) = log(1 + exp(x)) of every objectness logit, / m.
            let raw = var
                .as_tensor()
                .reshape((2, 3, 7, grids[l].0 * grids[l].1))
                .unwrap();
            let x4 = to_vec(&raw.narrow(2, 4, 1).unwrap());
            let want: f64 = x4
                .iter()
                .map(|&x| {
                    let x = x as f64;
                    x.max(0.0) + (-x.abs()).exp().ln_1p()
                })
                .sum::<f64>()
                / 2.0;
            let got = scalar(&parts.confidence[l]) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "layer {l}: {got} vs {want}"
            );
            want_total += want;
        }
        let total = scalar(&parts.total) as f64;
        assert!((total - want_total).abs() <= 1e-5 * want_total);
        for g in grads_of(&parts, &vars) {
            assert!(all_finite(&g));
        }
    }
}

/// Boxes far smaller and larger than the anchors, and keras-yolo3's zero-height quirk (a box
/// written with height 0, whose log-size target is -inf in keras-yolo3): finite, with the size
/// target floored at log(1e-9).
#[test]
fn tiny_huge_and_zero_height_boxes_are_finite() {
    let c = 1;
    let grids = [(2, 2), (4, 4)];
    let zero_h = obj(0, 0, 4, 4, [0.4, 0.4, 0.25, 0.0], 0);
    let yt = vec![
        y_true(1, 2, 2, c, &[obj(0, 2, 2, 2, [0.5, 0.5, 1.0, 1.0], 0)]),
        y_true(
            1,
            4,
            4,
            c,
            &[
                zero_h,
                obj(0, 1, 4, 4, [0.9, 0.1, 0.5 / 64.0, 0.5 / 64.0], 0),
            ],
        ),
    ];
    // Raw zero: the wh term is then exactly 0.5 * scale * (tw_target^2 + th_target^2).
    let vars: Vec<Var> = grids
        .iter()
        .map(|&(h, w)| Var::zeros((1, 18, h, w), DType::F32, &Device::Cpu).unwrap())
        .collect();
    for f in [yolo_loss, yolo_loss_tensor_ops] {
        let parts = f(
            &tensors(&vars),
            &yt,
            &TINY_ANCHORS,
            c,
            &LossConfig::default(),
        )
        .unwrap();
        assert!(all_finite(&flat_parts(&parts)));
        for g in grads_of(&parts, &vars) {
            assert!(all_finite(&g));
        }
        // Layer 1 anchors are 1, 2, 3: (23, 27), (37, 58), (81, 82); input 64x64.
        let sq = |x: f32| x * x;
        let zero_h_term = 0.5 * 2.0 * (sq((0.25f32 / 23.0 * 64.0).ln()) + sq(1e-9f32.ln()));
        let small = 2.0 - sq(0.5 / 64.0);
        let small_term = 0.5
            * small
            * (sq((0.5f32 / 64.0 / 37.0 * 64.0).ln()) + sq((0.5f32 / 64.0 / 58.0 * 64.0).ln()));
        let want = zero_h_term + small_term;
        let got = scalar(&parts.wh[1]);
        assert!((got - want).abs() <= 1e-4 * want, "wh[1] {got} vs {want}");
    }
}

fn assert_close(a: &[f32], b: &[f32], abs: f32, rel: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= abs + rel * y.abs().max(x.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// The fused CPU kernel and the tensor-op composition compute the same loss, masks and
/// gradients, here on non-square grids with 80 classes.
#[test]
fn fused_and_tensor_op_paths_agree_on_non_square_grids_with_80_classes() {
    let c = 80;
    let yt = small_yolo_y_true(c);
    let grids = [(2, 3), (4, 6), (8, 12)];
    let vars = raw_vars(3, c, &grids, 1.5, 3);
    let cfg = LossConfig {
        ignore_thresh: 0.3,
        ..LossConfig::default()
    };
    let a = yolo_loss(&tensors(&vars), &yt, &YOLO_ANCHORS, c, &cfg).unwrap();
    let b = yolo_loss_tensor_ops(&tensors(&vars), &yt, &YOLO_ANCHORS, c, &cfg).unwrap();
    assert_close(&flat_parts(&a), &flat_parts(&b), 1e-4, 1e-5, "parts");
    for (l, &(gh, gw)) in grids.iter().enumerate() {
        assert_eq!(a.ignore_mask[l].dims(), &[3, gh, gw, 3]);
        assert_eq!(
            to_vec(&a.ignore_mask[l]),
            to_vec(&b.ignore_mask[l]),
            "mask {l}"
        );
        let (ba, bb) = (to_vec(&a.best_iou[l]), to_vec(&b.best_iou[l]));
        for (x, y) in ba.iter().zip(&bb) {
            assert!(x == y || (x - y).abs() <= 1e-6, "best iou {x} vs {y}");
        }
    }
    let (ga, gb) = (grads_of(&a, &vars), grads_of(&b, &vars));
    for l in 0..3 {
        assert_close(&ga[l], &gb[l], 1e-6, 1e-4, &format!("grad {l}"));
    }
}

/// Central finite differences of the total against the backward pass, on a tiny tiny-YOLO case
/// (grids 2x2 and 4x4, 2 classes, 2 images). Elements whose perturbation flips the ignore mask
/// (which carries no gradient, as in keras-yolo3) are skipped; there must be few.
#[test]
fn finite_differences_match_backprop_on_a_tiny_case() {
    let c = 2;
    let grids = [(2, 2), (4, 4)];
    let yt = vec![
        y_true(
            2,
            2,
            2,
            c,
            &[
                obj(0, 0, 2, 2, [0.3, 0.6, 0.8, 0.7], 1),
                obj(1, 2, 2, 2, [0.6, 0.4, 0.9, 0.9], 0),
            ],
        ),
        y_true(2, 4, 4, c, &[obj(0, 1, 4, 4, [0.6, 0.2, 0.4, 0.5], 0)]),
    ];
    let vars = raw_vars(2, c, &grids, 1.0, 5);
    let cfg = LossConfig {
        ignore_thresh: 0.5,
        ..LossConfig::default()
    };
    let parts = yolo_loss(&tensors(&vars), &yt, &TINY_ANCHORS, c, &cfg).unwrap();
    let analytic = grads_of(&parts, &vars);
    let eval = |raws: &[Tensor]| {
        let p = yolo_loss(raws, &yt, &TINY_ANCHORS, c, &cfg).unwrap();
        let masks: Vec<Vec<f32>> = p.ignore_mask.iter().map(to_vec).collect();
        (scalar(&p.total) as f64, masks)
    };
    let eps = 1e-2f32;
    let mut skipped = 0;
    let mut checked = 0;
    for l in 0..2 {
        let base = to_vec(vars[l].as_tensor());
        let shape = vars[l].as_tensor().shape().clone();
        for e in 0..base.len() {
            let at = |delta: f32| {
                let mut v = base.clone();
                v[e] += delta;
                let mut raws = tensors(&vars);
                raws[l] = Tensor::from_vec(v, &shape, &Device::Cpu).unwrap();
                eval(&raws)
            };
            let ((fp, mp), (fm, mm)) = (at(eps), at(-eps));
            if mp != mm {
                skipped += 1;
                continue;
            }
            let fd = ((fp - fm) / (2.0 * eps as f64)) as f32;
            let an = analytic[l][e];
            assert!(
                (fd - an).abs() <= 2e-3 + 1e-2 * an.abs(),
                "layer {l} element {e}: finite difference {fd} vs backprop {an}"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 800 && skipped < 10,
        "checked {checked}, skipped {skipped}"
    );
}

#[test]
fn bad_arguments_give_clear_errors() {
    let c = 1;
    let grids = [(2, 2), (4, 4)];
    let yt: Vec<Tensor> = grids
        .iter()
        .map(|&(h, w)| y_true(1, h, w, c, &[]))
        .collect();
    let raws = tensors(&raw_vars(1, c, &grids, 1.0, 1));
    let cfg = LossConfig::default();
    // 9 anchors for 2 outputs.
    let e = yolo_loss(&raws, &yt, &YOLO_ANCHORS, c, &cfg).unwrap_err();
    assert!(matches!(e, LossError::Anchors(_)), "{e}");
    assert!(e.to_string().contains("need 6 anchors, got 9"), "{e}");
    // y_true of the wrong grid.
    let swapped = vec![yt[1].clone(), yt[0].clone()];
    let e = yolo_loss(&raws, &swapped, &TINY_ANCHORS, c, &cfg).unwrap_err();
    assert!(e.to_string().contains("y_true[0]"), "{e}");
    // Wrong class count.
    let e = yolo_loss(&raws, &yt, &TINY_ANCHORS, 2, &cfg).unwrap_err();
    assert!(e.to_string().contains("outputs[0]"), "{e}");
    // f64 y_true.
    let y64: Vec<Tensor> = yt.iter().map(|t| t.to_dtype(DType::F64).unwrap()).collect();
    let e = yolo_loss(&raws, &y64, &TINY_ANCHORS, c, &cfg).unwrap_err();
    assert!(matches!(e, LossError::DType { .. }), "{e}");
    // One output only.
    let e = yolo_loss(&raws[..1], &yt[..1], &TINY_ANCHORS[..3], c, &cfg).unwrap_err();
    assert!(e.to_string().contains("got 1"), "{e}");
}

/// The default is train_bottleneck.py's `ignore_thresh=.5`; the config is plain serde data.
#[test]
fn loss_config_defaults_to_keras_and_reads_json() {
    assert_eq!(LossConfig::default().ignore_thresh, 0.5);
    let c: LossConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, LossConfig::default());
    let c: LossConfig = serde_json::from_str(r#"{"ignore_thresh": 0.7}"#).unwrap();
    assert_eq!(c.ignore_thresh, 0.7);
}

/// Raw outputs that are strided views (an NHWC tensor permuted to NCHW, as a Keras-layout model
/// would give) produce the same loss, and the gradient reaches the NHWC tensor.
#[test]
fn strided_raw_outputs_give_the_same_loss_and_gradients() {
    let c = 2;
    let grids = [(2, 3), (4, 6)];
    let yt = vec![
        y_true(2, 2, 3, c, &[obj(1, 0, 2, 3, [0.4, 0.6, 0.5, 0.6], 1)]),
        y_true(2, 4, 6, c, &[obj(0, 2, 4, 6, [0.7, 0.3, 0.2, 0.25], 0)]),
    ];
    let vars = raw_vars(2, c, &grids, 1.0, 9);
    let cfg = LossConfig::default();
    let want = yolo_loss(&tensors(&vars), &yt, &TINY_ANCHORS, c, &cfg).unwrap();
    let want_grads = grads_of(&want, &vars);
    // The same values stored NHWC.
    let nhwc: Vec<Var> = vars
        .iter()
        .map(|v| {
            Var::from_tensor(
                &v.as_tensor()
                    .permute((0, 2, 3, 1))
                    .unwrap()
                    .contiguous()
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let views: Vec<Tensor> = nhwc
        .iter()
        .map(|v| v.as_tensor().permute((0, 3, 1, 2)).unwrap())
        .collect();
    assert!(!views[0].is_contiguous());
    for f in [yolo_loss, yolo_loss_tensor_ops] {
        let got = f(&views, &yt, &TINY_ANCHORS, c, &cfg).unwrap();
        assert_close(&flat_parts(&got), &flat_parts(&want), 1e-5, 1e-5, "parts");
        let g = got.total.backward().unwrap();
        for (l, v) in nhwc.iter().enumerate() {
            let back = g
                .get(v.as_tensor())
                .expect("gradient reaches the NHWC tensor")
                .permute((0, 3, 1, 2))
                .unwrap();
            assert_close(&to_vec(&back), &want_grads[l], 1e-6, 1e-4, "grad");
        }
    }
}
