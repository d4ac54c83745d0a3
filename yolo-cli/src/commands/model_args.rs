//! The model options `detect`, `eval` and `info` share: darknet `.weights` (with or without
//! `.cfg`), a safetensors checkpoint, or a run folder, plus overrides of what goes with them.

use std::path::PathBuf;

use yolo_train::ModelRequest;

/// Which model to load and, optionally, its classes, anchors and input size.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Model weights: darknet .weights (e.g. yolov3-tiny.weights) or a .safetensors checkpoint.
    /// Variant and class count are read from the file.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// darknet .cfg of the .weights file: its anchors, masks, classes and input size are used.
    #[arg(long)]
    pub cfg: Option<PathBuf>,
    /// A training run folder: its classes, anchors, input size, variant and weights
    /// (best.safetensors, else the latest epoch's, else the last finished phase's).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Classes file, one name per line [default: the run's; COCO's 80 names for 80 classes].
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Anchors file [default: the run's, the cfg's, or keras-yolo3's built-in anchors].
    #[arg(long)]
    pub anchors: Option<PathBuf>,
    /// The model is tiny YOLOv3 (only needed when the weights file cannot tell).
    #[arg(long)]
    pub tiny: bool,
    /// Network input size, square, a multiple of 32 [default: the run's, the cfg's, or 416].
    #[arg(long, visible_alias = "imgsz", alias = "input", alias = "size")]
    pub input_size: Option<usize>,
    /// Device: cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    /// True when a model was named.
    pub fn given(&self) -> bool {
        self.weights.is_some() || self.run.is_some()
    }

    /// The request for [`yolo_train::ModelSource::resolve`].
    pub fn request(&self) -> ModelRequest {
        ModelRequest {
            weights: self.weights.clone(),
            cfg: self.cfg.clone(),
            run: self.run.clone(),
            classes: self.classes.clone(),
            anchors: self.anchors.clone(),
            tiny: self.tiny,
            input_size: self.input_size,
        }
    }
}
