//! The loss options beyond keras-yolo3: label smoothing of the class targets and the GIoU / CIoU
//! box terms. Both are off by default (keras-yolo3's numbers, checked by `loss_golden.rs`).

mod common;

use candle_core::{Device, Tensor, Var};
use common::{
    all_finite, flat_parts, grads_of, obj, raw_vars, scalar, tensors, to_vec, y_true, TINY_ANCHORS,
};
use yolo_loss::{box_ciou, box_giou, yolo_loss, yolo_loss_tensor_ops, BoxLoss, LossConfig};

fn assert_close(a: &[f32], b: &[f32], abs: f32, rel: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= abs + rel * y.abs().max(x.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// A tiny-YOLO batch (grids 2x3 and 4x6 of a 64x96 input, 3 classes, 2 images) with a few
/// objects, image 1 of layer 0 empty.
fn tiny_case() -> (Vec<Tensor>, Vec<Var>, usize) {
    let c = 3;
    let yt = vec![
        y_true(
            2,
            2,
            3,
            c,
            &[
                obj(0, 0, 2, 3, [0.3, 0.6, 0.5, 0.7], 2),
                obj(0, 2, 2, 3, [0.8, 0.2, 0.9, 0.4], 0),
            ],
        ),
        y_true(
            2,
            4,
            6,
            c,
            &[
                obj(0, 1, 4, 6, [0.6, 0.2, 0.2, 0.25], 1),
                obj(1, 0, 4, 6, [0.1, 0.9, 0.1, 0.05], 2),
            ],
        ),
    ];
    (yt, raw_vars(2, c, &[(2, 3), (4, 6)], 1.0, 11), c)
}

fn smoothing(eps: f32) -> LossConfig {
    LossConfig {
        label_smoothing: eps,
        ..LossConfig::default()
    }
}

/// With label smoothing the fused CPU kernel (its forward and hand-written backward) and the
/// tensor-op path still agree on every component and every gradient.
#[test]
fn label_smoothing_fused_and_tensor_op_paths_agree() {
    let (yt, vars, c) = tiny_case();
    let cfg = smoothing(0.1);
    let a = yolo_loss(&tensors(&vars), &yt, &TINY_ANCHORS, c, &cfg).unwrap();
    let b = yolo_loss_tensor_ops(&tensors(&vars), &yt, &TINY_ANCHORS, c, &cfg).unwrap();
    assert_close(&flat_parts(&a), &flat_parts(&b), 1e-5, 1e-5, "parts");
    let (ga, gb) = (grads_of(&a, &vars), grads_of(&b, &vars));
    for l in 0..2 {
        assert_close(&ga[l], &gb[l], 1e-6, 1e-4, &format!("grad {l}"));
    }
    // Smoothing changes the class term only.
    let d = yolo_loss(
        &tensors(&vars),
        &yt,
        &TINY_ANCHORS,
        c,
        &LossConfig::default(),
    )
    .unwrap();
    let (va, vd) = (a.values().unwrap(), d.values().unwrap());
    assert_eq!(
        (&va.xy, &va.wh, &va.confidence),
        (&vd.xy, &vd.wh, &vd.confidence)
    );
    assert!(va.class.iter().zip(&vd.class).all(|(x, y)| x != y));
}

/// `label_smoothing = 0` is the default and gives bit-identical losses and gradients on both
/// paths (the smoothing is skipped, not multiplied by 1 and shifted by 0).
#[test]
fn zero_label_smoothing_is_bit_identical_to_the_default() {
    let (yt, vars, c) = tiny_case();
    assert_eq!(LossConfig::default().label_smoothing, 0.0);
    for f in [yolo_loss, yolo_loss_tensor_ops] {
        let a = f(&tensors(&vars), &yt, &TINY_ANCHORS, c, &smoothing(0.0)).unwrap();
        let b = f(
            &tensors(&vars),
            &yt,
            &TINY_ANCHORS,
            c,
            &LossConfig::default(),
        )
        .unwrap();
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(flat_parts(&a)), bits(flat_parts(&b)));
        for (x, y) in grads_of(&a, &vars).into_iter().zip(grads_of(&b, &vars)) {
            assert_eq!(bits(x), bits(y));
        }
    }
}

/// One object, one assigned cell, by hand: the class term is `bce(x5, eps/2) + bce(x6, 1 -
/// eps/2)` (class 1 is the true one) and its gradients are `sigmoid(x) - target`.
#[test]
fn label_smoothing_single_cell_matches_hand_computation() {
    let c = 2;
    let k = 5 + c;
    let eps = 0.1f32;
    let (x5, x6) = (1.0f32, -2.0f32);
    // Layer 0 is 1x1 (a 32x32 input), anchor slot 0; layer 1 (2x2) has no object.
    let yt = vec![
        y_true(1, 1, 1, c, &[obj(0, 0, 1, 1, [0.5, 0.5, 0.4, 0.3], 1)]),
        y_true(1, 2, 2, c, &[]),
    ];
    let mut raw0 = vec![0f32; 3 * k];
    raw0[5] = x5;
    raw0[6] = x6;
    let vars = vec![
        Var::from_vec(raw0, (1, 3 * k, 1, 1), &Device::Cpu).unwrap(),
        Var::from_vec(vec![0f32; 3 * k * 4], (1, 3 * k, 2, 2), &Device::Cpu).unwrap(),
    ];
    let bce = |x: f64, z: f64| x.max(0.0) - x * z + (1.0 + (-x.abs()).exp()).ln();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (neg, pos) = (eps as f64 / 2.0, 1.0 - eps as f64 / 2.0);
    let want = bce(x5 as f64, neg) + bce(x6 as f64, pos);
    for f in [yolo_loss, yolo_loss_tensor_ops] {
        let p = f(&tensors(&vars), &yt, &TINY_ANCHORS, c, &smoothing(eps)).unwrap();
        let got = scalar(&p.class[0]) as f64;
        assert!((got - want).abs() < 1e-6, "class term {got} vs {want}");
        assert_eq!(scalar(&p.class[1]), 0.0);
        let g = grads_of(&p, &vars);
        assert!((g[0][5] as f64 - (sig(x5 as f64) - neg)).abs() < 1e-6);
        assert!((g[0][6] as f64 - (sig(x6 as f64) - pos)).abs() < 1e-6);
        assert!(all_finite(&g[0]) && all_finite(&g[1]));
    }
}

fn with_box(box_loss: BoxLoss) -> LossConfig {
    LossConfig {
        box_loss,
        ..LossConfig::default()
    }
}

fn boxes(v: &[[f32; 4]]) -> Tensor {
    let flat: Vec<f32> = v.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (v.len(), 4), &Device::Cpu).unwrap()
}

