//! keras-yolo3's `yolo_head`: decoding one raw output layer into boxes and probabilities.

use candle_core::{DType, Device, Tensor};

use crate::LossError;

/// The decoded output of one layer, every tensor in Keras layout `(m, gh, gw, A, k)`.
#[derive(Debug, Clone)]
pub struct YoloHead {
    /// Cell offsets `(gh, gw, 1, 2)` as (column, row), the `grid` of keras-yolo3.
    pub grid: Tensor,
    /// Box centre (x, y) relative to the input: `(sigmoid(tx, ty) + (col, row)) / (gw, gh)`; k = 2.
    pub box_xy: Tensor,
    /// Box size (w, h) relative to the input: `exp(tw, th) * anchor / (w, h)`; k = 2.
    pub box_wh: Tensor,
    /// Objectness probability `sigmoid(t_o)`; k = 1.
    pub box_confidence: Tensor,
    /// Independent class probabilities `sigmoid(t_c)`; k = C.
    pub box_class_probs: Tensor,
}

/// Checks a raw output `(m, A*(5+C), gh, gw)` and returns `(m, gh, gw)`.
pub(crate) fn raw_dims(
    raw: &Tensor,
    num_anchors: usize,
    num_classes: usize,
    what: &str,
) -> Result<(usize, usize, usize), LossError> {
    let dims = raw.dims();
    let channels = num_anchors * (5 + num_classes);
    if dims.len() != 4 || dims[1] != channels || dims[2] == 0 || dims[3] == 0 {
        return Err(LossError::Shape {
            what: what.to_string(),
            expected: format!(
                "(m, {channels}, gh, gw) = (m, A*(5+C), gh, gw) with A = {num_anchors}, C = {num_classes}"
            ),
            got: dims.to_vec(),
        });
    }
    Ok((dims[0], dims[2], dims[3]))
}

/// The `(gh, gw, 1, 2)` grid of (column, row) offsets as f32 on `device`.
pub(crate) fn grid_tensor(gh: usize, gw: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut data = Vec::with_capacity(gh * gw * 2);
    for j in 0..gh {
        for i in 0..gw {
            data.push(i as f32);
            data.push(j as f32);
        }
    }
    Tensor::from_vec(data, (gh, gw, 1, 2), device)
}

/// Decodes a raw output layer the way keras-yolo3's `yolo_head` does.
///
/// `raw` is NCHW `(m, A*(5+C), gh, gw)` with channel `a*(5+C) + f` (`f` = tx, ty, tw, th,
/// objectness, classes), `anchors` the layer's `A` anchors as (w, h) in input pixels and
/// `input_hw` the network input (h, w). Any grid works, non-square included. The result is
/// differentiable with respect to `raw` and lives on its device.
pub fn yolo_head(
    raw: &Tensor,
    anchors: &[[f32; 2]],
    num_classes: usize,
    input_hw: (usize, usize),
) -> Result<YoloHead, LossError> {
    let num_anchors = anchors.len();
    let (m, gh, gw) = raw_dims(raw, num_anchors, num_classes, "yolo_head raw")?;
    let device = raw.device();
    let dtype = raw.dtype();
    let k = 5 + num_classes;
    // NCHW (m, A*k, gh, gw) -> (m, A, k, gh, gw) is free; the permute to Keras order is a view.
    let feats = raw
        .reshape((m, num_anchors, k, gh, gw))?
        .permute((0, 3, 4, 1, 2))?;
    let grid = grid_tensor(gh, gw, device)?.to_dtype(dtype)?;
    let grid_wh = Tensor::new(&[gw as f32, gh as f32], device)?.to_dtype(dtype)?;
    let input_wh = Tensor::new(&[input_hw.1 as f32, input_hw.0 as f32], device)?.to_dtype(dtype)?;
    let anchors_flat: Vec<f32> = anchors.iter().flat_map(|a| [a[0], a[1]]).collect();
    let anchors_t = Tensor::from_vec(anchors_flat, (num_anchors, 2), device)?.to_dtype(dtype)?;

    let box_xy = candle_nn::ops::sigmoid(&feats.narrow(4, 0, 2)?)?
        .broadcast_add(&grid)?
        .broadcast_div(&grid_wh)?;
    let box_wh = feats
        .narrow(4, 2, 2)?
        .exp()?
        .broadcast_mul(&anchors_t)?
        .broadcast_div(&input_wh)?;
    let box_confidence = candle_nn::ops::sigmoid(&feats.narrow(4, 4, 1)?)?;
    let box_class_probs = candle_nn::ops::sigmoid(&feats.narrow(4, 5, num_classes)?)?;
    Ok(YoloHead {
        grid,
        box_xy,
        box_wh,
        box_confidence,
        box_class_probs,
    })
}

/// Checks that a tensor is f32 (the loss's host paths read f32 data).
pub(crate) fn ensure_f32(t: &Tensor, what: &str) -> Result<(), LossError> {
    if t.dtype() != DType::F32 {
        return Err(LossError::DType {
            what: what.to_string(),
            got: t.dtype(),
        });
    }
    Ok(())
}
