//! Golden tests of `yolo_loss` against keras-yolo3 (`shared/fixtures/keras-yolo3/yolo_loss`):
//! the total, each component per layer, the ignore mask (exact), the best IoU and the gradient
//! with respect to each raw output, for the fused CPU path and the tensor-op path.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{nchw_to_nhwc, scalar, to_vec};
use yolo_loss::{yolo_loss, yolo_loss_tensor_ops, LossConfig, LossParts};
use yolo_testutil::{keras_fixture, nhwc_to_nchw, read_json, read_tensors};

type LossFn = fn(
    &[Tensor],
    &[Tensor],
    &[[f32; 2]],
    usize,
    &LossConfig,
) -> Result<LossParts, yolo_loss::LossError>;

fn close_component(got: f32, want: f32) -> bool {
    (got - want).abs() <= 1e-5 * want.abs() + 1e-3
}

fn check_case(case: &str, loss_fn: LossFn, path: &str) {
    let Some(p) = keras_fixture(&format!("yolo_loss/{case}.safetensors")) else {
        return;
    };
    let Some(jp) = keras_fixture(&format!("yolo_loss/{case}.json")) else {
        return;
    };
    let meta = read_json(&jp);
    let t = read_tensors(&p);
    let y_from = meta["y_true_from"].as_str().unwrap();
    let Some(yp) = keras_fixture(y_from) else {
        return;
    };
    let yt = read_tensors(&yp);
    let num_layers = meta["num_layers"].as_u64().unwrap() as usize;
    let num_classes = meta["num_classes"].as_u64().unwrap() as usize;
    let cfg = LossConfig {
        ignore_thresh: meta["ignore_thresh"].as_f64().unwrap() as f32,
        ..LossConfig::default()
    };
    let anchors: Vec<[f32; 2]> = t["anchors"].data.chunks(2).map(|a| [a[0], a[1]]).collect();
    let dev = Device::Cpu;

    let mut vars = Vec::new();
    let mut y_true = Vec::new();
    for l in 0..num_layers {
        let raw = &t[&format!("raw_{l}")];
        let (m, gh, gw, c) = (raw.shape[0], raw.shape[1], raw.shape[2], raw.shape[3]);
        let nchw = nhwc_to_nchw(&raw.data, m, gh, gw, c);
        vars.push(Var::from_vec(nchw, (m, c, gh, gw), &dev).unwrap());
        let y = &yt[&format!("y_true_{l}")];
        y_true.push(Tensor::from_slice(&y.data, y.shape.as_slice(), &dev).unwrap());
    }
    let outputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let parts = loss_fn(&outputs, &y_true, &anchors, num_classes, &cfg).unwrap();

    let want_total = t["loss"].data[0];
    let got_total = scalar(&parts.total);
    assert!(
        close_component(got_total, want_total),
        "{path} {case}: total {got_total} vs keras {want_total}"
    );
    for (name, got) in [
        ("xy_loss", &parts.xy),
        ("wh_loss", &parts.wh),
        ("confidence_loss", &parts.confidence),
        ("class_loss", &parts.class),
    ] {
        assert_eq!(got.len(), num_layers);
        for (l, got_l) in got.iter().enumerate() {
            let (g, w) = (scalar(got_l), t[name].data[l]);
            assert!(
                close_component(g, w),
                "{path} {case}: {name}[{l}] {g} vs keras {w}"
            );
        }
    }
    // The logging helper returns the same numbers.
    let values = parts.values().unwrap();
    assert_eq!(values.total, got_total);
    assert_eq!(values.class.len(), num_layers);
    assert_eq!(values.wh[num_layers - 1], scalar(&parts.wh[num_layers - 1]));

    for l in 0..num_layers {
        let want_mask = &t[&format!("ignore_mask_{l}")];
        let got_mask = to_vec(&parts.ignore_mask[l]);
        assert_eq!(
            parts.ignore_mask[l].dims(),
            &want_mask.shape[..4],
            "{path} {case}: ignore mask layout"
        );
        let flips = got_mask
            .iter()
            .zip(&want_mask.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            flips, 0,
            "{path} {case}: ignore_mask_{l} differs at {flips} entries"
        );
        let want_best = &t[&format!("best_iou_{l}")];
        let got_best = to_vec(&parts.best_iou[l]);
        for (i, (g, w)) in got_best.iter().zip(&want_best.data).enumerate() {
            if w.is_finite() {
                assert!(
                    (g - w).abs() <= 1e-5,
                    "{path} {case}: best_iou_{l}[{i}] {g} vs {w}"
                );
            } else {
                assert_eq!(*g, *w, "{path} {case}: best_iou_{l}[{i}]");
            }
        }
    }

    let grads = parts.total.backward().unwrap();
    for (l, var) in vars.iter().enumerate() {
        let want = &t[&format!("grad_raw_{l}")];
        let (m, gh, gw, c) = (want.shape[0], want.shape[1], want.shape[2], want.shape[3]);
        let g = grads
            .get(var.as_tensor())
            .expect("gradient of every raw output");
        let got = nchw_to_nhwc(&to_vec(g), m, c, gh, gw);
        let mut worst = (0f32, 0usize);
        for (i, (a, b)) in got.iter().zip(&want.data).enumerate() {
            let excess = (a - b).abs() - (1e-5 + 1e-4 * b.abs());
            if excess > worst.0 {
                worst = (excess, i);
            }
        }
        assert!(
            worst.0 <= 0.0,
            "{path} {case}: grad_raw_{l}[{}] = {} vs keras {}",
            worst.1,
            got[worst.1],
            want.data[worst.1]
        );
    }
}

fn both(case: &str) {
    check_case(case, yolo_loss, "fused cpu");
    check_case(case, yolo_loss_tensor_ops, "tensor ops");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_loss_matches_keras_416x416_yolo_c3_with_empty_image() {
    both("loss_416x416_yolo_c3");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_loss_matches_keras_320x416_yolo_c3_non_square() {
    both("loss_320x416_yolo_c3");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_loss_matches_keras_320x416_tiny_c80() {
    both("loss_320x416_tiny_c80");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_loss_matches_keras_416x416_tiny_c3_ignore_thresh_0_7() {
    both("loss_416x416_tiny_c3");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_loss_matches_keras_engineered_ignore_mask_case() {
    both("loss_320x416_yolo_c3_ignore");
}
