//! The device-generic `yolo_loss` of one layer, written with candle tensor operations only, so it
//! runs wherever its inputs live (CPU, CUDA, Metal) and candle's autograd differentiates it.
//!
//! Internally the layer is kept in the NCHW-derived layout `(m, A, 5+C, gh, gw)` (a free reshape
//! of the raw output); `y_true` is permuted into it once.

use candle_core::{DType, Device, Tensor, D};

use crate::layer::{Layer, WH_RATIO_FLOOR};
use crate::{box_iou, box_loss, BoxLoss, LossConfig, LossError};

/// Per-layer outputs: the four components (scalars, already / m), the ignore mask and best IoU
/// (both `(m, gh, gw, A)`, detached).
pub(crate) struct LayerParts {
    pub xy: Tensor,
    pub wh: Tensor,
    pub confidence: Tensor,
    pub class: Tensor,
    pub ignore_mask: Tensor,
    pub best_iou: Tensor,
}

/// Stable sigmoid cross-entropy on logits `max(x, 0) - x*z + log(1 + exp(-|x|))`, as TF's
/// `sigmoid_cross_entropy_with_logits` (candle-nn's version takes `log(sigmoid)` and overflows).
pub(crate) fn bce_with_logits(x: &Tensor, z: &Tensor) -> candle_core::Result<Tensor> {
    let softplus_tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (x.relu()? - x.mul(z)?)? + softplus_tail
}

/// A `(1, 1, 2, 1, 1)` tensor of two values, for per-coordinate broadcasting.
fn pair(a: f32, b: f32, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(vec![a, b], (1, 1, 2, 1, 1), device)
}

/// Best IoU of every prediction with the true boxes of its own image and layer, batched: the true
/// boxes are gathered into a padded `(m, K, 4)` tensor with a validity mask (gather indices from
/// the layer's object slots, per image, checked against the layer), then one broadcast IoU
/// `(m, N, K)` and a max over `K`. Images without a box get `-inf`.
fn best_iou(
    pred_box: &Tensor, // (m, N, 4), N = gh*gw*A in Keras order
    y_true: &Tensor,   // (m, gh, gw, A, 5+C)
    per_image: &[Vec<u32>],
    layer: &Layer,
) -> Result<Tensor, LossError> {
    let (m, n) = (layer.m, layer.gh * layer.gw * layer.a);
    let device = pred_box.device();
    let k5 = layer.k();
    let flat = y_true.reshape((m * n, k5))?;
    let kmax = per_image.iter().map(Vec::len).max().unwrap_or(0);
    if kmax == 0 {
        return Ok(Tensor::full(f32::NEG_INFINITY, (m, n), device)?);
    }
    let mut idx = Vec::with_capacity(m * kmax);
    let mut valid = Vec::with_capacity(m * kmax);
    for (b, boxes) in per_image.iter().enumerate() {
        // Batch-wide row `b * n + s`; within u32 (checked with the slots).
        let first = (b * n) as u32;
        for s in 0..kmax {
            idx.push(first + boxes.get(s).copied().unwrap_or(0));
            valid.push(u8::from(s < boxes.len()));
        }
    }
    let idx = Tensor::from_vec(idx, m * kmax, device)?;
    let true_box = flat
        .index_select(&idx, 0)?
        .narrow(1, 0, 4)?
        .reshape((m, kmax, 4))?;
    let valid = Tensor::from_vec(valid, (m, 1, kmax), device)?.broadcast_as((m, n, kmax))?;
    let iou = box_iou(pred_box, &true_box)?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, (m, n, kmax), device)?;
    Ok(valid.where_cond(&iou, &neg_inf)?.max(D::Minus1)?)
}

