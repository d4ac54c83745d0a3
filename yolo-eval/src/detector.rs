//! Running a detector on images: letterbox (keras-yolo3's `letterbox_image`), batch, forward, and
//! [`crate::yolo_eval_batch`]. The network is any forward function, so this crate needs no model
//! code: pass e.g. `|x| body.forward(x)` of a `yolo_model::YoloBody`.

use candle_core::{Device, Tensor};
use image::RgbImage;
use yolo_data::InputShape;

use crate::detection::Detections;
use crate::error::Result;
use crate::postprocess::{yolo_eval_batch_masked, EvalParams};

/// A network plus everything `yolo_eval` needs to turn its outputs into detections.
pub struct Detector<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Vec<Tensor>>,
{
    /// Maps an NCHW batch `(m, 3, h, w)` in `[0, 1]` to the raw output layers, coarsest first.
    pub forward: F,
    /// All anchors of the model (9 or 6), as (w, h) in input pixels.
    pub anchors: Vec<[f32; 2]>,
    /// Anchor indices per output layer, coarsest first (a darknet cfg's `mask=`); `None`:
    /// keras-yolo3's `anchor_mask`.
    pub masks: Option<Vec<Vec<usize>>>,
    /// Number of classes.
    pub num_classes: usize,
    /// Network input size.
    pub input: InputShape,
    /// Score/IoU thresholds and max boxes.
    pub params: EvalParams,
    /// Device the batch is sent to.
    pub device: Device,
}

impl<F> Detector<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Vec<Tensor>>,
{
    /// Detects objects in each image (any size; grayscale must already be RGB, as
    /// `yolo_data::load_rgb` returns it). All images go through the network as one batch; split
    /// large lists with [`Detector::detect_batched`].
    pub fn detect(&self, images: &[RgbImage]) -> Result<Vec<Detections>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let (h, w) = (self.input.h, self.input.w);
        let mut data = Vec::with_capacity(images.len() * 3 * h * w);
        let mut shapes = Vec::with_capacity(images.len());
        for im in images {
            let boxed = yolo_data::letterbox_image(im, self.input);
            data.extend(yolo_data::to_chw_unit(&boxed));
            shapes.push((im.height() as f32, im.width() as f32));
        }
        let x = Tensor::from_vec(data, (images.len(), 3, h, w), &self.device)?;
        let outputs = (self.forward)(&x)?;
        yolo_eval_batch_masked(
            &outputs,
            &self.anchors,
            self.masks.as_deref(),
            self.num_classes,
            &shapes,
            &self.params,
        )
    }

    /// [`Detector::detect`] in batches of `batch_size` images.
    pub fn detect_batched(
        &self,
        images: &[RgbImage],
        batch_size: usize,
    ) -> Result<Vec<Detections>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch_size.max(1)) {
            out.extend(self.detect(chunk)?);
        }
        Ok(out)
    }
}
