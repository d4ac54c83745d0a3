//! The whole keras-yolo3 pipeline through the `yolov3` facade, on a few synthetic 64x64 images:
//! data (synthetic set, `check-data`, letterbox, `preprocess_true_boxes`) → model (`tiny_yolo_body`)
//! → `yolo_loss` → Adam steps → `yolo_eval`. Each crate tests its own part in depth; this checks
//! that they compose as a user of the facade would compose them.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolov3::data::{check_dataset, write_synth, Anchors, CheckOptions, InputShape, SynthConfig};
use yolov3::eval::{yolo_eval_batch, EvalParams};
use yolov3::loss::{yolo_loss, LossConfig};
use yolov3::model::{trainable_vars, FreezeBody, YoloBody, YoloConfig};
use yolov3::train::seeded_glorot_init;
use yolov3::train::{letterbox_batch, y_true_tensors};
use yolov3::train::{Adam, AdamConfig};

#[test]
fn synthetic_images_train_and_detect_through_the_facade() {
    let dir = tempfile::tempdir().unwrap();
    let synth = SynthConfig {
        image_size: 64,
        count: 6,
        min_object_size: 12,
        max_object_size: 32,
        ..SynthConfig::default()
    };
    let ds = write_synth(&synth, dir.path()).unwrap();
    let classes = ds.classes.len();
    assert_eq!((ds.annotations.len(), classes), (6, 3));

    // `yolo check-data` finds nothing wrong with generated data.
    let report = check_dataset(&ds.annotation_file, classes, &CheckOptions::default()).unwrap();
    assert_eq!(report.error_count(), 0, "{report}");

    // A 64x64 image letterboxed into a 64x64 input is unscaled and unshifted: boxes unchanged
    // (up to the random box order keras-yolo3 applies).
    let dev = Device::Cpu;
    let input = InputShape::new(64, 64).unwrap();
    let batch = letterbox_batch(&ds.annotations, 0, input, 0, &dev).unwrap();
    assert_eq!(batch.images.dims(), &[6, 3, 64, 64]);
    for (got, ann) in batch.boxes.iter().zip(&ds.annotations) {
        let key = |b: &yolov3::data::BoxLabel| (b.x_min as i64, b.y_min as i64, b.class);
        let mut got: Vec<_> = got.iter().map(key).collect();
        let mut want: Vec<_> = ann.boxes.iter().map(key).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    let anchors = Anchors::tiny_default();
    let y_true = y_true_tensors(&batch.boxes, input, &anchors, classes, &dev).unwrap();
    let varmap = VarMap::new();
    let cfg = YoloConfig::tiny(classes);
    let model = YoloBody::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
    seeded_glorot_init(&varmap, 7).unwrap();

    let loss_of = |train: bool| -> (Tensor, Vec<Tensor>) {
        let out = model
            .forward_t(&batch.images, train, FreezeBody::None)
            .unwrap();
        let parts = yolo_loss(&out, &y_true, &anchors.wh, classes, &LossConfig::default()).unwrap();
        (parts.total, out)
    };
    let (first, outputs) = loss_of(true);
    // Tiny YOLOv3: two layers, stride 32 then 16, 3 anchors x (5 + classes) channels.
    let dims: Vec<&[usize]> = outputs.iter().map(|t| t.dims()).collect();
    assert_eq!(dims, [&[6, 24, 2, 2][..], &[6, 24, 4, 4][..]]);
    let first = first.to_scalar::<f32>().unwrap();
    assert!(first.is_finite() && first > 0.0, "{first}");

    // A few Adam steps on the same batch lower its loss.
    let mut adam = Adam::new(
        trainable_vars(&varmap, &cfg, FreezeBody::None),
        AdamConfig::default(),
    )
    .unwrap();
    let mut last = first;
    for _ in 0..5 {
        let (loss, _) = loss_of(true);
        last = loss.to_scalar::<f32>().unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
    }
    assert!(last < first, "loss {first} -> {last}");

    // `yolo_eval`: at most `max_boxes` per class and image, classes in range, scores over the
    // threshold and sorted within a class.
    let (_, outputs) = loss_of(false);
    let params = EvalParams {
        score_threshold: 0.0,
        iou_threshold: 0.45,
        max_boxes: 5,
    };
    let dets = yolo_eval_batch(&outputs, &anchors.wh, classes, &batch.image_hw, &params).unwrap();
    assert_eq!(dets.len(), 6);
    for image in &dets {
        for c in 0..classes {
            let scores: Vec<f32> = image
                .iter()
                .filter(|d| d.class == c)
                .map(|d| d.score)
                .collect();
            assert!(scores.len() <= 5, "{scores:?}");
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        }
        assert!(image.iter().all(|d| d.class < classes && d.score >= 0.0));
    }
}