/// keras-yolo3's loss terms for one layer with tensor operations; `objects` are the layer's
/// object slots per image (checked against `layer`).
pub(crate) fn layer_loss(
    raw: &Tensor,
    y_true: &Tensor,
    objects: &[Vec<u32>],
    layer: &Layer,
    cfg: &LossConfig,
) -> Result<LayerParts, LossError> {
    let ignore_thresh = cfg.ignore_thresh;
    let Layer {
        m, a, c, gh, gw, ..
    } = *layer;
    let k = layer.k();
    let device = raw.device();
    let feats = raw.reshape((m, a, k, gh, gw))?;
    let y = y_true.permute((0, 3, 4, 1, 2))?.contiguous()?;
    let obj = y.narrow(2, 4, 1)?;

    // grid as (1, 1, 2, gh, gw): channel 0 the column, channel 1 the row.
    let mut g = Vec::with_capacity(2 * gh * gw);
    g.extend((0..gh * gw).map(|p| (p % gw) as f32));
    g.extend((0..gh * gw).map(|p| (p / gw) as f32));
    let grid = Tensor::from_vec(g, (1, 1, 2, gh, gw), device)?;
    let grid_wh = pair(gw as f32, gh as f32, device)?;
    let input_wh = pair(layer.input_w as f32, layer.input_h as f32, device)?;
    let anchors: Vec<f32> = layer.anchors.iter().flat_map(|x| [x[0], x[1]]).collect();
    let anchors = Tensor::from_vec(anchors, (1, a, 2, 1, 1), device)?;

    // Ignore mask from the detached decoded boxes.
    let fd = feats.detach();
    let pred_xy = candle_nn::ops::sigmoid(&fd.narrow(2, 0, 2)?)?
        .broadcast_add(&grid)?
        .broadcast_div(&grid_wh)?;
    let pred_wh = fd
        .narrow(2, 2, 2)?
        .exp()?
        .broadcast_mul(&anchors)?
        .broadcast_div(&input_wh)?;
    let pred_box = Tensor::cat(&[pred_xy, pred_wh], 2)?
        .permute((0, 3, 4, 1, 2))?
        .reshape((m, gh * gw * a, 4))?;
    let best = best_iou(&pred_box, y_true, objects, layer)?.reshape((m, gh, gw, a))?;
    let ignore_mask = best.lt(ignore_thresh as f64)?.to_dtype(DType::F32)?;
    let ignore = ignore_mask.permute((0, 3, 1, 2))?.unsqueeze(2)?;

    let y_xy = y.narrow(2, 0, 2)?;
    let y_wh = y.narrow(2, 2, 2)?;
    let true_xy = y_xy.broadcast_mul(&grid_wh)?.broadcast_sub(&grid)?;
    // The log is guarded before it is taken: 0 where there is no object, and a zero-sized box
    // (keras-yolo3's zero-height quirk) gets log(1e-9) instead of -inf.
    let true_wh = y_wh
        .broadcast_div(&anchors)?
        .broadcast_mul(&input_wh)?
        .maximum(WH_RATIO_FLOOR as f64)?
        .log()?
        .broadcast_mul(&obj)?;
    let scale = y
        .narrow(2, 2, 1)?
        .mul(&y.narrow(2, 3, 1)?)?
        .affine(-1.0, 2.0)?;
    let obj_scale = obj.mul(&scale)?;
    let mf = m as f64;

    let (xy, wh) = if cfg.box_loss == BoxLoss::Keras {
        let xy = bce_with_logits(&feats.narrow(2, 0, 2)?, &true_xy)?
            .broadcast_mul(&obj_scale)?
            .sum_all()?
            / mf;
        let wh = ((true_wh - feats.narrow(2, 2, 2)?)?.sqr()? * 0.5)?
            .broadcast_mul(&obj_scale)?
            .sum_all()?
            / mf;
        (xy?, wh?)
    } else {
        // The IoU box term replaces both; it is reported as `xy`, `wh` is zero.
        let xy = box_loss::box_term(&feats, y_true, objects, layer, cfg.box_loss)?;
        (xy, Tensor::zeros((), DType::F32, device)?)
    };
    let conf_bce = bce_with_logits(&feats.narrow(2, 4, 1)?, &obj)?;
    let not_obj = obj.affine(-1.0, 1.0)?;
    let confidence = (conf_bce.mul(&obj)? + conf_bce.mul(&not_obj)?.mul(&ignore)?)?.sum_all()? / mf;
    let eps = cfg.label_smoothing;
    let class_target = if eps == 0.0 {
        y.narrow(2, 5, c)?
    } else {
        y.narrow(2, 5, c)?
            .affine(f64::from(1.0 - eps), f64::from(0.5 * eps))?
    };
    let class = bce_with_logits(&feats.narrow(2, 5, c)?, &class_target)?
        .broadcast_mul(&obj)?
        .sum_all()?
        / mf;
    Ok(LayerParts {
        xy,
        wh,
        confidence: confidence?,
        class: class?,
        ignore_mask,
        best_iou: best,
    })
}
