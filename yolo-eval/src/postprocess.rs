//! keras-yolo3's `yolo_correct_boxes` and `yolo_eval`: from raw network outputs to per-image
//! detections in original-image pixels.
//!
//! Decoding and undoing the letterbox run on the outputs' device as tensor ops; the score
//! threshold and the per-class non-max suppression run on the host (a few thousand candidate rows).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::detection::{Detection, Detections};
use crate::error::{EvalError, Result};
use crate::nms::non_max_suppression;

/// Thresholds of the detector. Defaults are those of keras-yolo3's `yolo.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalParams {
    /// Keep a (box, class) pair when `objectness * class probability >= score_threshold`.
    pub score_threshold: f32,
    /// Suppress a box whose IoU with a better box of the same class is `> iou_threshold`.
    pub iou_threshold: f32,
    /// At most this many boxes per class (the total can be larger).
    pub max_boxes: usize,
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            score_threshold: 0.3,
            iou_threshold: 0.45,
            max_boxes: 20,
        }
    }
}

/// The resized image size and the letterbox offset/scale `yolo_correct_boxes` derives, all in
/// `(h, w)` order and float32 as keras-yolo3 computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxInverse {
    /// `round(image_shape * min(input / image))`, with round-half-to-even.
    pub new_shape: [f32; 2],
    /// `(input - new_shape) / 2 / input`: the image's top-left corner, relative to the input.
    pub offset: [f32; 2],
    /// `input / new_shape`.
    pub scale: [f32; 2],
}

impl LetterboxInverse {
    /// Computes the inverse letterbox for an input of `input_hw` and an image of `image_hw`.
    ///
    /// Note that keras-yolo3's letterbox truncates the new size (`int()`) while this rounds, so for
    /// some images the two differ by a pixel; this reproduces `yolo_correct_boxes`, not the exact
    /// inverse of the letterbox.
    pub fn new(input_hw: (usize, usize), image_hw: (f32, f32)) -> Self {
        let input = [input_hw.0 as f32, input_hw.1 as f32];
        let image = [image_hw.0, image_hw.1];
        let ratio = (input[0] / image[0]).min(input[1] / image[1]);
        let new_shape = [
            (image[0] * ratio).round_ties_even(),
            (image[1] * ratio).round_ties_even(),
        ];
        LetterboxInverse {
            new_shape,
            offset: [
                (input[0] - new_shape[0]) / 2.0 / input[0],
                (input[1] - new_shape[1]) / 2.0 / input[1],
            ],
            scale: [input[0] / new_shape[0], input[1] / new_shape[1]],
        }
    }
}

/// A `(m, 1, ..., 1, 2)` tensor holding `(x, y)` = `(v[1], v[0])` of each image's `(h, w)` pair,
/// broadcastable against a `(m, ..., 2)` tensor of rank `rank`.
fn per_image_xy(values: &[[f32; 2]], rank: usize, like: &Tensor) -> Result<Tensor> {
    let data: Vec<f32> = values.iter().flat_map(|v| [v[1], v[0]]).collect();
    let mut shape = vec![values.len()];
    shape.extend(std::iter::repeat_n(1, rank - 2));
    shape.push(2);
    Ok(Tensor::from_vec(data, shape, like.device())?.to_dtype(like.dtype())?)
}

/// keras-yolo3's `yolo_correct_boxes` for a batch: maps box centres and sizes relative to the
/// letterboxed network input back to the original images.
///
/// `box_xy`, `box_wh` are `(m, ..., 2)` as (x, y) and (w, h) relative to the input (e.g. the
/// `(m, gh, gw, A, 2)` of `yolo_head`), `input_hw` the network input (h, w) and `image_hw` the
/// original size (h, w) of each of the `m` images (or one size for all). Returns `(m, ..., 4)` as
/// `(y_min, x_min, y_max, x_max)` in original-image pixels, not clipped.
pub fn yolo_correct_boxes(
    box_xy: &Tensor,
    box_wh: &Tensor,
    input_hw: (usize, usize),
    image_hw: &[(f32, f32)],
) -> Result<Tensor> {
    let rank = box_xy.rank();
    let m = box_xy.dim(0)?;
    if rank < 2 || box_xy.dims() != box_wh.dims() || box_xy.dim(rank - 1)? != 2 {
        return Err(EvalError::Invalid(format!(
            "yolo_correct_boxes: box_xy {:?} and box_wh {:?} must both be (m, ..., 2)",
            box_xy.dims(),
            box_wh.dims()
        )));
    }
    let shapes: Vec<(f32, f32)> = match image_hw.len() {
        1 => vec![image_hw[0]; m],
        n if n == m => image_hw.to_vec(),
        n => {
            return Err(EvalError::Invalid(format!(
                "yolo_correct_boxes: {n} image shapes for a batch of {m}"
            )))
        }
    };
    if let Some(bad) = shapes.iter().find(|s| !(s.0 > 0.0 && s.1 > 0.0)) {
        return Err(EvalError::Invalid(format!(
            "yolo_correct_boxes: image shape (h, w) = {bad:?} must be positive"
        )));
    }
    let inv: Vec<LetterboxInverse> = shapes
        .iter()
        .map(|s| LetterboxInverse::new(input_hw, *s))
        .collect();
    let offset = per_image_xy(
        &inv.iter().map(|i| i.offset).collect::<Vec<_>>(),
        rank,
        box_xy,
    )?;
    let scale = per_image_xy(
        &inv.iter().map(|i| i.scale).collect::<Vec<_>>(),
        rank,
        box_xy,
    )?;
    let image = per_image_xy(
        &shapes.iter().map(|s| [s.0, s.1]).collect::<Vec<_>>(),
        rank,
        box_xy,
    )?;
    // Same operations, in the same order, as keras-yolo3 (which works in (y, x) order; each
    // operation is elementwise, so (x, y) order gives bit-identical values).
    let xy = box_xy.broadcast_sub(&offset)?.broadcast_mul(&scale)?;
    let wh = box_wh.broadcast_mul(&scale)?;
    let half = (wh / 2.0)?;
    let mins = (&xy - &half)?.broadcast_mul(&image)?;
    let maxes = (&xy + &half)?.broadcast_mul(&image)?;
    let last = rank - 1;
    let x_min = mins.narrow(last, 0, 1)?;
    let y_min = mins.narrow(last, 1, 1)?;
    let x_max = maxes.narrow(last, 0, 1)?;
    let y_max = maxes.narrow(last, 1, 1)?;
    Ok(Tensor::cat(&[&y_min, &x_min, &y_max, &x_max], last)?)
}

