//! `Detector` (letterbox, batch, forward, yolo_eval_batch) and `evaluate_map` plumbing.

use std::cell::Cell;

use candle_core::{Device, Tensor};
use image::RgbImage;
use yolo_data::{Annotation, BoxLabel, InputShape};
use yolo_eval::{evaluate_map, Detection, Detector, EvalParams};
use yolo_testutil::{keras_fixture, nhwc_to_nchw, read_tensors};

/// With a forward function that returns the golden raw outputs, a 650x417 image gives keras-yolo3's
/// `yolo_eval` result: the image size reaches `yolo_correct_boxes` as (h, w), for every image of a
/// batch.
#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn detector_passes_each_image_size_to_yolo_eval() {
    let Some(p) = keras_fixture("decode/eval_416x416_yolo_c3_img417x650.safetensors") else {
        return;
    };
    let t = read_tensors(&p);
    let raws: Vec<Tensor> = (0..3)
        .map(|l| {
            let r = &t[&format!("raw_{l}")];
            let s = &r.shape;
            let nchw = nhwc_to_nchw(&r.data, s[0], s[1], s[2], s[3]);
            Tensor::from_vec(nchw, (s[0], s[3], s[1], s[2]), &Device::Cpu).unwrap()
        })
        .collect();
    let calls = Cell::new(0);
    let detector = Detector {
        forward: |x: &Tensor| {
            calls.set(calls.get() + 1);
            assert_eq!(x.dims()[1..], [3, 416, 416]);
            let m = x.dim(0)?;
            raws.iter().map(|r| r.repeat((m, 1, 1, 1))).collect()
        },
        anchors: t["anchors"].data.chunks(2).map(|c| [c[0], c[1]]).collect(),
        masks: None,
        num_classes: 3,
        input: InputShape::square416(),
        params: EvalParams::default(),
        device: Device::Cpu,
    };
    let images = vec![RgbImage::new(650, 417); 3];
    let dets = detector.detect_batched(&images, 2).unwrap();
    assert_eq!(calls.get(), 2);
    assert_eq!(dets.len(), 3);
    for d in &dets {
        assert_eq!(d.len(), t["classes"].data.len());
        for (i, det) in d.iter().enumerate() {
            let want = &t["boxes"].data[i * 4..i * 4 + 4];
            assert!((det.y_min - want[0]).abs() < 1e-3 && (det.x_max - want[3]).abs() < 1e-3);
        }
    }
}

#[test]
fn evaluate_map_runs_the_detector_over_annotated_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut anns = Vec::new();
    for i in 0..3 {
        let path = dir.path().join(format!("{i}.png"));
        RgbImage::new(40 + i * 10, 30).save(&path).unwrap();
        anns.push(Annotation {
            path,
            boxes: vec![BoxLabel {
                x_min: 2.0,
                y_min: 3.0,
                x_max: 20.0,
                y_max: 25.0,
                class: (i % 2) as usize,
            }],
            line: i as usize + 1,
        });
    }
    let classes = vec!["a".to_string(), "b".to_string()];
    let seen = Cell::new(0usize);
    // A perfect detector for images 0 and 1, a miss on image 2: class a has 2 objects, 1 found.
    let report = evaluate_map(
        &anns,
        &classes,
        std::path::Path::new("val.txt"),
        2,
        |imgs| {
            let out = imgs
                .iter()
                .map(|im| {
                    let k = seen.get();
                    seen.set(k + 1);
                    assert_eq!(im.width(), 40 + k as u32 * 10);
                    if k == 2 {
                        return vec![];
                    }
                    vec![Detection {
                        class: k % 2,
                        score: 0.9,
                        y_min: 3.0,
                        x_min: 2.0,
                        y_max: 25.0,
                        x_max: 20.0,
                    }]
                })
                .collect();
            Ok(out)
        },
    )
    .unwrap();
    assert_eq!(seen.get(), 3);
    assert_eq!(report.voc.per_class[0].ap_all_point, Some(0.5));
    assert_eq!(report.voc.per_class[1].ap_all_point, Some(1.0));
    assert_eq!(report.voc.map_all_point, 0.75);
}
