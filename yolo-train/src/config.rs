//! The training configuration: plain serde data whose defaults are keras-yolo3's
//! `train_bottleneck.py`. It is read from a TOML file laid over the defaults, then `key=value`
//! overrides (the CLI's flags) are laid over that, so a file or flag only names what differs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use yolo_model::{FreezeBody, Precision, Variant};

use crate::adam::AdamConfig;
use crate::best_model::BestMonitor;
use crate::callbacks::CheckpointMonitor;
use crate::error::{Result, TrainError};
use crate::lr_schedule::{
    LrSchedule, ScheduleSpec, DEFAULT_LR_FINAL_FACTOR, DEFAULT_WARMUP_START_FACTOR,
};

/// Which phase of the schedule, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseKind {
    /// Optional (off by default): every layer trained from the initial weights on augmented images
    /// before the schedule proper; lets a demo start from random weights so freezing means something.
    Scratch,
    /// Stage 0: frozen body run once into an on-disk cache, output convs trained on the cache.
    Bottleneck,
    /// Stage 1: frozen body (`freeze_body`), augmented images.
    Frozen,
    /// Stage 2: everything trainable, ReduceLROnPlateau + EarlyStopping.
    Unfreeze,
}

impl PhaseKind {
    /// All phases in running order.
    pub const ALL: [PhaseKind; 4] = [
        PhaseKind::Scratch,
        PhaseKind::Bottleneck,
        PhaseKind::Frozen,
        PhaseKind::Unfreeze,
    ];

    /// The name used in files, metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Scratch => "scratch",
            PhaseKind::Bottleneck => "bottleneck",
            PhaseKind::Frozen => "frozen",
            PhaseKind::Unfreeze => "unfreeze",
        }
    }

    /// Parses a phase name.
    pub fn parse(s: &str) -> Option<PhaseKind> {
        PhaseKind::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The weights file written at the end of the phase (keras-yolo3's names, `.safetensors`).
    pub fn weights_file(self) -> &'static str {
        match self {
            PhaseKind::Scratch => "trained_weights_scratch.safetensors",
            PhaseKind::Bottleneck => "trained_weights_stage_0.safetensors",
            PhaseKind::Frozen => "trained_weights_stage_1.safetensors",
            PhaseKind::Unfreeze => "trained_weights_final.safetensors",
        }
    }
}

impl std::fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One phase of the schedule.
///
/// In memory the epochs use Keras numbering: the phase runs epochs `initial_epoch..epochs`
/// (0-based), as `model.fit(initial_epoch=.., epochs=..)` does. In TOML (config files, `--set`,
/// `--print-config`, `state.json`) `epochs` is the number of epochs of this phase, and
/// `end_epoch` (derived, optional on input) is the Keras end epoch `initial_epoch + epochs`. A
/// phase table written without `end_epoch` but with both `initial_epoch` and `epochs` (as older
/// versions wrote every config) keeps Keras' meaning: `epochs` is then the end epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "PhaseRepr", try_from = "PhaseRepr")]
pub struct PhaseConfig {
    /// Run this phase at all.
    pub enabled: bool,
    /// Keras number of the first epoch (`initial_epoch`); it names the epochs in metrics,
    /// checkpoints and `stop_after`, and seeds each epoch's data order.
    pub initial_epoch: usize,
    /// One past the last epoch (Keras `epochs`, the end epoch; see [`PhaseConfig::count`] for the
    /// number of epochs of the phase).
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam learning rate at the start of the phase.
    pub lr: f64,
    /// keras-yolo3 `freeze_body`, written as its integer level in TOML: 0 trains all, 1 freezes
    /// darknet53 (tiny: its first 20 layers), 2 freezes all but the 3 (tiny: 2) output convs. The
    /// bottleneck phase trains on the cached output of the frozen body, so it must be 2 there
    /// ([`TrainConfig::validate`] says so).
    pub freeze_body: FreezeBody,
    /// Apply ReduceLROnPlateau and EarlyStopping on `val_loss` (keras-yolo3: stage 2 only).
    pub plateau_and_early_stopping: bool,
    /// Shuffle the training samples each epoch (keras-yolo3's bottleneck generator does not;
    /// its image generator does).
    pub shuffle: bool,
    /// Augment training images (`get_random_data(random=True)`); off uses the letterbox path.
    /// Ignored by the bottleneck phase, whose cache is never augmented.
    pub augment: bool,
    /// Optional wall-time budget of the phase in seconds: no new epoch starts once the time spent
    /// plus the last epoch's duration would exceed it (at least one epoch always runs). Written
    /// as `inf` in TOML (`null` in JSON) when there is no budget.
    pub max_seconds: Option<f64>,
    /// Learning-rate schedule over the phase's steps: `constant` (keras-yolo3) or `cosine` (from
    /// `lr` to `lr_final_factor * lr`); see [`crate::lr_schedule`].
    pub lr_schedule: LrSchedule,
    /// Epochs of linear learning-rate warm-up at the start of the phase, per optimizer step, from
    /// `warmup_start_factor * lr` up to the scheduled rate (0: none, keras-yolo3).
    pub warmup_epochs: f64,
    /// Fraction of the learning rate the warm-up starts at.
    pub warmup_start_factor: f64,
    /// Fraction of `lr` the cosine schedule ends at (ultralytics' `lrf`).
    pub lr_final_factor: f64,
}

impl PhaseConfig {
    /// The learning-rate schedule settings of the phase.
    pub fn schedule(&self) -> ScheduleSpec {
        ScheduleSpec {
            schedule: self.lr_schedule,
            warmup_epochs: self.warmup_epochs,
            warmup_start_factor: self.warmup_start_factor,
            lr_final_factor: self.lr_final_factor,
        }
    }

    /// The number of epochs of the phase (`epochs - initial_epoch`, 0 when the end is before).
    pub fn count(&self) -> usize {
        self.epochs.saturating_sub(self.initial_epoch)
    }

    /// Keras epoch `epoch` (0-based, absolute) as users see it: `E/N`, 1-based within the phase.
    pub fn describe_epoch(&self, epoch: usize) -> String {
        format!(
            "{}/{}",
            epoch.saturating_sub(self.initial_epoch) + 1,
            self.count()
        )
    }
}

/// The serialized form of [`PhaseConfig`]: `epochs` is the phase's own count, `end_epoch` the
/// Keras end epoch (absent in files of older versions, whose `epochs` is the end epoch).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseRepr {
    enabled: bool,
    initial_epoch: usize,
    epochs: usize,
    #[serde(default)]
    end_epoch: Option<usize>,
    batch_size: usize,
    lr: f64,
    freeze_body: u8,
    plateau_and_early_stopping: bool,
    shuffle: bool,
    #[serde(default = "yes")]
    augment: bool,
    #[serde(
        default,
        serialize_with = "ser_seconds",
        deserialize_with = "de_seconds"
    )]
    max_seconds: Option<f64>,
    #[serde(default)]
    lr_schedule: LrSchedule,
    #[serde(default)]
    warmup_epochs: f64,
    #[serde(default = "default_warmup_start_factor")]
    warmup_start_factor: f64,
    #[serde(default = "default_lr_final_factor")]
    lr_final_factor: f64,
}

impl From<PhaseConfig> for PhaseRepr {
    fn from(c: PhaseConfig) -> Self {
        PhaseRepr {
            enabled: c.enabled,
            initial_epoch: c.initial_epoch,
            epochs: c.count(),
            end_epoch: Some(c.epochs),
            batch_size: c.batch_size,
            lr: c.lr,
            freeze_body: c.freeze_body.level(),
            plateau_and_early_stopping: c.plateau_and_early_stopping,
            shuffle: c.shuffle,
            augment: c.augment,
            max_seconds: c.max_seconds,
            lr_schedule: c.lr_schedule,
            warmup_epochs: c.warmup_epochs,
            warmup_start_factor: c.warmup_start_factor,
            lr_final_factor: c.lr_final_factor,
        }
    }
}