/// The input size keras-yolo3 infers from the outputs: 32 times the first (coarsest) grid.
fn input_hw_of(outputs: &[Tensor]) -> Result<(usize, usize)> {
    let first = outputs
        .first()
        .ok_or_else(|| EvalError::Invalid("yolo_eval: no output layers".into()))?;
    let d = first.dims();
    if d.len() != 4 {
        return Err(EvalError::Invalid(format!(
            "yolo_eval: output layer 0 has shape {d:?}, expected NCHW (m, A*(5+C), gh, gw)"
        )));
    }
    Ok((d[2] * 32, d[3] * 32))
}

/// Decodes every output layer on its device (`yolo_boxes_and_scores` of keras-yolo3 for each
/// layer, concatenated): returns `boxes (m, N, 4)` as (y_min, x_min, y_max, x_max) in image pixels
/// and `box_scores (m, N, C)` = objectness x class probability, with rows ordered layer 0, 1, 2 and
/// inside a layer `(j * gw + i) * A + k`.
///
/// `outputs` are the raw NCHW layers `(m, A*(5+C), gh, gw)`, coarsest first; `anchors` all anchors
/// (9 for YOLOv3, 6 for tiny), split between layers by keras-yolo3's `anchor_mask`.
pub fn yolo_boxes_and_scores(
    outputs: &[Tensor],
    anchors: &[[f32; 2]],
    num_classes: usize,
    image_hw: &[(f32, f32)],
) -> Result<(Tensor, Tensor)> {
    yolo_boxes_and_scores_masked(outputs, anchors, None, num_classes, image_hw)
}

/// keras-yolo3's `anchor_mask` for `outputs.len()` layers, or an error naming the count.
fn keras_mask(layers: usize) -> Result<Vec<Vec<usize>>> {
    yolo_loss::anchor_mask(layers)
        .map(|m| m.iter().map(|l| l.to_vec()).collect())
        .ok_or_else(|| {
            EvalError::Invalid(format!(
                "yolo_eval: {layers} output layers; expected 3 (YOLOv3) or 2 (tiny)"
            ))
        })
}

/// [`yolo_boxes_and_scores`] with the anchors of each layer given by `masks` (one list of anchor
/// indices per output layer, coarsest first, as a darknet cfg's `mask=` lines); `None` means
/// keras-yolo3's `anchor_mask`. darknet's `yolov3-tiny.cfg` decodes its second layer with anchors
/// 0,1,2 where keras-yolo3 uses 1,2,3.
pub fn yolo_boxes_and_scores_masked(
    outputs: &[Tensor],
    anchors: &[[f32; 2]],
    masks: Option<&[Vec<usize>]>,
    num_classes: usize,
    image_hw: &[(f32, f32)],
) -> Result<(Tensor, Tensor)> {
    let mask = match masks {
        Some(m) => m.to_vec(),
        None => keras_mask(outputs.len())?,
    };
    if mask.len() != outputs.len() {
        return Err(EvalError::Invalid(format!(
            "yolo_eval: {} output layers but {} anchor masks",
            outputs.len(),
            mask.len()
        )));
    }
    let needed = mask.iter().flatten().max().map_or(0, |m| m + 1);
    if anchors.len() < needed {
        return Err(EvalError::Invalid(format!(
            "yolo_eval: {} anchors given, the {}-layer model needs {needed}",
            anchors.len(),
            outputs.len()
        )));
    }
    let input_hw = input_hw_of(outputs)?;
    let mut all_boxes = Vec::with_capacity(outputs.len());
    let mut all_scores = Vec::with_capacity(outputs.len());
    for (raw, layer_mask) in outputs.iter().zip(&mask) {
        let layer_anchors: Vec<[f32; 2]> = layer_mask.iter().map(|&a| anchors[a]).collect();
        let raw = if raw.dtype() == DType::F32 {
            raw.clone()
        } else {
            raw.to_dtype(DType::F32)?
        };
        let head = yolo_loss::yolo_head(&raw, &layer_anchors, num_classes, input_hw)?;
        let m = head.box_xy.dim(0)?;
        let boxes = yolo_correct_boxes(&head.box_xy, &head.box_wh, input_hw, image_hw)?;
        let scores = head.box_confidence.broadcast_mul(&head.box_class_probs)?;
        all_boxes.push(boxes.reshape((m, (), 4))?);
        all_scores.push(scores.reshape((m, (), num_classes))?);
    }
    Ok((Tensor::cat(&all_boxes, 1)?, Tensor::cat(&all_scores, 1)?))
}

