//! Golden tests of `yolo_head` and `box_iou` against keras-yolo3 (fixtures in
//! `shared/fixtures/keras-yolo3/decode`).

use candle_core::{Device, Tensor};
use yolo_loss::{box_iou, yolo_head};
use yolo_testutil::{keras_fixture, nhwc_to_nchw, read_tensors};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// keras-yolo3 `yolo_head`: sigmoid + (col, row) over (gw, gh), exp * anchor over (w, h),
/// sigmoid objectness and class probabilities, on a raw NHWC fixture turned NCHW.
fn check_head(case: &str, num_classes: usize) {
    let Some(p) = keras_fixture(&format!("decode/{case}.safetensors")) else {
        return;
    };
    let t = read_tensors(&p);
    let raw = &t["raw"];
    let (m, gh, gw, c) = (raw.shape[0], raw.shape[1], raw.shape[2], raw.shape[3]);
    let nchw = nhwc_to_nchw(&raw.data, m, gh, gw, c);
    let raw_t = Tensor::from_vec(nchw, (m, c, gh, gw), &Device::Cpu).unwrap();
    let anchors: Vec<[f32; 2]> = t["anchors"].data.chunks(2).map(|a| [a[0], a[1]]).collect();
    let ishape = t["input_shape"].ints.as_ref().unwrap();
    let input_hw = (ishape[0] as usize, ishape[1] as usize);
    let head = yolo_head(&raw_t, &anchors, num_classes, input_hw).unwrap();
    for (name, got) in [
        ("box_xy", &head.box_xy),
        ("box_wh", &head.box_wh),
        ("box_confidence", &head.box_confidence),
        ("box_class_probs", &head.box_class_probs),
    ] {
        let want = &t[name];
        assert_eq!(got.dims(), want.shape.as_slice(), "{case} {name} shape");
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&got, &want.data);
        assert!(d <= 1e-6, "{case} {name}: max abs diff {d}");
    }
    // The grid is (gh, gw, 1, 2) as (column, row).
    assert_eq!(head.grid.dims(), &[gh, gw, 1, 2]);
    let g = head.grid.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let last = (gh * gw - 1) * 2;
    assert_eq!((g[2], g[3]), (1.0, 0.0));
    assert_eq!((g[last], g[last + 1]), ((gw - 1) as f32, (gh - 1) as f32));
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_head_matches_keras_on_non_square_320x416_layer1() {
    check_head("head_320x416_l1_yolo_c3", 3);
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_head_matches_keras_on_tiny_416x416_layer0_80_classes() {
    check_head("head_416x416_l0_tiny_c80", 80);
}

#[test]
fn yolo_head_rejects_wrong_channel_count() {
    let raw = Tensor::zeros((1, 17, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = yolo_head(&raw, &[[1., 1.]; 3], 1, (64, 64)).unwrap_err();
    assert!(err.to_string().contains("18"), "{err}");
}

/// keras-yolo3 `box_iou`: centre-size boxes, IoU of each b1 box with each b2 box.
#[test]
fn box_iou_broadcasts_batch_and_matches_hand_values() {
    let d = Device::Cpu;
    // b1: 2 images x 2 boxes, b2: 2 images x 3 boxes.
    let b1 = Tensor::new(
        &[
            [[0.5f32, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]],
            [[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]],
        ],
        &d,
    )
    .unwrap();
    let b2 = Tensor::new(
        &[
            [
                [0.5f32, 0.5, 0.2, 0.2],
                [0.6, 0.5, 0.2, 0.2],
                [0.9, 0.9, 0.1, 0.1],
            ],
            [
                [0.5, 0.5, 0.5, 0.5],
                [0.0, 0.0, 0.0, 0.0],
                [0.25, 0.25, 0.5, 0.5],
            ],
        ],
        &d,
    )
    .unwrap();
    let iou = box_iou(&b1, &b2).unwrap();
    assert_eq!(iou.dims(), &[2, 2, 3]);
    let v = iou.to_vec3::<f32>().unwrap();
    let want = [
        [[1.0, 0.02 / 0.06, 0.0], [0.0, 0.0, 0.0]],
        // Two empty boxes: 0, not NaN (the union is floored).
        [[0.25, 0.0, 0.25], [0.0, 0.0, 0.0]],
    ];
    for b in 0..2 {
        for n in 0..2 {
            for k in 0..3 {
                assert!(
                    (v[b][n][k] - want[b][n][k]).abs() < 1e-6,
                    "iou[{b}][{n}][{k}] = {} want {}",
                    v[b][n][k],
                    want[b][n][k]
                );
            }
        }
    }
    // keras-yolo3's own broadcasting: b2 without a batch axis.
    let iou2 = box_iou(&b1, &b2.get(0).unwrap()).unwrap();
    assert_eq!(iou2.dims(), &[2, 2, 3]);
}

/// `yolo_head` is built from differentiable candle ops: d(sum box_xy.x)/d(tx) = sigmoid'(tx) / gw
/// and d(sum box_wh.w)/d(tw) = exp(tw) * anchor_w / input_w.
#[test]
fn yolo_head_is_differentiable_with_respect_to_raw() {
    let (gh, gw) = (2, 3);
    let vals: Vec<f32> = (0..3 * 6 * gh * gw)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let raw = candle_core::Var::from_vec(vals.clone(), (1, 18, gh, gw), &Device::Cpu).unwrap();
    let anchors = [[10f32, 13.], [16., 30.], [33., 23.]];
    let head = yolo_head(raw.as_tensor(), &anchors, 1, (64, 96)).unwrap();
    let x_sum = head.box_xy.narrow(4, 0, 1).unwrap().sum_all().unwrap();
    let w_sum = head.box_wh.narrow(4, 0, 1).unwrap().sum_all().unwrap();
    let total = (x_sum + w_sum).unwrap();
    let grads = total.backward().unwrap();
    let g = grads
        .get(raw.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let hw = gh * gw;
    for a in 0..3 {
        for p in 0..hw {
            let tx = vals[(a * 6) * hw + p];
            let s = 1.0 / (1.0 + (-tx).exp());
            let want_x = s * (1.0 - s) / gw as f32;
            assert!((g[(a * 6) * hw + p] - want_x).abs() < 1e-6);
            let tw = vals[(a * 6 + 2) * hw + p];
            let want_w = tw.exp() * anchors[a][0] / 96.0;
            assert!((g[(a * 6 + 2) * hw + p] - want_w).abs() < 1e-6);
            // ty, th, objectness and the class logit do not enter these sums.
            for f in [1, 3, 4, 5] {
                assert_eq!(g[(a * 6 + f) * hw + p], 0.0);
            }
        }
    }
}