/// GIoU is 1 for identical boxes, negative for disjoint ones (here by hand: no overlap, union
/// 0.08, enclosing box 0.8 x 0.8, so `-(0.64 - 0.08) / 0.64`); CIoU is 1 for identical boxes
/// too, `-rho^2 / c^2` for the disjoint pair, and both are finite for zero-size boxes.
#[test]
fn giou_is_one_for_identical_boxes_and_negative_for_disjoint_ones() {
    let a = boxes(&[
        [0.3, 0.4, 0.2, 0.5],
        [0.2, 0.2, 0.2, 0.2],
        [0.5, 0.5, 0.3, 0.0],
    ]);
    let b = boxes(&[
        [0.3, 0.4, 0.2, 0.5],
        [0.8, 0.8, 0.2, 0.2],
        [0.5, 0.5, 0.0, 0.0],
    ]);
    let g = to_vec(&box_giou(&a, &b).unwrap());
    // 1 up to the 1e-7 guard of the union (area 0.1 here).
    assert!((g[0] - 1.0).abs() < 1e-5, "identical: {}", g[0]);
    assert!(
        g[1] < 0.0 && (g[1] - -0.875).abs() < 1e-6,
        "disjoint: {}",
        g[1]
    );
    assert!(g[2].is_finite(), "zero-size: {}", g[2]);
    let c = to_vec(&box_ciou(&a, &b).unwrap());
    assert!((c[0] - 1.0).abs() < 1e-5, "identical: {}", c[0]);
    // Disjoint, same aspect: only the centre term, 0.6^2 * 2 / (0.8^2 * 2).
    assert!((c[1] - -0.5625).abs() < 1e-6, "disjoint: {}", c[1]);
    assert!(c[2].is_finite(), "zero-size: {}", c[2]);
}

