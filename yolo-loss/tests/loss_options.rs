//! The loss options beyond keras-yolo3: label smoothing of the class targets and the GIoU / CIoU
//! box terms. Both are off by default (keras-yolo3's numbers, checked by `loss_golden.rs`).

mod common;

use candle_core::{Device, Tensor, Var};
use common::{all_finite, flat_parts, raw_vars, scalar, to_vec, y_true, Obj};
use yolo_loss::{yolo_loss, yolo_loss_tensor_ops, LossConfig, LossParts};

const TINY_ANCHORS: [[f32; 2]; 6] = [
    [10., 14.],
    [23., 27.],
    [37., 58.],
    [81., 82.],
    [135., 169.],
    [344., 319.],
];

/// An object at relative box `xywh` in image `b`, anchor slot `a`, on a (gh, gw) grid.
fn obj(b: usize, a: usize, gh: usize, gw: usize, xywh: [f32; 4], class: usize) -> Obj {
    let i = ((xywh[0] * gw as f32) as usize).min(gw - 1);
    let j = ((xywh[1] * gh as f32) as usize).min(gh - 1);
    Obj {
        b,
        j,
        i,
        a,
        xywh,
        class,
    }
}

fn tensors(vars: &[Var]) -> Vec<Tensor> {
    vars.iter().map(|v| v.as_tensor().clone()).collect()
}

fn grads_of(parts: &LossParts, vars: &[Var]) -> Vec<Vec<f32>> {
    let g = parts.total.backward().unwrap();
    vars.iter()
        .map(|v| to_vec(g.get(v.as_tensor()).expect("gradient of every raw output")))
        .collect()
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
