//! One detected object, as `yolo_eval` returns it.

use serde::{Deserialize, Serialize};

/// A detection in original-image pixels, in keras-yolo3's box order `(y_min, x_min, y_max, x_max)`.
///
/// Boxes are not clipped to the image (keras-yolo3 does not clip them either). Use
/// [`Detection::xyxy`] or [`Detection::to_coco_bbox`] for other conventions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// 0-based class index.
    pub class: usize,
    /// `objectness * class probability`.
    pub score: f32,
    /// Top edge.
    pub y_min: f32,
    /// Left edge.
    pub x_min: f32,
    /// Bottom edge.
    pub y_max: f32,
    /// Right edge.
    pub x_max: f32,
}

impl Detection {
    /// The box as `[x_min, y_min, x_max, y_max]`.
    pub fn xyxy(&self) -> [f32; 4] {
        [self.x_min, self.y_min, self.x_max, self.y_max]
    }

    /// The box as COCO's `[x, y, width, height]` (no +1).
    pub fn to_coco_bbox(&self) -> [f32; 4] {
        [
            self.x_min,
            self.y_min,
            self.x_max - self.x_min,
            self.y_max - self.y_min,
        ]
    }

    /// The box clipped to an image of `width x height` pixels (for drawing; evaluation uses the
    /// unclipped box).
    pub fn clipped(&self, width: u32, height: u32) -> [f32; 4] {
        let (w, h) = (width as f32, height as f32);
        [
            self.x_min.clamp(0.0, w),
            self.y_min.clamp(0.0, h),
            self.x_max.clamp(0.0, w),
            self.y_max.clamp(0.0, h),
        ]
    }
}

/// The detections of one image: class 0 first, then class 1, ...; within a class by decreasing
/// score (the order of keras-yolo3's `yolo_eval`).
pub type Detections = Vec<Detection>;