/// The host half of `yolo_eval` for one image: score threshold, then per-class non-max
/// suppression, output class 0 first and by decreasing score inside a class.
///
/// `boxes[r]` is `(y_min, x_min, y_max, x_max)` and `scores[r]` the `C` class scores of row `r`.
pub fn select_detections(
    boxes: &[[f32; 4]],
    scores: &[Vec<f32>],
    num_classes: usize,
    params: &EvalParams,
) -> Detections {
    let mut out = Vec::new();
    for class in 0..num_classes {
        let rows: Vec<usize> = (0..boxes.len().min(scores.len()))
            .filter(|&r| {
                scores[r]
                    .get(class)
                    .is_some_and(|s| *s >= params.score_threshold)
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let cand_boxes: Vec<[f32; 4]> = rows.iter().map(|&r| boxes[r]).collect();
        let cand_scores: Vec<f32> = rows.iter().map(|&r| scores[r][class]).collect();
        for k in non_max_suppression(
            &cand_boxes,
            &cand_scores,
            params.max_boxes,
            params.iou_threshold,
        ) {
            let b = cand_boxes[k];
            out.push(Detection {
                class,
                score: cand_scores[k],
                y_min: b[0],
                x_min: b[1],
                y_max: b[2],
                x_max: b[3],
            });
        }
    }
    out
}

/// keras-yolo3's `yolo_eval` for a batch: one [`Detections`] per image.
///
/// `outputs` are the raw NCHW layers `(m, A*(5+C), gh, gw)` (coarsest first), `anchors` all the
/// model's anchors, `image_hw` the original (h, w) of each image (one entry per image, or one for
/// all). The input size is taken as 32 times the first grid, as keras-yolo3 does.
pub fn yolo_eval_batch(
    outputs: &[Tensor],
    anchors: &[[f32; 2]],
    num_classes: usize,
    image_hw: &[(f32, f32)],
    params: &EvalParams,
) -> Result<Vec<Detections>> {
    yolo_eval_batch_masked(outputs, anchors, None, num_classes, image_hw, params)
}

/// [`yolo_eval_batch`] with per-layer anchor masks (see [`yolo_boxes_and_scores_masked`]).
pub fn yolo_eval_batch_masked(
    outputs: &[Tensor],
    anchors: &[[f32; 2]],
    masks: Option<&[Vec<usize>]>,
    num_classes: usize,
    image_hw: &[(f32, f32)],
    params: &EvalParams,
) -> Result<Vec<Detections>> {
    let (boxes, scores) =
        yolo_boxes_and_scores_masked(outputs, anchors, masks, num_classes, image_hw)?;
    let boxes = boxes.to_vec3::<f32>()?;
    let scores = scores.to_vec3::<f32>()?;
    Ok(boxes
        .iter()
        .zip(scores.iter())
        .map(|(b, s)| {
            let b: Vec<[f32; 4]> = b.iter().map(|r| [r[0], r[1], r[2], r[3]]).collect();
            select_detections(&b, s, num_classes, params)
        })
        .collect())
}

/// keras-yolo3's `yolo_eval` for one image (batch size 1): decode every layer, undo the letterbox,
/// score = objectness x class probability, threshold, per-class NMS, at most `max_boxes` per
/// class.
pub fn yolo_eval(
    outputs: &[Tensor],
    anchors: &[[f32; 2]],
    num_classes: usize,
    image_hw: (f32, f32),
    params: &EvalParams,
) -> Result<Detections> {
    if let Some(first) = outputs.first() {
        let m = first.dim(0)?;
        if m != 1 {
            return Err(EvalError::Invalid(format!(
                "yolo_eval: batch of {m} images; use yolo_eval_batch"
            )));
        }
    }
    let mut all = yolo_eval_batch(outputs, anchors, num_classes, &[image_hw], params)?;
    Ok(all.pop().unwrap_or_default())
}
