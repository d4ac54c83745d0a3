//! Validation mAP during training, through exactly the code `yolo eval` runs: a
//! [`yolo_eval::Detector`] over the model (Pillow-style letterbox, inference-mode forward,
//! keras-yolo3's `yolo_eval`) and [`yolo_eval::evaluate_map`] against the annotation boxes, with
//! `yolo eval`'s defaults. So `metrics.csv`'s `map` of an epoch is what `yolo eval --run` prints
//! for that epoch's weights.

use std::path::Path;

use candle_core::{Device, Tensor};
use yolo_data::{Anchors, Annotation, InputShape};
use yolo_eval::{evaluate_map, Detector, EvalParams, MapReport};
use yolo_model::YoloBody;

use crate::error::Result;

/// Images per forward pass during evaluation (`yolo eval --batch-size`'s default).
pub const EVAL_BATCH: usize = 8;

/// `yolo eval`'s default detection settings for mAP: a low score threshold (mAP needs the whole
/// ranking), NMS IoU 0.45, at most 100 boxes per class and image.
pub fn map_params(score_threshold: f32) -> EvalParams {
    EvalParams {
        score_threshold,
        iou_threshold: 0.45,
        max_boxes: 100,
    }
}

/// The detector `yolo detect` and `yolo eval` build for `model`: the anchors' own layer masks (a
/// darknet cfg's) when they have them, else keras-yolo3's `anchor_mask`.
pub fn detector<'a>(
    model: &'a YoloBody,
    anchors: &Anchors,
    num_classes: usize,
    input: InputShape,
    params: EvalParams,
    device: &Device,
) -> Detector<impl Fn(&Tensor) -> candle_core::Result<Vec<Tensor>> + 'a> {
    Detector {
        forward: move |x: &Tensor| model.forward(x),
        anchors: anchors.wh.clone(),
        masks: anchors.custom_masks.clone(),
        num_classes,
        input,
        params,
        device: device.clone(),
    }
}

/// VOC and COCO mAP of `model` on `anns` (read from `source`, named in errors), as `yolo eval`
/// computes them; `report.voc.map_all_point` is the VOC mAP@0.5.
#[allow(clippy::too_many_arguments)]
pub fn validation_report(
    model: &YoloBody,
    anns: &[Annotation],
    anchors: &Anchors,
    classes: &[String],
    input: InputShape,
    params: EvalParams,
    source: &Path,
    device: &Device,
) -> Result<MapReport> {
    let det = detector(model, anchors, classes.len(), input, params, device);
    Ok(evaluate_map(anns, classes, source, EVAL_BATCH, |imgs| {
        det.detect(imgs)
    })?)
}
