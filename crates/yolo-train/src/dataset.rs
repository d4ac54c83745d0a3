//! The dataset side of a run: annotation lines split as keras-yolo3 splits them, class names,
//! anchors, and the deterministic letterbox path shared by validation, the bottleneck cache and mAP.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use yolo_data::{
    get_random_data, load_rgb, preprocess_true_boxes, read_anchors, read_annotations, read_classes,
    Anchors, Annotation, AugmentConfig, BoxLabel, InputShape,
};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::split::split_train_val;

/// Everything a run needs to know about its data.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Training lines (after the split).
    pub train: Vec<Annotation>,
    /// Validation lines (the last `val_split` of the shuffled file).
    pub val: Vec<Annotation>,
    /// Class names.
    pub classes: Vec<String>,
    /// Anchors (file or the model's defaults).
    pub anchors: Anchors,
    /// Network input.
    pub input: InputShape,
}

impl Dataset {
    /// Reads and splits the data `cfg` names, validating every box against the classes.
    pub fn load(cfg: &TrainConfig) -> Result<Dataset> {
        let classes = read_classes(&cfg.classes)?;
        let lines = read_annotations(&cfg.annotations)?;
        for a in &lines {
            yolo_data::check_annotation(a, classes.len(), &cfg.annotations)?;
        }
        let anchors = match &cfg.anchors {
            Some(p) => read_anchors(p)?,
            None if cfg.tiny => Anchors::tiny_default(),
            None => Anchors::yolo_default(),
        };
        let want = if cfg.tiny { 6 } else { 9 };
        if anchors.wh.len() != want {
            return Err(TrainError::Config {
                origin: cfg
                    .anchors
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                msg: format!(
                    "{} anchors, the {} model needs {want}",
                    anchors.wh.len(),
                    if cfg.tiny { "tiny" } else { "YOLOv3" }
                ),
            });
        }
        let (train, val) = split_train_val(&lines, cfg.split_seed, cfg.val_split);
        if train.is_empty() || val.is_empty() {
            return Err(TrainError::Dataset(format!(
                "{}: {} lines give {} training and {} validation images (val_split {}); both must be non-empty",
                cfg.annotations.display(),
                lines.len(),
                train.len(),
                val.len(),
                cfg.val_split
            )));
        }
        let input = InputShape::new(cfg.input[0], cfg.input[1])?;
        Ok(Dataset {
            train,
            val,
            classes,
            anchors,
            input,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

/// A batch through the deterministic letterbox path (`get_random_data(random=False)`).
pub struct LetterboxBatch {
    /// `(B, 3, h, w)` in `[0, 1]` on the requested device.
    pub images: Tensor,
    /// Boxes in input pixels.
    pub boxes: Vec<Vec<BoxLabel>>,
    /// Original `(h, w)` of each image.
    pub image_hw: Vec<(f32, f32)>,
    /// Image paths.
    pub paths: Vec<String>,
}

/// Letterboxes `anns` (decoded in parallel). Box order is shuffled, as keras-yolo3 does, with a
/// stream derived from `(seed, index)`, so the result is deterministic.
pub fn letterbox_batch(
    anns: &[Annotation],
    first_index: usize,
    input: InputShape,
    seed: u64,
    device: &Device,
) -> Result<LetterboxBatch> {
    let aug = AugmentConfig::default();
    type Decoded = (Vec<f32>, Vec<BoxLabel>, (f32, f32));
    let samples: Vec<Result<Decoded>> = anns
        .par_iter()
        .enumerate()
        .map(|(k, a)| {
            let img = load_rgb(&a.path)?;
            let hw = (img.height() as f32, img.width() as f32);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream((first_index + k) as u64);
            let s = get_random_data(&img, &a.boxes, input, false, &aug, &mut rng);
            Ok((s.image, s.boxes, hw))
        })
        .collect();
    let mut pixels = Vec::with_capacity(anns.len() * 3 * input.h * input.w);
    let mut boxes = Vec::with_capacity(anns.len());
    let mut image_hw = Vec::with_capacity(anns.len());
    for s in samples {
        let (img, b, hw) = s?;
        pixels.extend_from_slice(&img);
        boxes.push(b);
        image_hw.push(hw);
    }
    let images = Tensor::from_vec(pixels, (anns.len(), 3, input.h, input.w), device)?;
    Ok(LetterboxBatch {
        images,
        boxes,
        image_hw,
        paths: anns.iter().map(|a| a.path.display().to_string()).collect(),
    })
}

/// `preprocess_true_boxes` for a batch, as tensors on `device`.
pub fn y_true_tensors(
    boxes: &[Vec<BoxLabel>],
    input: InputShape,
    anchors: &Anchors,
    num_classes: usize,
    device: &Device,
) -> Result<Vec<Tensor>> {
    preprocess_true_boxes(boxes, input, anchors, num_classes)?
        .iter()
        .map(|y| Ok(y.to_tensor(device)?))
        .collect()
}

/// The keras-yolo3 annotation line of `a` (used in cache fingerprints).
pub fn annotation_line(a: &Annotation) -> String {
    yolo_data::format_annotation_line(a)
}

/// True when `p` looks like a darknet weights file rather than safetensors.
pub fn is_darknet_weights(p: &Path) -> bool {
    !p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}
