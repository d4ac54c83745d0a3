//! The dataset side of a run: annotation lines split as keras-yolo3 splits them, class names,
//! anchors, and the deterministic letterbox path shared by validation, the bottleneck cache and mAP.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use yolo_data::{
    check_annotation_bytes, get_random_data, load_rgb, parse_annotation_line,
    preprocess_true_boxes, read_anchors, read_classes, Anchors, Annotation, AugmentConfig,
    BoxLabel, CheckOptions, InputShape,
};

use yolo_loss::{LossConfig, ObjectSlots};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::model_source::read_cfg_model;
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
    /// Anchors (file, darknet cfg or the model's defaults), with the cfg's masks when one is given.
    pub anchors: Anchors,
    /// Where the anchors and their layer masks come from, for the run log.
    pub anchors_origin: String,
    /// Network input.
    pub input: InputShape,
    /// What the up-front check of the annotation file and its images found and dropped.
    pub check: DataCheck,
}

/// The outcome of the check [`Dataset::load`] runs before training (`yolo check-data`'s).
#[derive(Debug, Clone, PartialEq)]
pub struct DataCheck {
    /// Annotation lines read (blank lines excluded).
    pub lines: usize,
    /// Distinct images decoded.
    pub images: usize,
    /// 1-based lines dropped because of an error (only with `skip_bad`).
    pub skipped_lines: Vec<usize>,
    /// Warnings (duplicate lines), which do not stop training.
    pub warnings: usize,
    /// Where the dropped samples are listed (`RUN_DIR/skipped_samples.txt`), when any were.
    pub skipped_file: Option<PathBuf>,
    /// Wall time of the check in seconds (images are decoded in parallel).
    pub seconds: f64,
}

impl DataCheck {
    /// One line for the run log: what was checked, how long it took, what was skipped.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "checked {} annotation lines and {} images in {:.1} s",
            self.lines, self.images, self.seconds
        );
        if self.warnings > 0 {
            s.push_str(&format!(
                "; {} warnings (duplicate lines, kept)",
                self.warnings
            ));
        }
        if let Some(f) = &self.skipped_file {
            s.push_str(&format!(
                "; skipped {} bad samples (listed in {})",
                self.skipped_lines.len(),
                f.display()
            ));
        }
        s
    }
}

/// The name of the file, in the run directory, listing the samples `skip_bad` dropped.
pub const SKIPPED_SAMPLES_FILE: &str = "skipped_samples.txt";

/// Checks the annotation file and every image as `yolo check-data` does. With errors, fails with
/// the report unless `cfg.skip_bad`, in which case the bad lines are dropped and listed (one
/// `file:line: kind: detail` per problem) in `RUN_DIR/skipped_samples.txt`, written atomically.
/// Returns the good lines in file order.
fn checked_annotations(
    cfg: &TrainConfig,
    class_names: &[String],
) -> Result<(Vec<Annotation>, DataCheck)> {
    let num_classes = class_names.len();
    let start = Instant::now();
    let file = &cfg.annotations;
    let bytes = std::fs::read(file).map_err(|e| TrainError::io(file, e))?;
    // Image paths as written (relative to the working directory), as the loaders open them;
    // every image decoded (in parallel).
    let opts = CheckOptions {
        class_names: class_names.to_vec(),
        ..CheckOptions::default()
    };
    let report = check_annotation_bytes(&bytes, file, num_classes, &opts);
    let seconds = start.elapsed().as_secs_f64();
    // A file without a single box cannot be fixed by dropping lines.
    if report.has_file_errors() {
        let msg: Vec<String> = report
            .problems
            .iter()
            .filter(|p| p.kind.is_error() && p.kind.is_file_level())
            .map(|p| report.problem_line(p))
            .collect();
        return Err(TrainError::Dataset(msg.join("\n")));
    }
    if report.has_errors() && !cfg.skip_bad {
        return Err(TrainError::BadSamples(Box::new(report)));
    }
    let bad = report.bad_lines();
    let mut anns = Vec::new();
    // Numbered as `check_dataset` numbers them: split on '\n', 1-based.
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if bad.contains(&line) {
            continue;
        }
        // A line that is not UTF-8 or does not parse is among the bad lines; `?` is a safeguard.
        let text = std::str::from_utf8(raw)
            .map_err(|_| TrainError::format(file, format!("line {line} is not valid UTF-8")))?;
        if let Some(a) = parse_annotation_line(text, file, line)? {
            anns.push(a);
        }
    }
    let skipped_file = if bad.is_empty() {
        None
    } else {
        let path = cfg.run_dir.join(SKIPPED_SAMPLES_FILE);
        let mut listing = String::new();
        for p in report.problems.iter().filter(|p| p.kind.is_error()) {
            listing.push_str(&report.problem_line(p));
            listing.push('\n');
        }
        crate::atomic::atomic_write(&path, listing.as_bytes())?;
        Some(path)
    };
    let check = DataCheck {
        lines: report.lines,
        images: report.images,
        skipped_lines: bad.into_iter().collect(),
        warnings: report.problems.len() - report.error_count(),
        skipped_file,
        seconds,
    };
    Ok((anns, check))
}