impl TryFrom<PhaseRepr> for PhaseConfig {
    type Error = String;

    fn try_from(r: PhaseRepr) -> std::result::Result<Self, String> {
        let epochs = match r.end_epoch {
            Some(end) => {
                if end.checked_sub(r.initial_epoch) != Some(r.epochs) {
                    return Err(format!(
                        "epochs {} (the phase's own count) and end_epoch {end} disagree: from                          initial_epoch {} that end is {} epochs",
                        r.epochs,
                        r.initial_epoch,
                        end as i64 - r.initial_epoch as i64
                    ));
                }
                end
            }
            // Written by an older version: `epochs` is Keras' end epoch.
            None => r.epochs,
        };
        Ok(PhaseConfig {
            enabled: r.enabled,
            initial_epoch: r.initial_epoch,
            epochs,
            batch_size: r.batch_size,
            lr: r.lr,
            freeze_body: FreezeBody::from_level(r.freeze_body).ok_or_else(|| {
                format!(
                    "freeze_body {} must be 0, 1 or 2 (keras-yolo3's levels)",
                    r.freeze_body
                )
            })?,
            plateau_and_early_stopping: r.plateau_and_early_stopping,
            shuffle: r.shuffle,
            augment: r.augment,
            max_seconds: r.max_seconds,
            lr_schedule: r.lr_schedule,
            warmup_epochs: r.warmup_epochs,
            warmup_start_factor: r.warmup_start_factor,
            lr_final_factor: r.lr_final_factor,
        })
    }
}

/// No budget is written as infinity: TOML has no null, so `max_seconds = inf` keeps the key
/// visible in `--print-config` (JSON writes a non-finite number as `null`).
fn ser_seconds<S: serde::Serializer>(
    v: &Option<f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(v.unwrap_or(f64::INFINITY))
}

/// Reads `max_seconds`: a number, `inf` or `null` (no budget).
fn de_seconds<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<f64>, D::Error> {
    let v = Option::<f64>::deserialize(d)?;
    Ok(v.filter(|x| *x != f64::INFINITY))
}

fn yes() -> bool {
    true
}

fn default_ema_tau() -> f64 {
    DEFAULT_EMA_TAU
}

fn default_multi_scale_every() -> usize {
    10
}

/// Default [`TrainConfig::ema_tau`] (ultralytics' ModelEMA).
pub const DEFAULT_EMA_TAU: f64 = 2000.0;

fn default_warmup_start_factor() -> f64 {
    DEFAULT_WARMUP_START_FACTOR
}

fn default_lr_final_factor() -> f64 {
    DEFAULT_LR_FINAL_FACTOR
}

impl PhaseConfig {
    /// A phase of the schedule from what differs between phases; the rest is shared: shuffled,
    /// augmented, no time budget, a constant Adam rate.
    fn keras(
        enabled: bool,
        epochs: std::ops::Range<usize>,
        batch_size: usize,
        lr: f64,
        freeze_body: FreezeBody,
        plateau_and_early_stopping: bool,
    ) -> Self {
        PhaseConfig {
            enabled,
            initial_epoch: epochs.start,
            epochs: epochs.end,
            batch_size,
            lr,
            freeze_body,
            plateau_and_early_stopping,
            shuffle: true,
            augment: true,
            max_seconds: None,
            lr_schedule: LrSchedule::Constant,
            warmup_epochs: 0.0,
            warmup_start_factor: DEFAULT_WARMUP_START_FACTOR,
            lr_final_factor: DEFAULT_LR_FINAL_FACTOR,
        }
    }

    fn scratch() -> Self {
        Self::keras(false, 0..10, 8, 1e-3, FreezeBody::None, false)
    }

    fn bottleneck() -> Self {
        Self::keras(true, 0..30, 8, 1e-3, FreezeBody::AllButOutputs, false)
    }

    fn frozen() -> Self {
        Self::keras(true, 0..50, 16, 1e-3, FreezeBody::AllButOutputs, false)
    }

    fn unfreeze() -> Self {
        Self::keras(true, 50..100, 4, 1e-4, FreezeBody::None, true)
    }
}

/// Where to stop a run early (for tests and experiments): after `epoch` of `phase` has been
/// completed and its state saved, as if the process had been killed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopAfter {
    /// The phase.
    pub phase: PhaseKind,
    /// The 0-based Keras epoch.
    pub epoch: usize,
}

/// Dtype of the bottleneck cache records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    /// 4 bytes per value; the cached phase then matches the full model to float rounding.
    F32,
    /// 2 bytes per value, half the disk.
    F16,
}

