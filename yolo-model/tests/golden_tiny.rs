//! Golden test: keras-yolo3's `tiny_yolo_body` with the random darknet weights of the fixture
//! (loaded the way `convert.py` + `load_weights` do), inference mode, on raccoon-1 letterboxed to
//! 416x416, must give the Keras outputs within 1e-4 (README section 5).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{load_darknet_weights, ops, tiny_yolo_body, ConvBnLeaky, YoloConfig};
use yolo_testutil::{keras_fixture, nhwc_to_nchw, read_tensors, FixtureTensor};

fn to_nchw(t: &FixtureTensor) -> Tensor {
    let [n, h, w, c] = t.shape[..] else {
        panic!("expected NHWC, got {:?}", t.shape)
    };
    Tensor::from_vec(
        nhwc_to_nchw(&t.data, n, h, w, c),
        (n, c, h, w),
        &Device::Cpu,
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn tiny_yolo_body_matches_keras_forward_on_random_darknet_weights() {
    let Some(weights) = keras_fixture("tiny_yolo_forward/yolov3-tiny_random_c80.weights") else {
        return;
    };
    let Some(expected) = keras_fixture("tiny_yolo_forward/tiny_forward_c80.safetensors") else {
        return;
    };
    let Some(input) = keras_fixture("letterbox/raccoon-1_416x416.safetensors") else {
        return;
    };
    let cfg = YoloConfig::tiny(80);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = tiny_yolo_body(&cfg, vb.clone()).unwrap();
    let report = load_darknet_weights(&varmap, &cfg, &weights).unwrap();
    assert!(report.is_complete(), "{report}");
    // 11 BN convs x 5 vars + 2 output convs x 2 vars.
    assert_eq!(report.loaded.len(), 11 * 5 + 2 * 2);

    let img = read_tensors(&input)["image_data"].clone();
    let img = FixtureTensor {
        shape: [vec![1], img.shape.clone()].concat(),
        ..img
    };
    let x = to_nchw(&img);
    let exp = read_tensors(&expected);

    let outs = model.forward(&x).unwrap();
    assert_eq!(outs.len(), 2);
    for (l, out) in outs.iter().enumerate() {
        let want = to_nchw(&exp[&format!("out_{l}")]);
        let d = max_abs_diff(out, &want);
        assert!(d < 1e-4, "out_{l}: max abs diff {d}");
    }

    // x2: the 256-filter 1x1 block (darknet conv 7) feeding both heads, rebuilt from the same
    // variables: maxpool, conv5, stride-1 pool, conv6, conv7 on the backbone output.
    let x1 = &model.forward_backbone(&x, false).unwrap()[0];
    let c5 = ConvBnLeaky::new(256, 512, 3, 1, vb.pp("neck.conv5")).unwrap();
    let c6 = ConvBnLeaky::new(512, 1024, 3, 1, vb.pp("neck.conv6")).unwrap();
    let c7 = ConvBnLeaky::new(1024, 256, 1, 1, vb.pp("neck.conv7")).unwrap();
    let h = c5.forward_t(&x1.max_pool2d(2).unwrap(), false).unwrap();
    let h = ops::max_pool_2x2_s1_same(&h).unwrap();
    let x2 = c7
        .forward_t(&c6.forward_t(&h, false).unwrap(), false)
        .unwrap();
    let d = max_abs_diff(&x2, &to_nchw(&exp["x2_stride32_1x1"]));
    assert!(d < 1e-4, "x2_stride32_1x1: max abs diff {d}");
}
