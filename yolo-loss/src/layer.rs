//! Geometry of one output layer and the checks of `yolo_loss`'s arguments.

use candle_core::Tensor;

use crate::head::{ensure_f32, raw_dims};
use crate::{anchor_mask, LossError};

/// Floor of the size ratio `y_true_wh / anchor * input` before its log: keras-yolo3 takes the log
/// first and masks afterwards, which gives -inf for non-object slots and for zero-height boxes.
/// No real box comes near it (a 1-pixel box against a 1000-pixel anchor is 1e-3).
pub(crate) const WH_RATIO_FLOOR: f32 = 1e-9;

/// One output layer: batch, anchors, classes, grid, its anchors and the network input size.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub m: usize,
    pub a: usize,
    pub c: usize,
    pub gh: usize,
    pub gw: usize,
    pub anchors: Vec<[f32; 2]>,
    /// Network input width and height, 32 x the first output's grid (as keras-yolo3 derives it).
    pub input_w: usize,
    pub input_h: usize,
}

impl Layer {
    /// Channels per anchor, 5 + C.
    pub fn k(&self) -> usize {
        5 + self.c
    }
}

/// Validates the arguments of `yolo_loss` and returns the geometry of every layer.
pub(crate) fn layers(
    outputs: &[Tensor],
    y_true: &[Tensor],
    anchors: &[[f32; 2]],
    num_classes: usize,
    masks: Option<&[[usize; 3]]>,
) -> Result<Vec<Layer>, LossError> {
    let num_layers = outputs.len();
    let keras = anchor_mask(num_layers).ok_or_else(|| {
        LossError::Anchors(format!(
            "yolo_loss: expected 3 outputs (YOLOv3) or 2 (tiny), got {num_layers}"
        ))
    })?;
    let mask = masks.unwrap_or(keras);
    if mask.len() != num_layers {
        return Err(LossError::Anchors(format!(
            "yolo_loss: {num_layers} outputs but {} anchor masks ({mask:?})",
            mask.len()
        )));
    }
    if y_true.len() != num_layers {
        return Err(LossError::Anchors(format!(
            "yolo_loss: {num_layers} outputs but {} y_true tensors",
            y_true.len()
        )));
    }
    if anchors.len() != 3 * num_layers {
        return Err(LossError::Anchors(format!(
            "yolo_loss: {num_layers} outputs need {} anchors, got {}",
            3 * num_layers,
            anchors.len()
        )));
    }
    if let Some(bad) = mask.iter().flatten().find(|&&i| i >= anchors.len()) {
        return Err(LossError::Anchors(format!(
            "yolo_loss: the anchor masks {mask:?} use anchor {bad}, but there are {} anchors",
            anchors.len()
        )));
    }
    let mut out = Vec::with_capacity(num_layers);
    let mut input = (0, 0);
    let mut batch = 0;
    for (l, (raw, yt)) in outputs.iter().zip(y_true).enumerate() {
        ensure_f32(raw, &format!("yolo_loss outputs[{l}]"))?;
        ensure_f32(yt, &format!("yolo_loss y_true[{l}]"))?;
        let (m, gh, gw) = raw_dims(raw, 3, num_classes, &format!("yolo_loss outputs[{l}]"))?;
        if l == 0 {
            input = (32 * gh, 32 * gw);
            batch = m;
            if m == 0 {
                return Err(LossError::Shape {
                    what: "yolo_loss outputs[0]".into(),
                    expected: "a batch of at least one image".into(),
                    got: raw.dims().to_vec(),
                });
            }
        }
        if m != batch {
            return Err(LossError::Shape {
                what: format!("yolo_loss outputs[{l}]"),
                expected: format!("batch {batch} like outputs[0]"),
                got: raw.dims().to_vec(),
            });
        }
        let want = [m, gh, gw, 3, 5 + num_classes];
        if yt.dims() != want {
            return Err(LossError::Shape {
                what: format!("yolo_loss y_true[{l}]"),
                expected: format!("{want:?} = (m, gh, gw, A, 5+C) in Keras layout"),
                got: yt.dims().to_vec(),
            });
        }
        out.push(Layer {
            m,
            a: 3,
            c: num_classes,
            gh,
            gw,
            anchors: mask[l].iter().map(|&i| anchors[i]).collect(),
            input_w: input.1,
            input_h: input.0,
        });
    }
    Ok(out)
}