/// The whole training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// keras-yolo3 annotation file (`path x1,y1,x2,y2,c ...` per line).
    pub annotations: PathBuf,
    /// Class names, one per line.
    pub classes: PathBuf,
    /// Anchors file (`w,h, w,h, ...`); the YOLOv3 / tiny defaults when absent.
    pub anchors: Option<PathBuf>,
    /// A darknet `.cfg` (`yolov3.cfg`, `yolov3-tiny.cfg`) whose `[yolo]` sections give the
    /// anchors (unless `anchors` is set) and each output layer's anchor mask, as darknet uses
    /// them; its number of `[yolo]` sections must agree with `variant`. Its `classes=` may differ
    /// from the classes file (the output convs follow the classes file, as ultralytics overrides
    /// a model's `nc`). Absent: keras-yolo3's anchors and `anchor_mask`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub darknet_cfg: Option<PathBuf>,
    /// The network: `"yolov3"` (darknet53 `yolo_body`) or `"tiny"` (`tiny_yolo_body`, 6 anchors,
    /// 2 scales). `tiny = true` / `false`, the older spelling, reads as the same setting.
    #[serde(alias = "tiny")]
    pub variant: Variant,
    /// Network input `[height, width]`, multiples of 32.
    pub input: [usize; 2],
    /// Fraction of the lines held out for validation (the last ones after the shuffle).
    pub val_split: f64,
    /// Seed of the split shuffle (NumPy `RandomState`, keras-yolo3's 10101).
    pub split_seed: u32,
    /// Drop the annotation lines `yolo check-data` finds errors on (listed in
    /// `RUN_DIR/skipped_samples.txt`) instead of stopping with its report. Absent in older runs'
    /// configs, hence the serde default (off).
    #[serde(default)]
    pub skip_bad: bool,
    /// Start over in a `run_dir` that already holds a run: its config, state, metrics, plots,
    /// weights and checkpoints are deleted first (the bottleneck cache is kept: it is checked by
    /// fingerprint). Off: a new run goes to the next free `run_dir2`, `run_dir3`, ... as
    /// ultralytics does, so no stale file of an older run is ever mixed in.
    #[serde(default)]
    pub overwrite: bool,
    /// Seed of data order, augmentation and weight initialisation.
    pub seed: u64,
    /// Initial weights: a darknet `.weights` file or a safetensors checkpoint (loaded partially;
    /// mismatches are reported). Random initialisation when absent.
    pub weights: Option<PathBuf>,
    /// Directory receiving state, weights, checkpoints, metrics and plots.
    pub run_dir: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `metal`.
    pub device: String,
    /// Compute precision: `"f32"` (the default, and what older configs get), `"bf16"` or `"f16"`
    /// (mixed precision: f32 weights, BatchNorm statistics and Adam moments, 16-bit convolutions
    /// on candle's device-generic ops; f16 adds a dynamic loss scale). For GPUs: on the CPU the
    /// 16-bit matmuls widen to f32 and are slower, so there bf16 runs as f32 tensors with bf16
    /// convolution products on AMX tiles, on CPUs that have them, and `yolo train` refuses f16
    /// (and bf16 without AMX). See [`yolo_model::precision`] and [`crate::LossScaler`].
    #[serde(default)]
    pub precision: Precision,
    /// `yolo_loss` ignore threshold (0.5 in train_bottleneck.py).
    pub ignore_thresh: f64,
    /// Label smoothing `eps` of the class targets (ultralytics' `smooth_BCE`: positives aim at
    /// `1 - eps/2`, negatives at `eps/2`); 0 (the default, and what older configs get) is
    /// keras-yolo3's loss exactly.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Box term of the loss: `keras` (the default, and what older configs get: keras-yolo3's
    /// centre cross-entropy and size squared error), `giou` or `ciou` (`(2 - w*h) * (1 - IoU')`
    /// on the decoded box, logged as the `xy` part with `wh` zero; runs the tensor-op loss on
    /// the CPU too). See [`yolo_loss::BoxLoss`].
    #[serde(default)]
    pub box_loss: yolo_loss::BoxLoss,
    /// L2 factor on every conv kernel, added to the loss (Keras `l2(5e-4)`).
    pub l2: f64,
    /// Adam moments and epsilon (the LR comes from each phase).
    pub adam: AdamConfig,
    /// Validate on augmented images, as keras-yolo3 does (`random=True` by default); off means the
    /// deterministic letterbox path.
    pub augmented_validation: bool,
    /// ReduceLROnPlateau factor.
    pub plateau_factor: f64,
    /// ReduceLROnPlateau patience.
    pub plateau_patience: usize,
    /// ReduceLROnPlateau minimum improvement (Keras 2.1.5 `epsilon`).
    pub plateau_min_delta: f64,
    /// EarlyStopping patience.
    pub early_stopping_patience: usize,
    /// EarlyStopping minimum improvement.
    pub early_stopping_min_delta: f64,
    /// ModelCheckpoint period (check every N epochs, save when `checkpoint_monitor` improved).
    pub checkpoint_period: usize,
    /// Dtype of the bottleneck cache.
    pub cache_dtype: CacheDtype,
    /// Compute VOC mAP@0.5 on the validation set at the end of each phase.
    pub eval_map: bool,
    /// Score threshold for the mAP detections (`yolo eval`'s default, so the two agree).
    pub map_score_threshold: f32,
    /// Also compute validation mAP@0.5 after every N-th epoch of each phase (0: only at the end of
    /// each phase, per `eval_map`). Logged in the epoch line and metrics.csv's `map` column.
    #[serde(default)]
    pub map_every: usize,
    /// What the best-checkpoint rule monitors: `val_loss` (keras-yolo3, lower is better) or `map`
    /// (higher is better; mAP is then computed on every epoch the checkpoint checks).
    #[serde(default)]
    pub checkpoint_monitor: CheckpointMonitor,
    /// What picks `best.safetensors`, the run's best epoch over all phases: `map` (needs
    /// `eval_map`; otherwise `val_loss` is used), `val_loss` (without the L2 term) or `off`.
    #[serde(default)]
    pub best_monitor: BestMonitor,
    /// Check every gradient for NaN/inf after each step (the loss is always checked).
    pub check_gradients: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Batches prepared ahead by the loader.
    pub prefetch: usize,
    /// After the from-scratch phase, re-estimate the BatchNorm moving statistics over this many
    /// letterboxed training batches (0: off). Keras' momentum 0.99 leaves them ~100 steps behind
    /// the weights, which the inference-mode phases (bottleneck cache, frozen layers) then see.
    pub recalibrate_bn_batches: usize,
    /// Exponential moving average of the weights (ultralytics' ModelEMA), 0: off (keras-yolo3).
    /// With a decay `d` (e.g. 0.9999) every variable, BatchNorm statistics included, is averaged
    /// after each optimizer step with the ramped decay `d * (1 - exp(-updates / ema_tau))`;
    /// validation, mAP and the saved weights files use the average while training steps the raw
    /// weights. See [`crate::ema`].
    #[serde(default)]
    pub ema_decay: f64,
    /// Updates over which the EMA decay ramps up (ultralytics: 2000).
    #[serde(default = "default_ema_tau")]
    pub ema_tau: f64,
    /// Probability that an augmented training sample is a 2x2 mosaic of four images
    /// (ultralytics' mosaic, see `yolo_data::mosaic`) instead of keras-yolo3's
    /// `get_random_data`; 0 (the default, and what older configs get) is keras-yolo3 exactly.
    /// Used by the phases that augment (frozen, unfreeze, scratch with `augment`); validation,
    /// the bottleneck cache and BatchNorm recalibration never use it.
    #[serde(default)]
    pub mosaic: f64,
    /// Probability that an augmented training sample (plain or mosaic) is blended with a second
    /// one (ultralytics' mixup: ratio `Beta(32, 32)`, boxes of both; see `yolo_data::mixup_into`).
    /// 0 (the default, and what older configs get) is keras-yolo3. Same phases as `mosaic`.
    #[serde(default)]
    pub mixup: f64,
    /// Multi-scale training (darknet's `random=1`, ultralytics' `--multi-scale`): input sizes
    /// (the longer side, multiples of 32) the training batches of the augmenting phases are drawn
    /// from, a new draw every `multi_scale_every` batches (see `yolo_data::MultiScale`). Empty
    /// (the default, and what older configs get) trains at `input` only, as keras-yolo3.
    /// Validation, mAP, the bottleneck cache and BatchNorm recalibration stay at `input`.
    #[serde(default)]
    pub multi_scale: Vec<usize>,
    /// Batches between two multi-scale draws (darknet: 10).
    #[serde(default = "default_multi_scale_every")]
    pub multi_scale_every: usize,
    /// Stop (as if killed) after this phase/epoch; `--resume` continues from there.
    pub stop_after: Option<StopAfter>,
    /// Optional from-scratch phase (off by default).
    pub scratch: PhaseConfig,
    /// Stage 0.
    pub bottleneck: PhaseConfig,
    /// Stage 1.
    pub frozen: PhaseConfig,
    /// Stage 2.
    pub unfreeze: PhaseConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            annotations: PathBuf::from("train.txt"),
            classes: PathBuf::from("model_data/voc_classes.txt"),
            anchors: None,
            darknet_cfg: None,
            variant: Variant::YoloV3,
            input: [416, 416],
            val_split: 0.1,
            split_seed: 10101,
            skip_bad: false,
            overwrite: false,
            seed: 0,
            weights: None,
            run_dir: PathBuf::from("runs/train"),
            device: "cpu".into(),
            precision: Precision::F32,
            ignore_thresh: 0.5,
            label_smoothing: 0.0,
            box_loss: yolo_loss::BoxLoss::Keras,
            l2: 5e-4,
            adam: AdamConfig::default(),
            augmented_validation: false,
            plateau_factor: 0.1,
            plateau_patience: 3,
            plateau_min_delta: 1e-4,
            early_stopping_patience: 10,
            early_stopping_min_delta: 0.0,
            checkpoint_period: 3,
            cache_dtype: CacheDtype::F32,
            eval_map: true,
            map_score_threshold: 0.001,
            map_every: 0,
            checkpoint_monitor: CheckpointMonitor::ValLoss,
            best_monitor: BestMonitor::Map,
            check_gradients: true,
            progress: true,
            prefetch: 2,
            recalibrate_bn_batches: 16,
            ema_decay: 0.0,
            ema_tau: DEFAULT_EMA_TAU,
            mosaic: 0.0,
            mixup: 0.0,
            multi_scale: Vec::new(),
            multi_scale_every: default_multi_scale_every(),
            stop_after: None,
            scratch: PhaseConfig::scratch(),
            bottleneck: PhaseConfig::bottleneck(),
            frozen: PhaseConfig::frozen(),
            unfreeze: PhaseConfig::unfreeze(),
        }
    }
}

