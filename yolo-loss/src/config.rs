//! Loss configuration and keras-yolo3's anchor masks.

use serde::{Deserialize, Serialize};

/// Settings of [`crate::yolo_loss`]. The default equals `train_bottleneck.py` (`ignore_thresh=.5`);
/// keras-yolo3's `train.py` uses 0.7 for tiny YOLOv3.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    /// A prediction whose best IoU with a true box of its image and layer is `>=` this value is not
    /// counted as a negative in the objectness term.
    pub ignore_thresh: f32,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self { ignore_thresh: 0.5 }
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