/// CIoU of one pair against the formula evaluated by hand in f64 (with the std `atan`).
#[test]
fn ciou_matches_a_hand_computation() {
    let (a, b) = ([0.5f64, 0.5, 0.4, 0.2], [0.6f64, 0.45, 0.3, 0.3]);
    let got = scalar(
        &box_ciou(
            &boxes(&[a.map(|v| v as f32)]),
            &boxes(&[b.map(|v| v as f32)]),
        )
        .unwrap()
        .squeeze(0)
        .unwrap(),
    ) as f64;
    // a spans x [0.3, 0.7], y [0.4, 0.6]; b spans x [0.45, 0.75], y [0.3, 0.6].
    let inter = (0.7 - 0.45) * (0.6 - 0.4);
    let union = 0.4 * 0.2 + 0.3 * 0.3 - inter;
    let iou = inter / union;
    let c2 = (0.75f64 - 0.3).powi(2) + (0.6f64 - 0.3).powi(2);
    let rho2 = 0.1f64.powi(2) + 0.05f64.powi(2);
    let v = 4.0 / std::f64::consts::PI.powi(2)
        * ((0.3f64 / 0.3).atan() - (0.4f64 / 0.2).atan()).powi(2);
    let alpha = v / (1.0 - iou + v);
    let want = iou - rho2 / c2 - alpha * v;
    assert!((got - want).abs() < 2e-6, "ciou {got} vs hand {want}");
}

/// A tiny-YOLO batch whose one object (layer 0, 1x1 grid of a 32x32 input, anchor slot 0 =
/// anchor 3 = 81x82) the raw outputs predict exactly: `sigmoid(0) = 0.5` puts the centre at the
/// cell's middle and `exp(tw) * 81 / 32 = w`.
fn perfect_case(xywh: [f32; 4]) -> (Vec<Tensor>, Vec<Var>) {
    let c = 1;
    let k = 5 + c;
    let yt = vec![
        y_true(1, 1, 1, c, &[obj(0, 0, 1, 1, xywh, 0)]),
        y_true(1, 2, 2, c, &[]),
    ];
    let mut raw0 = vec![0f32; 3 * k];
    raw0[2] = (xywh[2] * 32.0 / 81.0).ln();
    raw0[3] = (xywh[3] * 32.0 / 82.0).ln();
    let vars = vec![
        Var::from_vec(raw0, (1, 3 * k, 1, 1), &Device::Cpu).unwrap(),
        Var::from_vec(vec![0f32; 3 * k * 4], (1, 3 * k, 2, 2), &Device::Cpu).unwrap(),
    ];
    (yt, vars)
}

/// A perfectly predicted box costs nothing with GIoU or CIoU (keras-yolo3's centre
/// cross-entropy does not vanish there); `wh` is zero and the box term is reported in `xy`.
#[test]
fn a_perfectly_predicted_box_has_zero_iou_box_loss() {
    let (yt, vars) = perfect_case([0.5, 0.5, 0.4, 0.3]);
    for kind in [BoxLoss::Giou, BoxLoss::Ciou] {
        let p = yolo_loss(&tensors(&vars), &yt, &TINY_ANCHORS, 1, &with_box(kind)).unwrap();
        let v = p.values().unwrap();
        assert!(v.xy[0].abs() < 1e-5, "{kind:?}: box term {}", v.xy[0]);
        assert_eq!((v.xy[1], v.wh[0], v.wh[1]), (0.0, 0.0, 0.0), "{kind:?}");
    }
    let keras = yolo_loss(
        &tensors(&vars),
        &yt,
        &TINY_ANCHORS,
        1,
        &LossConfig::default(),
    )
    .unwrap();
    assert!(keras.values().unwrap().xy[0] > 0.1);
}