impl TrainConfig {
    /// The multi-scale setting the training loaders use, `None` when `multi_scale` is empty.
    pub fn multi_scale(&self) -> Option<yolo_data::MultiScale> {
        (!self.multi_scale.is_empty()).then(|| yolo_data::MultiScale {
            sizes: self.multi_scale.clone(),
            every: self.multi_scale_every,
        })
    }

    /// The configuration of one phase.
    pub fn phase(&self, p: PhaseKind) -> &PhaseConfig {
        match p {
            PhaseKind::Scratch => &self.scratch,
            PhaseKind::Bottleneck => &self.bottleneck,
            PhaseKind::Frozen => &self.frozen,
            PhaseKind::Unfreeze => &self.unfreeze,
        }
    }

    /// Whether some enabled phase has at least one epoch to run (`epochs > initial_epoch`).
    pub fn phases_with_epochs(&self) -> bool {
        PhaseKind::ALL.into_iter().any(|p| {
            let c = self.phase(p);
            c.enabled && c.epochs > c.initial_epoch
        })
    }

    /// Mutable access to one phase.
    pub fn phase_mut(&mut self, p: PhaseKind) -> &mut PhaseConfig {
        match p {
            PhaseKind::Scratch => &mut self.scratch,
            PhaseKind::Bottleneck => &mut self.bottleneck,
            PhaseKind::Frozen => &mut self.frozen,
            PhaseKind::Unfreeze => &mut self.unfreeze,
        }
    }

    /// Builds a configuration: defaults, then the TOML `file` (if any), then `overrides`
    /// (`key=value` with dotted keys such as `frozen.epochs=10`; values are TOML, bare words are
    /// strings). Unknown keys are errors.
    ///
    /// Phase lengths: `PHASE.epochs = N` is the number of epochs of that phase (per-phase
    /// counting, so `unfreeze.epochs=10` runs 10 unfreeze epochs, from its `initial_epoch`);
    /// `PHASE.epochs = "+N"` adds N to the count so far; `PHASE.end_epoch = E` gives Keras' end
    /// epoch instead. For Keras' `fit(initial_epoch=, epochs=)` pair, and older configs: a file's
    /// phase table that has `initial_epoch` and `epochs` but no `end_epoch`, or overrides that
    /// name both `PHASE.initial_epoch` and `PHASE.epochs`, take that `epochs` as the end epoch.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<TrainConfig> {
        let mut value = canonical(&TrainConfig::default(), "defaults")?;
        let mut origin = "flags".to_string();
        if let Some(f) = file {
            origin = f.display().to_string();
            let text = yolo_data::read_text(f)?;
            let user: toml::Value = toml::from_str(&text).map_err(|e| cfg_err(&origin, e))?;
            apply_layer(&mut value, user, &[]).map_err(|msg| TrainError::Config {
                origin: origin.clone(),
                msg,
            })?;
        }
        apply_overrides(&mut value, overrides)?;
        finish(value, origin)
    }

    /// This configuration with `overrides` laid over it (as [`TrainConfig::load`] lays them over
    /// a file): what `--resume RUN --set ...` runs with.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<TrainConfig> {
        let mut value = canonical(self, "stored configuration")?;
        apply_overrides(&mut value, overrides)?;
        finish(value, "flags".into())
    }

    /// Checks values that serde cannot: input multiples of 32, batch sizes, ranges.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let [h, w] = self.input;
        if h == 0 || w == 0 || h % 32 != 0 || w % 32 != 0 {
            return Err(format!("input {h}x{w} must be positive multiples of 32"));
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return Err(format!("val_split {} must be in [0, 1)", self.val_split));
        }
        for p in PhaseKind::ALL {
            let c = self.phase(p);
            if c.batch_size == 0 {
                return Err(format!("{p}.batch_size must be at least 1"));
            }
            if p == PhaseKind::Bottleneck && c.enabled && c.freeze_body != FreezeBody::AllButOutputs
            {
                return Err(format!(
                    "bottleneck.freeze_body {} must be 2: the phase trains the output convs on \
                     the cached output of the frozen body (train_bottleneck.py's stage 0); use \
                     frozen.freeze_body for stage 1",
                    c.freeze_body.level()
                ));
            }
            if c.enabled && c.epochs < c.initial_epoch {
                return Err(format!(
                    "{p}: end epoch {} is before initial_epoch {}",
                    c.epochs, c.initial_epoch
                ));
            }
            if let Some(t) = c.max_seconds {
                if t.is_nan() || t < 0.0 {
                    return Err(format!(
                        "{p}.max_seconds {t} must be a number of seconds >= 0 (inf: no budget)"
                    ));
                }
            }
            if !(c.lr.is_finite() && c.lr > 0.0) {
                return Err(format!("{p}.lr {} must be positive", c.lr));
            }
            if !(c.warmup_epochs.is_finite() && c.warmup_epochs >= 0.0) {
                return Err(format!(
                    "{p}.warmup_epochs {} must be a number of epochs >= 0",
                    c.warmup_epochs
                ));
            }
            for (key, v) in [
                ("warmup_start_factor", c.warmup_start_factor),
                ("lr_final_factor", c.lr_final_factor),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("{p}.{key} {v} must be in [0, 1]"));
                }
            }
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(format!(
                "ema_decay {} must be in [0, 1) (0: off)",
                self.ema_decay
            ));
        }
        if !(self.ema_tau.is_finite() && self.ema_tau > 0.0) {
            return Err(format!("ema_tau {} must be positive", self.ema_tau));
        }
        if let Some(m) = self.multi_scale() {
            m.validate().map_err(|e| match e {
                yolo_data::DataError::Config(m) => m,
                other => other.to_string(),
            })?;
        }
        if !(0.0..=1.0).contains(&self.mixup) {
            return Err(format!(
                "mixup {} must be a probability in [0, 1] (0: off)",
                self.mixup
            ));
        }
        if !(0.0..=1.0).contains(&self.mosaic) {
            return Err(format!(
                "mosaic {} must be a probability in [0, 1] (0: off)",
                self.mosaic
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "label_smoothing {} must be in [0, 1) (0: off)",
                self.label_smoothing
            ));
        }
        Ok(())
    }

    /// The configuration as TOML (what `yolo train --print-config` shows and a run's
    /// `config.toml` holds): every setting, with comment lines for the optional ones that are not
    /// set (TOML has no null), and each phase's `epochs` (its own count) and `end_epoch`.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string_pretty(self).map_err(|e| cfg_err("print", e))?;
        let mut unset = String::new();
        let notes = [
            (
                self.anchors.is_none(),
                "anchors",
                "the YOLOv3 / tiny default anchors",
            ),
            (self.weights.is_none(), "weights", "random initialisation"),
            (self.stop_after.is_none(), "stop_after", "run to the end"),
        ];
        for (absent, key, meaning) in notes {
            if absent {
                unset.push_str(&format!("# {key}: not set ({meaning})\n"));
            }
        }
        Ok(unset + &body)
    }
}

