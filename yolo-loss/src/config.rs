//! Loss configuration and keras-yolo3's anchor masks.

use serde::{Deserialize, Serialize};

/// Settings of [`crate::yolo_loss`]. The default equals `train_bottleneck.py` (`ignore_thresh=.5`);
/// keras-yolo3's `train.py` uses 0.7 for tiny YOLOv3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    /// A prediction whose best IoU with a true box of its image and layer is `>=` this value is not
    /// counted as a negative in the objectness term.
    pub ignore_thresh: f32,
    /// Label smoothing `eps` of the class targets (ultralytics' `smooth_BCE`): a class target `y`
    /// becomes `y * (1 - eps) + eps / 2`, so positives aim at `1 - eps/2` and negatives at
    /// `eps/2`, which keeps confident logits from growing without bound. Objectness targets are
    /// unchanged. 0 (the default) is keras-yolo3's loss, bit for bit.
    pub label_smoothing: f32,
    /// How responsible cells are penalised for their box: keras-yolo3's centre cross-entropy and
    /// size squared error (the default), or an IoU-based loss on the decoded box.
    pub box_loss: BoxLoss,
    /// Which anchors each output layer uses, layer 0 (stride 32) first, as indices into the
    /// anchors given to the loss. `None` (the default) is keras-yolo3's [`anchor_mask`]; a darknet
    /// `.cfg` brings its own (`yolov3-tiny.cfg` gives its stride-16 layer anchors `0,1,2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<Vec<[usize; 3]>>,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            ignore_thresh: 0.5,
            label_smoothing: 0.0,
            box_loss: BoxLoss::Keras,
            masks: None,
        }
    }
}

/// The box term of [`crate::yolo_loss`] (serde names `keras`, `giou`, `ciou`).
///
/// With `Giou` or `Ciou` the centre and size terms of every responsible slot are replaced by
/// `box_loss_scale * (1 - IoU')`, where `IoU'` is the generalised IoU (Rezatofighi et al. 2019)
/// or the complete IoU (Zheng et al. 2020) between the decoded predicted box (`yolo_head`'s
/// decode: `(sigmoid(t_xy) + grid) / grid`, `exp(t_wh) * anchor / input`) and the true box, and
/// `box_loss_scale = 2 - w*h` as in keras-yolo3. The term is reported in the `xy` component and
/// `wh` is zero. These variants are differentiated by candle's autograd, so they always run the
/// tensor-op loss (the fused CPU kernel covers keras-yolo3's terms only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxLoss {
    /// keras-yolo3: sigmoid cross-entropy of the centre offsets plus half the squared error of
    /// the log sizes, both weighted by `2 - w*h`.
    #[default]
    Keras,
    /// `1 - GIoU`: IoU minus the part of the smallest enclosing box not covered by the union;
    /// gives a gradient even when the boxes do not overlap.
    Giou,
    /// `1 - CIoU`: `1 - IoU + rho^2 / c^2 + alpha * v` (centre distance over the enclosing
    /// diagonal, and an aspect-ratio term whose weight `alpha` is not differentiated, as in
    /// ultralytics).
    Ciou,
}

impl BoxLoss {
    /// The serde / config name: `keras`, `giou` or `ciou`.
    pub fn name(self) -> &'static str {
        match self {
            BoxLoss::Keras => "keras",
            BoxLoss::Giou => "giou",
            BoxLoss::Ciou => "ciou",
        }
    }
}

/// keras-yolo3's `anchor_mask`: which anchors each output layer uses, layer 0 (stride 32) first.
/// 3 outputs use `[[6,7,8],[3,4,5],[0,1,2]]`, 2 outputs (tiny) `[[3,4,5],[1,2,3]]` (anchor 0 is
/// never used and anchor 3 is shared, exactly as keras-yolo3 does).
pub fn anchor_mask(num_layers: usize) -> Option<&'static [[usize; 3]]> {
    const YOLO: [[usize; 3]; 3] = [[6, 7, 8], [3, 4, 5], [0, 1, 2]];
    const TINY: [[usize; 3]; 2] = [[3, 4, 5], [1, 2, 3]];
    match num_layers {
        3 => Some(&YOLO),
        2 => Some(&TINY),
        _ => None,
    }
}