/// With GIoU / CIoU the objectness and class terms are keras-yolo3's, `yolo_loss` on the CPU
/// runs the tensor-op path (bit-identical results), and loss and gradients are finite, a
/// zero-height true box and large logits included.
#[test]
fn iou_box_losses_are_finite_and_leave_the_other_terms_alone() {
    let (mut yt, _, c) = tiny_case();
    // A zero-height box in layer 1, image 1 (keras-yolo3's zero-height quirk).
    yt[1] = y_true(
        2,
        4,
        6,
        c,
        &[
            obj(0, 1, 4, 6, [0.6, 0.2, 0.2, 0.25], 1),
            obj(1, 0, 4, 6, [0.1, 0.9, 0.1, 0.0], 2),
        ],
    );
    for scale in [1.0, 30.0] {
        let vars = raw_vars(2, c, &[(2, 3), (4, 6)], scale, 5);
        let keras = yolo_loss(
            &tensors(&vars),
            &yt,
            &TINY_ANCHORS,
            c,
            &LossConfig::default(),
        )
        .unwrap()
        .values()
        .unwrap();
        for kind in [BoxLoss::Giou, BoxLoss::Ciou] {
            let cfg = with_box(kind);
            let a = yolo_loss(&tensors(&vars), &yt, &TINY_ANCHORS, c, &cfg).unwrap();
            let b = yolo_loss_tensor_ops(&tensors(&vars), &yt, &TINY_ANCHORS, c, &cfg).unwrap();
            assert_eq!(flat_parts(&a), flat_parts(&b), "{kind:?}");
            let v = a.values().unwrap();
            assert!(all_finite(&flat_parts(&a)), "{kind:?} scale {scale}: {v:?}");
            assert!(v.xy.iter().all(|&x| x > 0.0), "{kind:?}: {v:?}");
            assert_eq!(v.wh, vec![0.0, 0.0]);
            assert_close(&v.confidence, &keras.confidence, 1e-5, 1e-5, "confidence");
            assert_close(&v.class, &keras.class, 1e-5, 1e-5, "class");
            for g in grads_of(&a, &vars) {
                assert!(all_finite(&g), "{kind:?} scale {scale}: gradient");
            }
        }
    }
}

/// Training direction: a small gradient step on the raw outputs lowers the GIoU / CIoU box
/// term (and the total).
#[test]
fn a_gradient_step_lowers_the_iou_box_loss() {
    let (yt, vars, c) = tiny_case();
    for kind in [BoxLoss::Giou, BoxLoss::Ciou] {
        let cfg = with_box(kind);
        let p = yolo_loss(&tensors(&vars), &yt, &TINY_ANCHORS, c, &cfg).unwrap();
        let before = p.values().unwrap();
        let g = p.total.backward().unwrap();
        let stepped: Vec<Tensor> = vars
            .iter()
            .map(|v| {
                let t = v.as_tensor();
                (t - (g.get(t).unwrap() * 0.05).unwrap()).unwrap()
            })
            .collect();
        let after = yolo_loss(&stepped, &yt, &TINY_ANCHORS, c, &cfg)
            .unwrap()
            .values()
            .unwrap();
        let sum = |v: &[f32]| v.iter().sum::<f32>();
        assert!(
            sum(&after.xy) < sum(&before.xy),
            "{kind:?}: box term {:?} -> {:?}",
            before.xy,
            after.xy
        );
        assert!(after.total < before.total, "{kind:?}: total");
    }
}