fn cfg_err(origin: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Config {
        origin: origin.to_string(),
        msg: e.to_string(),
    }
}

/// `cfg` as the TOML value the layers are laid on: each phase table holds `epochs` as its own
/// count, and no `end_epoch`.
fn canonical(cfg: &TrainConfig, origin: &str) -> Result<toml::Value> {
    let mut value = toml::Value::try_from(cfg).map_err(|e| cfg_err(origin, e))?;
    for p in PhaseKind::ALL {
        if let Some(t) = value.get_mut(p.name()).and_then(|t| t.as_table_mut()) {
            t.remove("end_epoch");
        }
    }
    Ok(value)
}

/// Lays the `overrides` (`key=value`) onto `value`, in order.
fn apply_overrides(value: &mut toml::Value, overrides: &[String]) -> Result<()> {
    let flag_err = |msg: String| TrainError::Config {
        origin: "flags".into(),
        msg,
    };
    // Keras' pair: overrides naming both PHASE.initial_epoch and PHASE.epochs.
    let keras: Vec<PhaseKind> = PhaseKind::ALL
        .into_iter()
        .filter(|p| {
            let key = format!("{p}.initial_epoch");
            overrides
                .iter()
                .any(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        })
        .collect();
    for o in overrides {
        let (key, raw) = o
            .split_once('=')
            .ok_or_else(|| flag_err(format!("`{o}` is not key=value")))?;
        let mut layer = toml::Value::Table(toml::Table::new());
        set_path(&mut layer, key.trim(), parse_value(raw.trim())).map_err(flag_err)?;
        apply_layer(value, layer, &keras).map_err(flag_err)?;
    }
    Ok(())
}

/// An integer setting of a phase table, if it is one.
fn int_of(t: &toml::Table, key: &str) -> Option<i64> {
    t.get(key).and_then(|v| v.as_integer())
}

/// Lays one source (a file, or one override) onto `base`. Phase lengths are kept in `base` as
/// either `epochs` (the phase's own count) or `end_epoch` (Keras' end, resolved by [`finish`]
/// against the final `initial_epoch`), whichever was given last; `keras` lists the phases whose
/// `epochs` is Keras' end epoch because the overrides also name their `initial_epoch`.
fn apply_layer(
    base: &mut toml::Value,
    mut layer: toml::Value,
    keras: &[PhaseKind],
) -> std::result::Result<(), String> {
    let mut lengths = Vec::new();
    if let Some(lt) = layer.as_table_mut() {
        spell_variant(lt)?;
        for p in PhaseKind::ALL {
            let Some(pt) = lt.get_mut(p.name()).and_then(|v| v.as_table_mut()) else {
                continue;
            };
            let pair = keras.contains(&p) || pt.contains_key("initial_epoch");
            let layer_init = int_of(pt, "initial_epoch");
            lengths.push((
                p,
                pair,
                layer_init,
                pt.remove("epochs"),
                pt.remove("end_epoch"),
            ));
        }
    }
    merge(base, layer);
    for (p, pair, layer_init, epochs, end) in lengths {
        let bt = base
            .get_mut(p.name())
            .and_then(|v| v.as_table_mut())
            .ok_or_else(|| format!("`{p}` is not a table"))?;
        let init = layer_init
            .or_else(|| int_of(bt, "initial_epoch"))
            .unwrap_or(0);
        let count_so_far = match (int_of(bt, "epochs"), int_of(bt, "end_epoch")) {
            (Some(n), _) => n,
            (None, Some(e)) => e - init,
            (None, None) => 0,
        };
        let end = match end {
            None => None,
            Some(toml::Value::Integer(e)) if e >= 0 => Some(e),
            Some(v) => {
                return Err(format!(
                    "{p}.end_epoch {v} must be a Keras epoch number (an integer >= 0)"
                ))
            }
        };
        let count = match epochs {
            None => None,
            Some(toml::Value::Integer(n)) if n < 0 => {
                return Err(format!("{p}.epochs {n} must be a number of epochs >= 0"))
            }
            Some(toml::Value::Integer(n)) if pair && end.is_none() => {
                // Keras' fit(initial_epoch=.., epochs=..): the end epoch.
                set_end(bt, n);
                None
            }
            Some(toml::Value::Integer(n)) => Some(n),
            Some(toml::Value::String(s)) => Some(parse_count(p, &s, count_so_far)?),
            Some(v) => {
                return Err(format!(
                    "{p}.epochs {v} must be a number of epochs (N, or \"+N\" to add)"
                ))
            }
        };
        match (count, end) {
            (Some(n), Some(e)) if e - init != n => {
                return Err(format!(
                    "{p}.epochs {n} and {p}.end_epoch {e} disagree: from initial_epoch {init} \
                     that end is {} epochs",
                    e - init
                ))
            }
            (Some(n), _) => {
                bt.remove("end_epoch");
                bt.insert("epochs".into(), toml::Value::Integer(n));
            }
            (None, Some(e)) => set_end(bt, e),
            (None, None) => {}
        }
    }
    Ok(())
}

/// Rewrites the older `tiny = true|false` of a layer as `variant`, so that a file or `--set`
/// using it replaces the stored `variant` instead of standing next to it.
fn spell_variant(t: &mut toml::Table) -> std::result::Result<(), String> {
    let Some(v) = t.remove("tiny") else {
        return Ok(());
    };
    let tiny = v
        .as_bool()
        .ok_or_else(|| format!("tiny {v} must be true or false (or set variant = \"tiny\")"))?;
    if let Some(other) = t.get("variant") {
        if other.as_str().and_then(Variant::from_key) != Some(Variant::from_tiny(tiny)) {
            return Err(format!("tiny = {tiny} and variant = {other} disagree"));
        }
    }
    let key = Variant::from_tiny(tiny).key();
    t.insert("variant".into(), toml::Value::String(key.into()));
    Ok(())
}

/// Records Keras' end epoch `e` as the phase's length.
fn set_end(t: &mut toml::Table, e: i64) {
    t.remove("epochs");
    t.insert("end_epoch".into(), toml::Value::Integer(e));
}

/// A string `epochs` value: `"N"` epochs, or `"+N"` more than `so_far`.
fn parse_count(p: PhaseKind, s: &str, so_far: i64) -> std::result::Result<i64, String> {
    let bad = || {
        format!(
            "{p}.epochs `{s}` is not a number of epochs (N, or +N to add N to the {so_far} so far)"
        )
    };
    let t = s.trim();
    match t.strip_prefix('+') {
        Some(add) => {
            let n: u32 = add.trim().parse().map_err(|_| bad())?;
            Ok(so_far.max(0) + i64::from(n))
        }
        None => t.parse::<u32>().map(i64::from).map_err(|_| bad()),
    }
}

/// Resolves the phase lengths (`end_epoch` against the final `initial_epoch`), then reads and
/// validates the configuration.
fn finish(mut value: toml::Value, origin: String) -> Result<TrainConfig> {
    for p in PhaseKind::ALL {
        let Some(t) = value.get_mut(p.name()).and_then(|v| v.as_table_mut()) else {
            continue;
        };
        let init = int_of(t, "initial_epoch").unwrap_or(0);
        if let Some(e) = int_of(t, "end_epoch") {
            if e < init {
                return Err(TrainError::Config {
                    origin,
                    msg: format!(
                        "{p}: end epoch {e} is before initial_epoch {init} (an `epochs` given \
                         together with `initial_epoch` is Keras' end epoch; without it, `epochs` \
                         counts the phase's own epochs)"
                    ),
                });
            }
            t.insert("epochs".into(), toml::Value::Integer(e - init));
        } else if let Some(n) = int_of(t, "epochs") {
            t.insert("end_epoch".into(), toml::Value::Integer(init + n));
        }
    }
    let cfg: TrainConfig = value.try_into().map_err(|e| cfg_err(&origin, e))?;
    cfg.validate()
        .map_err(|msg| TrainError::Config { origin, msg })?;
    Ok(cfg)
}

/// Lays `over` onto `base`, table by table.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_table() && v.is_table() => merge(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `value` as a TOML string literal, for a `key=value` override: every character (quotes,
/// backslashes, spaces, non-ASCII) survives [`TrainConfig::load`] unchanged.
pub fn toml_quote(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn parse_value(raw: &str) -> toml::Value {
    // Parse as a TOML value through a one-key document; fall back to a plain string.
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(root: &mut toml::Value, key: &str, v: toml::Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .ok_or_else(|| format!("`{key}`: `{}` is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(p.to_string(), v);
            return Ok(());
        }
        cur = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_train_bottleneck_py() {
        let c = TrainConfig::default();
        assert_eq!(
            (
                c.bottleneck.epochs,
                c.bottleneck.batch_size,
                c.bottleneck.lr
            ),
            (30, 8, 1e-3)
        );
        assert_eq!(
            (c.frozen.epochs, c.frozen.batch_size, c.frozen.lr),
            (50, 16, 1e-3)
        );
        assert_eq!(
            (
                c.unfreeze.initial_epoch,
                c.unfreeze.epochs,
                c.unfreeze.batch_size,
                c.unfreeze.lr
            ),
            (50, 100, 4, 1e-4)
        );
        assert!(c.unfreeze.plateau_and_early_stopping && !c.frozen.plateau_and_early_stopping);
        assert_eq!(
            (c.split_seed, c.val_split, c.input),
            (10101, 0.1, [416, 416])
        );
        assert_eq!(
            (
                c.plateau_factor,
                c.plateau_patience,
                c.early_stopping_patience
            ),
            (0.1, 3, 10)
        );
        assert_eq!(c.adam.eps, 1e-7);
    }

    #[test]
    fn variant_is_stored_by_name_and_tiny_stays_readable() {
        let c = TrainConfig::load(None, &["variant=tiny".into()]).unwrap();
        assert_eq!(c.variant, Variant::Tiny);
        let text = c.to_toml().unwrap();
        assert!(text.contains("variant = \"tiny\""), "{text}");
        assert!(!text.contains("tiny = "), "{text}");
        // The older bool, in a file and as an override, over a stored `variant`.
        let c = TrainConfig::load(None, &["tiny=true".into()]).unwrap();
        assert_eq!(c.variant, Variant::Tiny);
        let back = c.with_overrides(&["tiny=false".into()]).unwrap();
        assert_eq!(back.variant, Variant::YoloV3);
        // A run's state.json written before the field existed.
        let mut json = serde_json::to_value(&c).unwrap();
        let t = json.as_object_mut().unwrap();
        t.remove("variant");
        t.insert("tiny".into(), serde_json::Value::Bool(true));
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.variant, Variant::Tiny);
        let e = TrainConfig::load(None, &["tiny=\"yes\"".into()]).unwrap_err();
        assert!(
            e.to_string().contains("tiny \"yes\" must be true or false"),
            "{e}"
        );
        let e = TrainConfig::load(None, &["variant=yolov5".into()]).unwrap_err();
        assert!(e.to_string().contains("unknown variant `yolov5`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "tiny = true\nvariant = \"yolov3\"\n").unwrap();
        let e = TrainConfig::load(Some(&f), &[]).unwrap_err();
        assert!(e.to_string().contains("disagree"), "{e}");
    }

    #[test]
    fn file_then_flags_override_only_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "tiny = true\ninput = [96, 96]\n[frozen]\nepochs = 7\n").unwrap();
        let c = TrainConfig::load(
            Some(&f),
            &[
                "frozen.lr=0.01".into(),
                "run_dir=out/x".into(),
                "stop_after = { phase = \"frozen\", epoch = 1 }".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.variant, Variant::Tiny);
        assert_eq!(c.input, [96, 96]);
        assert_eq!(
            (c.frozen.epochs, c.frozen.batch_size, c.frozen.lr),
            (7, 16, 0.01)
        );
        assert_eq!(c.run_dir, PathBuf::from("out/x"));
        assert_eq!(
            c.stop_after,
            Some(StopAfter {
                phase: PhaseKind::Frozen,
                epoch: 1
            })
        );
        // Round trip through --print-config output.
        let again: TrainConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let e = TrainConfig::load(None, &["frozen.epochz=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("epochz"), "{e}");
        let e = TrainConfig::load(None, &["input=[100, 96]".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("100x96"), "{e}");
        let e = TrainConfig::load(None, &["nonsense".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key=value"), "{e}");
    }

    #[test]
    fn map_every_and_checkpoint_monitor_parse_print_and_default() {
        let c = TrainConfig::default();
        assert_eq!(
            (c.map_every, c.checkpoint_monitor),
            (0, CheckpointMonitor::ValLoss)
        );
        let c = TrainConfig::load(
            None,
            &["map_every=2".into(), "checkpoint_monitor=map".into()],
        )
        .unwrap();
        assert_eq!(
            (c.map_every, c.checkpoint_monitor),
            (2, CheckpointMonitor::Map)
        );
        let text = c.to_toml().unwrap();
        assert!(
            text.contains("map_every = 2") && text.contains("checkpoint_monitor = \"map\""),
            "{text}"
        );
        let e = TrainConfig::load(None, &["checkpoint_monitor=loss".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("loss") && e.contains("val_loss"), "{e}");
        // A config.toml of an older run (neither key) still parses, with the defaults.
        let mut v = toml::Value::try_from(TrainConfig::default()).unwrap();
        let t = v.as_table_mut().unwrap();
        t.remove("map_every");
        t.remove("checkpoint_monitor");
        let old: TrainConfig = v.try_into().unwrap();
        assert_eq!(old, TrainConfig::default());
    }

    #[test]
    fn lr_schedule_and_ema_settings_default_off_parse_print_and_read_old_files() {
        let c = TrainConfig::default();
        assert_eq!((c.ema_decay, c.ema_tau), (0.0, 2000.0));
        for p in PhaseKind::ALL {
            let pc = c.phase(p);
            assert_eq!(
                (
                    pc.lr_schedule,
                    pc.warmup_epochs,
                    pc.warmup_start_factor,
                    pc.lr_final_factor
                ),
                (LrSchedule::Constant, 0.0, 0.1, 0.01)
            );
        }
        let c = load(&[
            "unfreeze.lr_schedule=cosine",
            "unfreeze.warmup_epochs=1.5",
            "unfreeze.lr_final_factor=0.2",
            "frozen.warmup_start_factor=0.5",
            "ema_decay=0.9999",
        ])
        .unwrap();
        assert_eq!(
            (
                c.unfreeze.lr_schedule,
                c.unfreeze.warmup_epochs,
                c.unfreeze.lr_final_factor,
                c.frozen.warmup_start_factor,
                c.frozen.lr_schedule,
                c.ema_decay
            ),
            (
                LrSchedule::Cosine,
                1.5,
                0.2,
                0.5,
                LrSchedule::Constant,
                0.9999
            )
        );
        // --print-config shows every new key, and reads back.
        let text = c.to_toml().unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["ema_decay"].as_float(), Some(0.9999));
        assert_eq!(t["ema_tau"].as_float(), Some(2000.0));
        let u = t["unfreeze"].as_table().unwrap();
        assert_eq!(u["lr_schedule"].as_str(), Some("cosine"));
        assert_eq!(u["warmup_epochs"].as_float(), Some(1.5));
        let f = t["frozen"].as_table().unwrap();
        assert_eq!(f["lr_schedule"].as_str(), Some("constant"));
        assert_eq!(f["warmup_start_factor"].as_float(), Some(0.5));
        assert_eq!(f["lr_final_factor"].as_float(), Some(0.01));
        assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), c);
        // Files and state.json of older versions (none of the keys) read as the defaults.
        let mut v = toml::Value::try_from(TrainConfig::default()).unwrap();
        let t = v.as_table_mut().unwrap();
        t.remove("ema_decay");
        t.remove("ema_tau");
        for p in PhaseKind::ALL {
            let pt = t.get_mut(p.name()).unwrap().as_table_mut().unwrap();
            for k in [
                "lr_schedule",
                "warmup_epochs",
                "warmup_start_factor",
                "lr_final_factor",
            ] {
                pt.remove(k);
            }
        }
        let old: TrainConfig = v.try_into().unwrap();
        assert_eq!(old, TrainConfig::default());
        // Bad values name the key.
        let e = err(&["unfreeze.lr_schedule=linear"]);
        assert!(e.contains("linear") && e.contains("cosine"), "{e}");
        let e = err(&["frozen.warmup_epochs=-1"]);
        assert!(e.contains("frozen.warmup_epochs -1"), "{e}");
        let e = err(&["unfreeze.lr_final_factor=2"]);
        assert!(
            e.contains("unfreeze.lr_final_factor 2 must be in [0, 1]"),
            "{e}"
        );
        let e = err(&["ema_decay=1"]);
        assert!(e.contains("ema_decay 1 must be in [0, 1)"), "{e}");
        let e = err(&["ema_tau=0"]);
        assert!(e.contains("ema_tau 0 must be positive"), "{e}");
    }

    fn load(o: &[&str]) -> Result<TrainConfig> {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        TrainConfig::load(None, &o)
    }

    fn err(o: &[&str]) -> String {
        load(o).unwrap_err().to_string()
    }

    #[test]
    fn epochs_count_the_phase_and_map_onto_keras_numbering() {
        // Defaults: bottleneck 0..30, frozen 0..50, unfreeze 50..100 (count 50).
        let c = TrainConfig::default();
        assert_eq!(
            (
                c.unfreeze.initial_epoch,
                c.unfreeze.epochs,
                c.unfreeze.count()
            ),
            (50, 100, 50)
        );
        // A count: 10 unfreeze epochs from its initial epoch 50.
        let c = load(&["unfreeze.epochs=10"]).unwrap();
        assert_eq!(
            (
                c.unfreeze.initial_epoch,
                c.unfreeze.epochs,
                c.unfreeze.count()
            ),
            (50, 60, 10)
        );
        // The string forms --epochs writes: "N" and "+N".
        let c = load(&["frozen.epochs=\"3\"", "unfreeze.epochs=\"+5\""]).unwrap();
        assert_eq!(
            (c.frozen.epochs, c.unfreeze.epochs, c.unfreeze.count()),
            (3, 105, 55)
        );
        let c = load(&["unfreeze.epochs=2", "unfreeze.epochs=\"+3\""]).unwrap();
        assert_eq!(c.unfreeze.count(), 5);
        // Keras' end epoch, by name.
        let c = load(&["unfreeze.end_epoch=70"]).unwrap();
        assert_eq!((c.unfreeze.epochs, c.unfreeze.count()), (70, 20));
        let c = load(&["unfreeze.end_epoch=70", "unfreeze.epochs=\"+1\""]).unwrap();
        assert_eq!((c.unfreeze.epochs, c.unfreeze.count()), (71, 21));
        // Keras' pair in the flags, in either order: epochs is the end epoch.
        for o in [
            ["unfreeze.initial_epoch=2", "unfreeze.epochs=4"],
            ["unfreeze.epochs=4", "unfreeze.initial_epoch=2"],
        ] {
            let c = load(&o).unwrap();
            assert_eq!(
                (
                    c.unfreeze.initial_epoch,
                    c.unfreeze.epochs,
                    c.unfreeze.count()
                ),
                (2, 4, 2)
            );
        }
        // ... but an --epochs count stays a count.
        let c = load(&[
            "unfreeze.initial_epoch=2",
            "unfreeze.epochs=4",
            "unfreeze.epochs=\"3\"",
        ])
        .unwrap();
        assert_eq!((c.unfreeze.epochs, c.unfreeze.count()), (5, 3));
        // Moving the first epoch keeps the count.
        let c = load(&["unfreeze.initial_epoch=0"]).unwrap();
        assert_eq!((c.unfreeze.epochs, c.unfreeze.count()), (50, 50));
        // Zero epochs is allowed (the phase is then skipped).
        assert_eq!(load(&["frozen.epochs=0"]).unwrap().frozen.epochs, 0);
    }

    #[test]
    fn printed_config_shows_counts_end_epochs_and_max_seconds_and_reads_back() {
        let c = load(&["frozen.epochs=3", "unfreeze.max_seconds=90"]).unwrap();
        let text = c.to_toml().unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        let f = t["frozen"].as_table().unwrap();
        assert_eq!(
            (
                f["epochs"].as_integer(),
                f["initial_epoch"].as_integer(),
                f["end_epoch"].as_integer()
            ),
            (Some(3), Some(0), Some(3))
        );
        assert_eq!(f["max_seconds"].as_float(), Some(f64::INFINITY));
        let u = t["unfreeze"].as_table().unwrap();
        assert_eq!(
            (
                u["epochs"].as_integer(),
                u["end_epoch"].as_integer(),
                u["max_seconds"].as_float()
            ),
            (Some(50), Some(100), Some(90.0))
        );
        for key in [
            "# anchors: not set",
            "# weights: not set",
            "# stop_after: not set",
        ] {
            assert!(text.contains(key), "{text}");
        }
        // Back through serde, a file, and with_overrides.
        let again: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(again, c);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.toml");
        std::fs::write(&f, &text).unwrap();
        assert_eq!(TrainConfig::load(Some(&f), &[]).unwrap(), c);
        assert_eq!(c.with_overrides(&[]).unwrap(), c);
        let more = c
            .with_overrides(&["unfreeze.epochs=\"+5\"".into()])
            .unwrap();
        assert_eq!(
            (more.unfreeze.epochs, more.unfreeze.max_seconds),
            (105, Some(90.0))
        );
        // JSON (state.json): no budget is null and reads back as none.
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"max_seconds\":null"), "{json}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), c);
        assert_eq!(
            load(&["frozen.max_seconds=inf"])
                .unwrap()
                .frozen
                .max_seconds,
            None
        );
    }

    #[test]
    fn configs_of_older_versions_keep_keras_end_epochs() {
        // Older versions wrote every phase as initial_epoch + absolute epochs, no end_epoch.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.toml");
        std::fs::write(
            &f,
            "[frozen]\ninitial_epoch = 0\nepochs = 2\n[unfreeze]\ninitial_epoch = 2\nepochs = 4\n",
        )
        .unwrap();
        let c = TrainConfig::load(Some(&f), &[]).unwrap();
        assert_eq!(
            (c.frozen.epochs, c.unfreeze.initial_epoch, c.unfreeze.epochs),
            (2, 2, 4)
        );
        // A file's lone `epochs` is a count.
        std::fs::write(&f, "[unfreeze]\nepochs = 4\n").unwrap();
        let c = TrainConfig::load(Some(&f), &[]).unwrap();
        assert_eq!((c.unfreeze.initial_epoch, c.unfreeze.epochs), (50, 54));
        // The JSON of an older state.json: no end_epoch, epochs absolute.
        let mut v = serde_json::to_value(TrainConfig::default()).unwrap();
        let u = v["unfreeze"].as_object_mut().unwrap();
        u.remove("end_epoch");
        u.insert("epochs".into(), serde_json::json!(100));
        u.remove("max_seconds");
        let old: TrainConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old, TrainConfig::default());
        // A file whose epochs and end_epoch disagree says so.
        std::fs::write(&f, "[unfreeze]\nepochs = 10\nend_epoch = 100\n").unwrap();
        let e = TrainConfig::load(Some(&f), &[]).unwrap_err().to_string();
        assert!(
            e.contains("unfreeze.epochs 10 and unfreeze.end_epoch 100 disagree")
                && e.contains("initial_epoch 50 that end is 50 epochs"),
            "{e}"
        );
    }

    #[test]
    fn bad_epochs_end_epochs_and_budgets_are_errors_naming_them() {
        let e = err(&["unfreeze.epochs=-3"]);
        assert!(
            e.contains("unfreeze.epochs -3 must be a number of epochs >= 0"),
            "{e}"
        );
        let e = err(&["frozen.epochs=\"ten\""]);
        assert!(
            e.contains("frozen.epochs `ten` is not a number of epochs"),
            "{e}"
        );
        let e = err(&["frozen.epochs=2.5"]);
        assert!(
            e.contains("frozen.epochs 2.5 must be a number of epochs"),
            "{e}"
        );
        let e = err(&["unfreeze.end_epoch=10"]);
        assert!(
            e.contains("unfreeze: end epoch 10 is before initial_epoch 50"),
            "{e}"
        );
        let e = err(&["unfreeze.initial_epoch=5", "unfreeze.epochs=3"]);
        assert!(
            e.contains("unfreeze: end epoch 3 is before initial_epoch 5"),
            "{e}"
        );
        let e = err(&["frozen.max_seconds=-1"]);
        assert!(
            e.contains("frozen.max_seconds -1 must be a number of seconds >= 0"),
            "{e}"
        );
    }

    #[test]
    fn loss_options_default_off_parse_print_and_read_old_files() {
        use yolo_loss::BoxLoss;
        let c = TrainConfig::default();
        assert_eq!((c.label_smoothing, c.box_loss), (0.0, BoxLoss::Keras));
        let c = TrainConfig::load(
            None,
            &["label_smoothing=0.1".into(), "box_loss=\"giou\"".into()],
        )
        .unwrap();
        assert_eq!((c.label_smoothing, c.box_loss), (0.1, BoxLoss::Giou));
        let text = c.to_toml().unwrap();
        assert!(
            text.contains("label_smoothing = 0.1") && text.contains("box_loss = \"giou\""),
            "{text}"
        );
        // Unquoted works too (a bare word falls back to a string).
        let c = TrainConfig::load(None, &["box_loss=ciou".into()]).unwrap();
        assert_eq!(c.box_loss, BoxLoss::Ciou);
        let e = TrainConfig::load(None, &["box_loss=diou".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("diou") && e.contains("giou"), "{e}");
        let e = TrainConfig::load(None, &["label_smoothing=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("label_smoothing 1 must be in [0, 1)"), "{e}");
        // A config.toml of an older run (no loss options) still parses, with the defaults.
        let mut v = toml::Value::try_from(TrainConfig::default()).unwrap();
        let t = v.as_table_mut().unwrap();
        t.remove("label_smoothing");
        t.remove("box_loss");
        let old: TrainConfig = v.try_into().unwrap();
        assert_eq!(old, TrainConfig::default());
    }

    #[test]
    fn mosaic_defaults_off_parses_prints_validates_and_reads_old_files() {
        assert_eq!(TrainConfig::default().mosaic, 0.0);
        let c = TrainConfig::load(None, &["mosaic=0.5".into()]).unwrap();
        assert_eq!(c.mosaic, 0.5);
        let text = c.to_toml().unwrap();
        assert!(text.contains("mosaic = 0.5"), "{text}");
        for bad in ["mosaic=1.5", "mosaic=-0.1"] {
            let e = TrainConfig::load(None, &[bad.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("must be a probability in [0, 1]"), "{e}");
        }
        // A config.toml of an older run (no mosaic key) still parses, with mosaic off.
        let mut v = toml::Value::try_from(TrainConfig::default()).unwrap();
        v.as_table_mut().unwrap().remove("mosaic");
        let old: TrainConfig = v.try_into().unwrap();
        assert_eq!(old, TrainConfig::default());
    }

    #[test]
    fn precision_defaults_to_f32_round_trips_and_reads_old_files() {
        assert_eq!(TrainConfig::default().precision, Precision::F32);
        for p in Precision::ALL {
            let c = TrainConfig::load(None, &[format!("precision=\"{p}\"")]).unwrap();
            assert_eq!(c.precision, p);
            let text = c.to_toml().unwrap();
            assert!(text.contains(&format!("precision = \"{p}\"")), "{text}");
            let back: TrainConfig = toml::from_str(&text).unwrap();
            assert_eq!(back, c);
        }
        let e = TrainConfig::load(None, &["precision=\"fp8\"".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fp8"), "{e}");
        // A config.toml of an older run (no precision key) still parses, in f32.
        let mut v = toml::Value::try_from(TrainConfig::default()).unwrap();
        v.as_table_mut().unwrap().remove("precision");
        let old: TrainConfig = v.try_into().unwrap();
        assert_eq!(old, TrainConfig::default());
    }

    #[test]
    fn mixup_defaults_off_parses_validates_and_reads_old_files() {
        assert_eq!(TrainConfig::default().mixup, 0.0);
        let c = TrainConfig::load(None, &["mixup=0.15".into()]).unwrap();
        assert_eq!(c.mixup, 0.15);
        assert!(c.to_toml().unwrap().contains("mixup = 0.15"));
        let e = TrainConfig::load(None, &["mixup=2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mixup 2 must be a probability in [0, 1]"), "{e}");
        let mut v = toml::Value::try_from(TrainConfig::default()).unwrap();
        v.as_table_mut().unwrap().remove("mixup");
        let old: TrainConfig = v.try_into().unwrap();
        assert_eq!(old, TrainConfig::default());
    }

    #[test]
    fn multi_scale_defaults_off_parses_validates_and_reads_old_files() {
        let d = TrainConfig::default();
        assert!(d.multi_scale.is_empty());
        assert_eq!(d.multi_scale(), None);
        let c = TrainConfig::load(None, &["multi_scale=[320, 416, 512]".into()]).unwrap();
        assert_eq!(
            c.multi_scale(),
            Some(yolo_data::MultiScale {
                sizes: vec![320, 416, 512],
                every: 10
            })
        );
        let back: TrainConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back.multi_scale, [320, 416, 512]);
        for (bad, want) in [
            (
                "multi_scale=[320, 400]",
                "multi-scale size 400 must be a positive multiple of 32",
            ),
            ("multi_scale_every=0", "every 1 or more"),
        ] {
            let e = TrainConfig::load(None, &["multi_scale=[320]".into(), bad.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let mut v = toml::Value::try_from(TrainConfig::default()).unwrap();
        v.as_table_mut().unwrap().remove("multi_scale");
        v.as_table_mut().unwrap().remove("multi_scale_every");
        let old: TrainConfig = v.try_into().unwrap();
        assert_eq!(old, TrainConfig::default());
    }
}
