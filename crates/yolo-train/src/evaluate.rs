//! VOC mAP@0.5 of a model on annotation lines: letterbox, inference-mode forward, keras-yolo3's
//! `yolo_eval` (low score threshold, as mAP needs the whole ranking), then `voc_evaluate`.

use candle_core::Device;
use yolo_data::{Anchors, Annotation, InputShape};
use yolo_eval::{
    voc_evaluate, yolo_eval_batch, Detections, EvalImage, EvalParams, EvalSet, GroundTruth,
    ScoredBox,
};
use yolo_model::YoloBody;

use crate::dataset::letterbox_batch;
use crate::error::Result;

/// Images per forward pass during evaluation.
pub const EVAL_BATCH: usize = 8;

/// Detections (original-image pixels) for every line of `anns`, in order.
pub fn detect_all(
    model: &YoloBody,
    anns: &[Annotation],
    anchors: &Anchors,
    num_classes: usize,
    input: InputShape,
    params: &EvalParams,
    device: &Device,
) -> Result<Vec<Detections>> {
    let mut out = Vec::with_capacity(anns.len());
    for (k, chunk) in anns.chunks(EVAL_BATCH).enumerate() {
        let b = letterbox_batch(chunk, k * EVAL_BATCH, input, 0, device)?;
        let outputs = model.forward(&b.images)?;
        out.extend(yolo_eval_batch(
            &outputs,
            &anchors.wh,
            num_classes,
            &b.image_hw,
            params,
        )?);
    }
    Ok(out)
}

/// PASCAL VOC all-point mAP at IoU 0.5 of `model` on `anns` (ground truth = the annotation boxes).
pub fn voc_map(
    model: &YoloBody,
    anns: &[Annotation],
    anchors: &Anchors,
    classes: &[String],
    input: InputShape,
    score_threshold: f32,
    device: &Device,
) -> Result<f64> {
    let params = EvalParams {
        score_threshold,
        iou_threshold: 0.45,
        max_boxes: 100,
    };
    let dets = detect_all(model, anns, anchors, classes.len(), input, &params, device)?;
    Ok(map_of(anns, &dets, classes))
}

/// VOC mAP@0.5 of given detections against the annotation boxes.
pub fn map_of(anns: &[Annotation], dets: &[Detections], classes: &[String]) -> f64 {
    let mut set = EvalSet {
        classes: classes.to_vec(),
        ..Default::default()
    };
    for (i, (a, d)) in anns.iter().zip(dets).enumerate() {
        let id = i as u64 + 1;
        set.images.push(EvalImage {
            id,
            file_name: a.path.display().to_string(),
            width: 0,
            height: 0,
        });
        for b in &a.boxes {
            set.ground_truth.push(GroundTruth::new(
                id,
                b.class,
                b.x_min as f64,
                b.y_min as f64,
                b.x_max as f64,
                b.y_max as f64,
            ));
        }
        for det in d {
            set.detections.push(ScoredBox {
                image_id: id,
                class_id: det.class,
                x_min: det.x_min as f64,
                y_min: det.y_min as f64,
                x_max: det.x_max as f64,
                y_max: det.y_max as f64,
                score: det.score as f64,
            });
        }
    }
    voc_evaluate(&set, 0.5).map_all_point
}