/// The serde names of the box losses are `keras`, `giou` and `ciou`; keras is the default.
#[test]
fn box_loss_serde_names_and_default() {
    assert_eq!(LossConfig::default().box_loss, BoxLoss::Keras);
    let c: LossConfig =
        serde_json::from_str(r#"{"box_loss": "ciou", "label_smoothing": 0.1}"#).unwrap();
    assert_eq!((c.box_loss, c.label_smoothing), (BoxLoss::Ciou, 0.1));
    for (kind, name) in [
        (BoxLoss::Keras, "keras"),
        (BoxLoss::Giou, "giou"),
        (BoxLoss::Ciou, "ciou"),
    ] {
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
        assert_eq!(kind.name(), name);
    }
}

/// `LossConfig::masks` picks each layer's anchors. Masks `[[2,4,5],[0,1,2]]` on anchors `A` give
/// layer 0 anchors (A2, A4, A5) and layer 1 (A0, A1, A2): exactly what keras-yolo3's tiny mask
/// `[[3,4,5],[1,2,3]]` takes from `B = [A3, A0, A1, A2, A4, A5]`. Both loss paths must give the
/// same numbers and gradients either way, and darknet's `[[3,4,5],[0,1,2]]` must differ.
#[test]
fn anchor_masks_choose_each_layers_anchors_on_both_paths() {
    let (yt, vars, c) = tiny_case();
    let raw = tensors(&vars);
    let a = TINY_ANCHORS;
    let b = [a[3], a[0], a[1], a[2], a[4], a[5]];
    let custom = LossConfig {
        masks: Some(vec![[2, 4, 5], [0, 1, 2]]),
        ..LossConfig::default()
    };
    let keras = LossConfig::default();
    type LossFn = fn(
        &[Tensor],
        &[Tensor],
        &[[f32; 2]],
        usize,
        &LossConfig,
    ) -> Result<yolo_loss::LossParts, yolo_loss::LossError>;
    let paths: [(&str, LossFn); 2] = [("fused", yolo_loss), ("tensor ops", yolo_loss_tensor_ops)];
    for (name, path) in paths {
        let with_masks = path(&raw, &yt, &a, c, &custom).unwrap();
        let reference = path(&raw, &yt, &b, c, &keras).unwrap();
        assert_close(
            &flat_parts(&with_masks),
            &flat_parts(&reference),
            1e-6,
            1e-6,
            &format!("{name} parts"),
        );
        let g1 = grads_of(&with_masks, &vars);
        let g2 = grads_of(&reference, &vars);
        for (l, (x, y)) in g1.iter().zip(&g2).enumerate() {
            assert_close(x, y, 1e-6, 1e-6, &format!("{name} grad[{l}]"));
        }
        let darknet = LossConfig {
            masks: Some(vec![[3, 4, 5], [0, 1, 2]]),
            ..LossConfig::default()
        };
        let d = scalar(&path(&raw, &yt, &a, c, &darknet).unwrap().total);
        let k = scalar(&path(&raw, &yt, &a, c, &keras).unwrap().total);
        assert!(
            (d - k).abs() > 1e-3,
            "{name}: darknet masks {d} vs keras {k}"
        );
    }
}

/// A mask naming an anchor that does not exist, or one mask per layer too few, is an error
/// that says so, never an index panic.
#[test]
fn bad_anchor_masks_are_errors() {
    let (yt, vars, c) = tiny_case();
    let raw = tensors(&vars);
    for (masks, want) in [
        (
            vec![[3, 4, 6], [0, 1, 2]],
            "use anchor 6, but there are 6 anchors",
        ),
        (vec![[3, 4, 5]], "2 outputs but 1 anchor masks"),
    ] {
        let cfg = LossConfig {
            masks: Some(masks),
            ..LossConfig::default()
        };
        for r in [
            yolo_loss(&raw, &yt, &TINY_ANCHORS, c, &cfg),
            yolo_loss_tensor_ops(&raw, &yt, &TINY_ANCHORS, c, &cfg),
        ] {
            let Err(e) = r else {
                panic!("bad masks must fail")
            };
            let e = e.to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}

/// `values_and` gives what `values` gives plus the extra scalars, in the order passed.
#[test]
fn values_and_returns_the_extra_scalars_with_the_loss_values() {
    let (yt, vars, c) = tiny_case();
    let raw = tensors(&vars);
    let parts = yolo_loss(&raw, &yt, &TINY_ANCHORS, c, &LossConfig::default()).unwrap();
    let extra = [
        Tensor::new(1.25f32, &Device::Cpu).unwrap(),
        Tensor::new(-3.5f32, &Device::Cpu).unwrap(),
    ];
    let (v, e) = parts.values_and(&extra).unwrap();
    assert_eq!(v, parts.values().unwrap());
    assert_eq!(e, [1.25, -3.5]);
    assert_eq!(parts.values_and(&[]).unwrap().1, Vec::<f32>::new());
}
