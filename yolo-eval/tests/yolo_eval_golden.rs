//! keras-yolo3 golden fixtures of `yolo_correct_boxes` and `yolo_eval`
//! (`shared/fixtures/keras-yolo3/decode/`): boxes to 1e-3 px, scores to 1e-5, classes and counts
//! exact.

use candle_core::{Device, Tensor};
use yolo_eval::{
    yolo_boxes_and_scores, yolo_correct_boxes, yolo_eval, EvalParams, LetterboxInverse,
};
use yolo_testutil::{keras_fixture, nhwc_to_nchw, read_json, read_tensors, FixtureTensor};

fn tensor(t: &FixtureTensor) -> Tensor {
    Tensor::from_vec(t.data.clone(), t.shape.clone(), &Device::Cpu).unwrap()
}

fn hw_int(t: &FixtureTensor) -> (usize, usize) {
    let v = t.ints.as_ref().expect("int32 input_shape");
    (v[0] as usize, v[1] as usize)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn correct_case(name: &str) {
    let Some(p) = keras_fixture(&format!("decode/{name}.safetensors")) else {
        return;
    };
    let t = read_tensors(&p);
    let meta = read_json(&p.with_extension("json"));
    let input_hw = hw_int(&t["input_shape"]);
    let img = &t["image_shape"].data;
    let image_hw = (img[0], img[1]);
    // The rounded new shape keras-yolo3 used (round half to even: 50.5 -> 50).
    let inv = LetterboxInverse::new(input_hw, image_hw);
    let want_new = meta["new_shape_hw_rounded"].as_array().unwrap();
    assert_eq!(
        inv.new_shape[0] as f64,
        want_new[0].as_f64().unwrap(),
        "{name}"
    );
    assert_eq!(
        inv.new_shape[1] as f64,
        want_new[1].as_f64().unwrap(),
        "{name}"
    );
    let boxes = yolo_correct_boxes(
        &tensor(&t["box_xy"]),
        &tensor(&t["box_wh"]),
        input_hw,
        &[image_hw],
    )
    .unwrap();
    assert_eq!(boxes.dims(), t["boxes"].shape.as_slice(), "{name}");
    let got = boxes.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let err = max_abs_diff(&got, &t["boxes"].data);
    assert!(err < 1e-3, "{name}: max abs error {err} px");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_correct_boxes_matches_keras_416_landscape() {
    correct_case("correct_416x416_img417x650");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_correct_boxes_matches_keras_320x416_portrait() {
    correct_case("correct_320x416_img533x400");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_correct_boxes_rounds_half_to_even_like_keras() {
    correct_case("correct_416x416_img101x832_halfround");
}

/// An eval fixture: NCHW outputs, anchors, image (h, w), classes, params, and all its tensors.
type EvalInputs = (
    Vec<Tensor>,
    Vec<[f32; 2]>,
    (f32, f32),
    usize,
    EvalParams,
    std::collections::HashMap<String, FixtureTensor>,
);

/// Loads an eval fixture.
fn eval_inputs(name: &str) -> Option<EvalInputs> {
    let p = keras_fixture(&format!("decode/{name}.safetensors"))?;
    let t = read_tensors(&p);
    let meta = read_json(&p.with_extension("json"));
    let mut outputs = Vec::new();
    for l in 0.. {
        let Some(raw) = t.get(&format!("raw_{l}")) else {
            break;
        };
        let s = &raw.shape; // NHWC (1, gh, gw, A*(5+C))
        let nchw = nhwc_to_nchw(&raw.data, s[0], s[1], s[2], s[3]);
        outputs.push(Tensor::from_vec(nchw, (s[0], s[3], s[1], s[2]), &Device::Cpu).unwrap());
    }
    let anchors: Vec<[f32; 2]> = t["anchors"].data.chunks(2).map(|c| [c[0], c[1]]).collect();
    let img = &t["image_shape"].data;
    let params = EvalParams {
        score_threshold: meta["score_threshold"].as_f64().unwrap() as f32,
        iou_threshold: meta["iou_threshold"].as_f64().unwrap() as f32,
        max_boxes: meta["max_boxes"].as_u64().unwrap() as usize,
    };
    let num_classes = meta["num_classes"].as_u64().unwrap() as usize;
    Some((outputs, anchors, (img[0], img[1]), num_classes, params, t))
}

fn eval_case(name: &str) {
    let Some((outputs, anchors, image_hw, num_classes, params, t)) = eval_inputs(name) else {
        return;
    };
    let dets = yolo_eval(&outputs, &anchors, num_classes, image_hw, &params).unwrap();
    let classes = t["classes"].ints.as_ref().unwrap();
    assert_eq!(dets.len(), classes.len(), "{name}: number of detections");
    for (i, d) in dets.iter().enumerate() {
        assert_eq!(d.class as i64, classes[i], "{name}: class of detection {i}");
        let s = t["scores"].data[i];
        assert!(
            (d.score - s).abs() < 1e-5,
            "{name}: score {i}: {} vs {s}",
            d.score
        );
        let want = &t["boxes"].data[i * 4..i * 4 + 4];
        let got = [d.y_min, d.x_min, d.y_max, d.x_max];
        let err = max_abs_diff(&got, want);
        assert!(err < 1e-3, "{name}: box {i}: {got:?} vs {want:?}");
    }
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_eval_matches_keras_yolov3_3_classes() {
    eval_case("eval_416x416_yolo_c3_img417x650");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_eval_matches_keras_tiny_80_classes_max_boxes_3() {
    eval_case("eval_320x416_tiny_c80_img417x650");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn yolo_eval_pre_nms_boxes_and_scores_match_keras() {
    let name = "eval_416x416_yolo_c3_img417x650";
    let Some((outputs, anchors, image_hw, num_classes, _, t)) = eval_inputs(name) else {
        return;
    };
    let (boxes, scores) =
        yolo_boxes_and_scores(&outputs, &anchors, num_classes, &[image_hw]).unwrap();
    assert_eq!(boxes.dims(), &[1, 10647, 4]);
    assert_eq!(scores.dims(), &[1, 10647, 3]);
    let b = boxes.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let s = scores.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eb = max_abs_diff(&b, &t["all_boxes"].data);
    let es = max_abs_diff(&s, &t["all_box_scores"].data);
    assert!(eb < 1e-3, "all_boxes max error {eb} px");
    assert!(es < 1e-5, "all_box_scores max error {es}");
}

#[test]
fn yolo_eval_rejects_wrong_layer_count_and_batch() {
    let raw = Tensor::zeros((1, 18, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let anchors = [[10.0, 13.0]; 9];
    let err = yolo_eval(
        std::slice::from_ref(&raw),
        &anchors,
        1,
        (64.0, 64.0),
        &EvalParams::default(),
    );
    assert!(err.unwrap_err().to_string().contains("1 output layers"));
    let raw2 = Tensor::zeros((2, 18, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = yolo_eval(
        &[raw2.clone(), raw2.clone(), raw2],
        &anchors,
        1,
        (64.0, 64.0),
        &EvalParams::default(),
    );
    assert!(err.unwrap_err().to_string().contains("batch of 2"));
}