impl Dataset {
    /// Reads and splits the data `cfg` names. The annotation file and every image are checked
    /// first (see `yolo_data::check_dataset`): any error stops here with the full report unless
    /// `cfg.skip_bad`, which drops the bad lines before the split (so a resume, which applies the
    /// same filter, gets the same split) and lists them in `RUN_DIR/skipped_samples.txt`.
    pub fn load(cfg: &TrainConfig) -> Result<Dataset> {
        let classes = read_classes(&cfg.classes)?;
        let (lines, check) = checked_annotations(cfg, &classes)?;
        let (anchors, anchors_origin) = model_anchors(cfg, classes.len())?;
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
            anchors_origin,
            input,
            check,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The `yolo_loss` settings of a run of `cfg` on this data: `cfg`'s loss options and the
    /// anchors' layer masks (a darknet cfg's; keras-yolo3's `anchor_mask` otherwise), the same
    /// masks `preprocess_true_boxes` assigned the boxes with.
    pub fn loss_config(&self, cfg: &TrainConfig) -> LossConfig {
        LossConfig {
            ignore_thresh: cfg.ignore_thresh as f32,
            label_smoothing: cfg.label_smoothing as f32,
            box_loss: cfg.box_loss,
            masks: self.anchors.custom_masks.as_ref().map(|m| {
                m.iter()
                    .map(|l| std::array::from_fn(|i| l.get(i).copied().unwrap_or(usize::MAX)))
                    .collect()
            }),
        }
    }

    /// Lines for the run log: the data check's summary and where anchors and masks come from.
    pub fn summary(&self) -> String {
        format!("{}\n{}", self.check.summary(), self.anchors_origin)
    }
}

/// The anchors and layer masks `cfg` asks for, and one line saying where they come from: the
/// anchors file, else the darknet cfg's `anchors=`, else keras-yolo3's defaults; masks from the
/// darknet cfg's `mask=`, else keras-yolo3's `anchor_mask`.
fn model_anchors(cfg: &TrainConfig, num_classes: usize) -> Result<(Anchors, String)> {
    let variant = cfg.variant;
    let darknet = match &cfg.darknet_cfg {
        Some(p) => {
            let m = read_cfg_model(p)?;
            if m.variant != variant {
                return Err(TrainError::Config {
                    origin: p.display().to_string(),
                    msg: format!(
                        "its {} [yolo] sections describe {}, but the run trains {} \
                         (variant = \"{}\")",
                        m.masks.len(),
                        m.variant.name(),
                        variant.name(),
                        cfg.variant.key()
                    ),
                });
            }
            Some((p, m))
        }
        None => None,
    };
    let (anchors, mut origin) = match (&cfg.anchors, &darknet) {
        (Some(p), _) => (read_anchors(p)?, format!("anchors from {}", p.display())),
        (None, Some((p, m))) => (
            m.anchors.clone(),
            format!("anchors from {} (anchors=)", p.display()),
        ),
        (None, None) if variant == yolo_model::Variant::Tiny => (
            Anchors::tiny_default(),
            "anchors: keras-yolo3's tiny_yolo_anchors.txt (built in)".to_string(),
        ),
        (None, None) => (
            Anchors::yolo_default(),
            "anchors: keras-yolo3's yolo_anchors.txt (built in)".to_string(),
        ),
    };
    let want = match variant {
        yolo_model::Variant::Tiny => 6,
        yolo_model::Variant::YoloV3 => 9,
    };
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
                variant.name()
            ),
        });
    }
    let Some((p, m)) = darknet else {
        origin.push_str(&format!(
            "; masks: keras-yolo3's anchor_mask {:?}",
            anchors.masks()
        ));
        return Ok((anchors, origin));
    };
    let anchors = anchors
        .with_masks(m.masks.clone())
        .map_err(|e| TrainError::Config {
            origin: p.display().to_string(),
            msg: e.to_string(),
        })?;
    origin.push_str(&format!(
        "; masks from {} (mask=): {:?}",
        p.display(),
        m.masks
    ));
    if m.num_classes != num_classes {
        origin.push_str(&format!(
            "; its classes={} is overridden by the classes file's {num_classes}",
            m.num_classes
        ));
    }
    Ok((anchors, origin))
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

/// [`y_true_tensors`] with the targets' object slots, listed on the host from the same arrays
/// before they go to `device`: what [`yolo_loss::yolo_loss_with_objects`] gathers by, so the loss
/// of a GPU batch reads nothing back.
pub fn y_true_with_objects(
    boxes: &[Vec<BoxLabel>],
    input: InputShape,
    anchors: &Anchors,
    num_classes: usize,
    device: &Device,
) -> Result<(Vec<Tensor>, ObjectSlots)> {
    let targets = preprocess_true_boxes(boxes, input, anchors, num_classes)?;
    let objects = ObjectSlots::new(targets.iter().map(|y| y.object_slots()).collect());
    let tensors = targets
        .iter()
        .map(|y| Ok(y.to_tensor(device)?))
        .collect::<Result<_>>()?;
    Ok((tensors, objects))
}

/// The keras-yolo3 annotation line of `a` (used in cache fingerprints).
pub fn annotation_line(a: &Annotation) -> String {
    yolo_data::format_annotation_line(a)
}

pub use yolo_model::is_darknet_weights;
