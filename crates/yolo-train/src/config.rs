//! The training configuration: plain serde data whose defaults are keras-yolo3's
//! `train_bottleneck.py`. It is read from a TOML file laid over the defaults, then `key=value`
//! overrides (the CLI's flags) are laid over that, so a file or flag only names what differs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adam::AdamConfig;
use crate::callbacks::CheckpointMonitor;
use crate::error::{Result, TrainError};

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

/// One phase of the schedule. Epochs use Keras numbering: the phase runs epochs
/// `initial_epoch..epochs` (0-based), as `model.fit(initial_epoch=.., epochs=..)` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    /// Run this phase at all.
    pub enabled: bool,
    /// First epoch (Keras `initial_epoch`).
    pub initial_epoch: usize,
    /// One past the last epoch (Keras `epochs`).
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam learning rate at the start of the phase.
    pub lr: f64,
    /// keras-yolo3 `freeze_body`: 0 trains all, 1 freezes darknet53 (tiny: its first 20 layers),
    /// 2 freezes all but the 3 (tiny: 2) output convs. The bottleneck phase is always 2.
    pub freeze_body: u8,
    /// Apply ReduceLROnPlateau and EarlyStopping on `val_loss` (keras-yolo3: stage 2 only).
    pub plateau_and_early_stopping: bool,
    /// Shuffle the training samples each epoch (keras-yolo3's bottleneck generator does not;
    /// its image generator does).
    pub shuffle: bool,
    /// Augment training images (`get_random_data(random=True)`); off uses the letterbox path.
    /// Ignored by the bottleneck phase, whose cache is never augmented.
    #[serde(default = "yes")]
    pub augment: bool,
    /// Optional wall-time budget of the phase in seconds: no new epoch starts once the time spent
    /// plus the last epoch's duration would exceed it (at least one epoch always runs).
    #[serde(default)]
    pub max_seconds: Option<f64>,
}

fn yes() -> bool {
    true
}

impl PhaseConfig {
    fn scratch() -> Self {
        PhaseConfig {
            enabled: false,
            initial_epoch: 0,
            epochs: 10,
            batch_size: 8,
            lr: 1e-3,
            freeze_body: 0,
            plateau_and_early_stopping: false,
            shuffle: true,
            augment: true,
            max_seconds: None,
        }
    }

    fn bottleneck() -> Self {
        PhaseConfig {
            enabled: true,
            initial_epoch: 0,
            epochs: 30,
            batch_size: 8,
            lr: 1e-3,
            freeze_body: 2,
            plateau_and_early_stopping: false,
            shuffle: true,
            augment: true,
            max_seconds: None,
        }
    }

    fn frozen() -> Self {
        PhaseConfig {
            enabled: true,
            initial_epoch: 0,
            epochs: 50,
            batch_size: 16,
            lr: 1e-3,
            freeze_body: 2,
            plateau_and_early_stopping: false,
            shuffle: true,
            augment: true,
            max_seconds: None,
        }
    }

    fn unfreeze() -> Self {
        PhaseConfig {
            enabled: true,
            initial_epoch: 50,
            epochs: 100,
            batch_size: 4,
            lr: 1e-4,
            freeze_body: 0,
            plateau_and_early_stopping: true,
            shuffle: true,
            augment: true,
            max_seconds: None,
        }
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
    /// Tiny YOLOv3 (6 anchors, 2 scales) instead of YOLOv3.
    pub tiny: bool,
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
    /// `yolo_loss` ignore threshold (0.5 in train_bottleneck.py).
    pub ignore_thresh: f64,
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
    /// Score threshold for the mAP detections.
    pub map_score_threshold: f32,
    /// Also compute validation mAP@0.5 after every N-th epoch of each phase (0: only at the end of
    /// each phase, per `eval_map`). Logged in the epoch line and metrics.csv's `map` column.
    #[serde(default)]
    pub map_every: usize,
    /// What the best-checkpoint rule monitors: `val_loss` (keras-yolo3, lower is better) or `map`
    /// (higher is better; mAP is then computed on every epoch the checkpoint checks).
    #[serde(default)]
    pub checkpoint_monitor: CheckpointMonitor,
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
            tiny: false,
            input: [416, 416],
            val_split: 0.1,
            split_seed: 10101,
            skip_bad: false,
            overwrite: false,
            seed: 0,
            weights: None,
            run_dir: PathBuf::from("runs/train"),
            device: "cpu".into(),
            ignore_thresh: 0.5,
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
            map_score_threshold: 0.01,
            map_every: 0,
            checkpoint_monitor: CheckpointMonitor::ValLoss,
            check_gradients: true,
            progress: true,
            prefetch: 2,
            recalibrate_bn_batches: 16,
            stop_after: None,
            scratch: PhaseConfig::scratch(),
            bottleneck: PhaseConfig::bottleneck(),
            frozen: PhaseConfig::frozen(),
            unfreeze: PhaseConfig::unfreeze(),
        }
    }
}

impl TrainConfig {
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
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<TrainConfig> {
        let mut value =
            toml::Value::try_from(TrainConfig::default()).map_err(|e| cfg_err("defaults", e))?;
        if let Some(f) = file {
            let origin = f.display().to_string();
            let text = yolo_data::read_text(f)?;
            let user: toml::Value = toml::from_str(&text).map_err(|e| cfg_err(&origin, e))?;
            merge(&mut value, user);
        }
        for o in overrides {
            let (key, raw) = o.split_once('=').ok_or_else(|| TrainError::Config {
                origin: "flags".into(),
                msg: format!("`{o}` is not key=value"),
            })?;
            let v = parse_value(raw.trim());
            set_path(&mut value, key.trim(), v).map_err(|msg| TrainError::Config {
                origin: "flags".into(),
                msg,
            })?;
        }
        let origin = file
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "flags".into());
        let cfg: TrainConfig = value.try_into().map_err(|e| cfg_err(&origin, e))?;
        cfg.validate()
            .map_err(|msg| TrainError::Config { origin, msg })?;
        Ok(cfg)
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
            if c.freeze_body > 2 {
                return Err(format!(
                    "{p}.freeze_body {} must be 0, 1 or 2",
                    c.freeze_body
                ));
            }
            if c.enabled && c.epochs < c.initial_epoch {
                return Err(format!(
                    "{p}.epochs {} is before initial_epoch {}",
                    c.epochs, c.initial_epoch
                ));
            }
            if !(c.lr.is_finite() && c.lr > 0.0) {
                return Err(format!("{p}.lr {} must be positive", c.lr));
            }
        }
        Ok(())
    }

    /// The configuration as TOML (what `yolo train --print-config` shows).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| cfg_err("print", e))
    }
}

fn cfg_err(origin: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Config {
        origin: origin.to_string(),
        msg: e.to_string(),
    }
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
        assert!(c.tiny);
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
}
