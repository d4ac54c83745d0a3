//! The three Keras callbacks keras-yolo3 uses, as plain state machines over `val_loss` whose state
//! is serde data (saved in `state.json` for `--resume`).
//!
//! Semantics follow Keras 2.1.5 (`keras/callbacks.py`, the version keras-yolo3 pins):
//! - `ReduceLROnPlateau(monitor='val_loss', factor=0.1, patience=3)`: an epoch improves when
//!   `val_loss < best - min_delta` (`epsilon=1e-4` in 2.1.5). Otherwise, once `wait >= patience`,
//!   the LR is multiplied by `factor` (never below `min_lr`) and `wait` resets to 0; **then** `wait`
//!   is incremented. So the first cut comes on the 4th epoch without improvement and later cuts every
//!   3rd (the off-by-one that Keras 2.2 later changed).
//! - `EarlyStopping(monitor='val_loss', min_delta=0, patience=10)`: improvement is
//!   `val_loss - min_delta < best`; otherwise `wait += 1` and training stops at `wait >= patience`.
//! - `ModelCheckpoint(period=3, save_best_only=True)`: every `period`-th epoch, save when
//!   `val_loss < best`. keras-yolo3 passes the *same* checkpoint object to stages 1 and 2, so its
//!   `best` and period counter carry across phases; the trainer does the same across all phases.
//!   Beyond keras-yolo3, the checkpoint can monitor validation mAP@0.5 instead
//!   ([`CheckpointMonitor::Map`], Keras `mode='max'`: save when `map > best`).

use serde::{Deserialize, Serialize};

/// Keras 2.1.5 `ReduceLROnPlateau` in `min` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    /// Multiplier applied to the LR on a plateau.
    pub factor: f64,
    /// Epochs without improvement tolerated (see the module doc for the exact count).
    pub patience: usize,
    /// Minimum decrease that counts as an improvement (Keras 2.1.5 `epsilon`).
    pub min_delta: f64,
    /// Epochs to wait after a cut before counting again.
    pub cooldown: usize,
    /// Lower bound on the LR.
    pub min_lr: f64,
    /// Best value seen (`inf` before the first epoch).
    #[serde(with = "lossless_f64")]
    pub best: f64,
    /// Epochs since the last improvement (Keras `wait`).
    pub wait: usize,
    /// Remaining cooldown epochs.
    pub cooldown_counter: usize,
}

impl ReduceLrOnPlateau {
    /// keras-yolo3's `ReduceLROnPlateau(monitor='val_loss', factor, patience)` with Keras defaults
    /// for the rest.
    pub fn new(factor: f64, patience: usize, min_delta: f64) -> Self {
        ReduceLrOnPlateau {
            factor,
            patience,
            min_delta,
            cooldown: 0,
            min_lr: 0.0,
            best: f64::INFINITY,
            wait: 0,
            cooldown_counter: 0,
        }
    }

    /// Feeds one epoch's `val_loss` with the current LR; returns the new LR when it is cut.
    pub fn on_epoch_end(&mut self, current: f64, lr: f64) -> Option<f64> {
        let mut new_lr = None;
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if current < self.best - self.min_delta {
            self.best = current;
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            if self.wait >= self.patience && lr > self.min_lr {
                let lr2 = (lr * self.factor).max(self.min_lr);
                new_lr = Some(lr2);
                self.cooldown_counter = self.cooldown;
                self.wait = 0;
            }
            self.wait += 1;
        }
        new_lr
    }
}

/// Keras `EarlyStopping` in `min` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Minimum decrease that counts as an improvement.
    pub min_delta: f64,
    /// Best value seen (`inf` before the first epoch).
    #[serde(with = "lossless_f64")]
    pub best: f64,
    /// Epochs since the last improvement.
    pub wait: usize,
}

impl EarlyStopping {
    /// keras-yolo3's `EarlyStopping(monitor='val_loss', min_delta, patience)`.
    pub fn new(patience: usize, min_delta: f64) -> Self {
        EarlyStopping {
            patience,
            min_delta,
            best: f64::INFINITY,
            wait: 0,
        }
    }

    /// Feeds one epoch's `val_loss`; returns `true` when training must stop.
    pub fn on_epoch_end(&mut self, current: f64) -> bool {
        if current - self.min_delta < self.best {
            self.best = current;
            self.wait = 0;
            false
        } else {
            self.wait += 1;
            self.wait >= self.patience
        }
    }
}

/// The quantity the best-checkpoint rule compares (`checkpoint_monitor` in the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointMonitor {
    /// Validation loss, lower is better (keras-yolo3's `monitor='val_loss'`).
    #[default]
    ValLoss,
    /// Validation VOC mAP@0.5, higher is better.
    Map,
}

impl CheckpointMonitor {
    /// The name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointMonitor::ValLoss => "val_loss",
            CheckpointMonitor::Map => "map",
        }
    }

    /// Whether the monitored value improves downwards or upwards.
    pub fn mode(self) -> MonitorMode {
        match self {
            CheckpointMonitor::ValLoss => MonitorMode::Min,
            CheckpointMonitor::Map => MonitorMode::Max,
        }
    }

    /// The monitored value of an epoch: its `val_loss`, or its mAP (NaN when it was not computed,
    /// which never counts as an improvement).
    pub fn value(self, val_loss: f64, map: Option<f64>) -> f64 {
        match self {
            CheckpointMonitor::ValLoss => val_loss,
            CheckpointMonitor::Map => map.unwrap_or(f64::NAN),
        }
    }
}

impl std::fmt::Display for CheckpointMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Keras' `mode` of a monitored value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorMode {
    /// Lower is better (a loss).
    #[default]
    Min,
    /// Higher is better (a score such as mAP).
    Max,
}

impl MonitorMode {
    /// The starting `best`: `+inf` for min, `-inf` for max, so the first finite value improves.
    pub fn worst(self) -> f64 {
        match self {
            MonitorMode::Min => f64::INFINITY,
            MonitorMode::Max => f64::NEG_INFINITY,
        }
    }

    /// Whether `current` is strictly better than `best` (NaN never is).
    pub fn improves(self, current: f64, best: f64) -> bool {
        match self {
            MonitorMode::Min => current < best,
            MonitorMode::Max => current > best,
        }
    }
}

/// Keras `ModelCheckpoint(save_best_only=True, period=N)` on `val_loss` (mode min) or on mAP
/// (mode max).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCheckpoint {
    /// Check every `period` epochs.
    pub period: usize,
    /// What is monitored (absent in state files written before mAP monitoring: `val_loss`).
    #[serde(default)]
    pub monitor: CheckpointMonitor,
    /// Min or max (absent in older state files: min).
    #[serde(default)]
    pub mode: MonitorMode,
    /// Best monitored value among checked epochs (the mode's worst before the first).
    #[serde(with = "lossless_f64")]
    pub best: f64,
    /// Epochs since the last check.
    pub epochs_since_last_save: usize,
}

impl ModelCheckpoint {
    /// A checkpoint callback on `val_loss` checking every `period` epochs (keras-yolo3's).
    pub fn new(period: usize) -> Self {
        Self::with_monitor(period, CheckpointMonitor::ValLoss)
    }

    /// A checkpoint callback on `monitor` checking every `period` epochs.
    pub fn with_monitor(period: usize, monitor: CheckpointMonitor) -> Self {
        let mode = monitor.mode();
        ModelCheckpoint {
            period: period.max(1),
            monitor,
            mode,
            best: mode.worst(),
            epochs_since_last_save: 0,
        }
    }

    /// Whether the next call to [`ModelCheckpoint::on_epoch_end`] compares (the epoch is the
    /// `period`-th since the last check), so the trainer knows when the monitored value is needed.
    pub fn checks_next(&self) -> bool {
        self.epochs_since_last_save + 1 >= self.period
    }

    /// Feeds one epoch's monitored value; returns `true` when the weights must be saved now.
    pub fn on_epoch_end(&mut self, current: f64) -> bool {
        self.epochs_since_last_save += 1;
        if self.epochs_since_last_save >= self.period {
            self.epochs_since_last_save = 0;
            if self.mode.improves(current, self.best) {
                self.best = current;
                return true;
            }
        }
        false
    }

    /// keras-yolo3's file name `ep{epoch:03d}-loss{loss:.3f}-val_loss{val_loss:.3f}`, where
    /// `epoch` is the 0-based Keras epoch (Keras formats `epoch + 1`), followed by
    /// `-map{map:.3f}` when the epoch's mAP is known.
    pub fn file_name(epoch: usize, loss: f64, val_loss: f64, map: Option<f64>) -> String {
        let map = map.map(|m| format!("-map{m:.3}")).unwrap_or_default();
        format!(
            "ep{:03}-loss{:.3}-val_loss{:.3}{map}.safetensors",
            epoch + 1,
            loss,
            val_loss
        )
    }
}

/// JSON has no infinity: `best` starts at `inf`, so it is written as a string when not finite.
mod lossless_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&v.to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum F {
            N(f64),
            S(String),
        }
        match F::deserialize(d)? {
            F::N(v) => Ok(v),
            F::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_lr_on_plateau_follows_keras_2_1_5_counting() {
        let mut r = ReduceLrOnPlateau::new(0.1, 3, 1e-4);
        let mut lr = 1e-4;
        // Epoch 0 improves (best=inf); epochs 1..=3 do not: wait goes 1, 2, 3 without a cut.
        assert_eq!(r.on_epoch_end(10.0, lr), None);
        for _ in 0..3 {
            assert_eq!(r.on_epoch_end(10.0, lr), None);
        }
        assert_eq!(r.wait, 3);
        // 4th non-improving epoch: wait >= patience, cut by 10x, then wait = 1.
        let cut = r.on_epoch_end(10.00005, lr).expect("cut");
        assert!((cut - 1e-5).abs() < 1e-18);
        lr = cut;
        assert_eq!(r.wait, 1);
        // Next cut after 2 more (wait 1 -> 2 -> 3), on the 3rd.
        assert_eq!(r.on_epoch_end(10.0, lr), None);
        assert_eq!(r.on_epoch_end(10.0, lr), None);
        assert!(r.on_epoch_end(10.0, lr).is_some());
        // A real improvement (more than min_delta) resets.
        assert_eq!(r.on_epoch_end(9.0, lr), None);
        assert_eq!(r.wait, 0);
        assert_eq!(r.best, 9.0);
    }

    #[test]
    fn reduce_lr_improvement_must_exceed_min_delta() {
        let mut r = ReduceLrOnPlateau::new(0.5, 0, 0.1);
        assert_eq!(r.on_epoch_end(1.0, 1.0), None);
        // 0.95 is not below 1.0 - 0.1: no improvement, and patience 0 cuts at once.
        assert_eq!(r.on_epoch_end(0.95, 1.0), Some(0.5));
        assert_eq!(r.best, 1.0);
    }

    #[test]
    fn early_stopping_stops_after_patience_epochs_without_improvement() {
        let mut e = EarlyStopping::new(10, 0.0);
        assert!(!e.on_epoch_end(5.0));
        for i in 1..10 {
            assert!(!e.on_epoch_end(5.0), "epoch {i}");
        }
        assert_eq!(e.wait, 9);
        assert!(e.on_epoch_end(5.0));
        let mut e = EarlyStopping::new(2, 0.0);
        assert!(!e.on_epoch_end(5.0));
        assert!(!e.on_epoch_end(6.0));
        assert!(!e.on_epoch_end(4.0));
        assert_eq!(e.wait, 0);
        assert!(!e.on_epoch_end(4.0));
        assert!(e.on_epoch_end(4.5));
    }

    #[test]
    fn model_checkpoint_saves_best_every_period() {
        let mut c = ModelCheckpoint::new(3);
        let saves: Vec<bool> = [9.0, 8.0, 7.0, 1.0, 2.0, 8.0, 5.0, 5.0, 0.5]
            .iter()
            .map(|&v| c.on_epoch_end(v))
            .collect();
        // Checked at epochs 2, 5, 8 (0-based): 7.0 saves, 8.0 is worse, 0.5 saves.
        assert_eq!(
            saves,
            vec![false, false, true, false, false, false, false, false, true]
        );
        assert_eq!(
            ModelCheckpoint::file_name(11, 23.4564, 25.7891, None),
            "ep012-loss23.456-val_loss25.789.safetensors"
        );
        assert_eq!(
            ModelCheckpoint::file_name(11, 23.4564, 25.7891, Some(0.81249)),
            "ep012-loss23.456-val_loss25.789-map0.812.safetensors"
        );
    }

    #[test]
    fn model_checkpoint_on_map_saves_higher_values_every_period() {
        let mut c = ModelCheckpoint::with_monitor(2, CheckpointMonitor::Map);
        assert_eq!((c.mode, c.best), (MonitorMode::Max, f64::NEG_INFINITY));
        let maps = [0.9, 0.1, 0.95, 0.2, 0.05, 0.3, 0.99, 0.3, 0.1, 0.3];
        let mut checked = Vec::new();
        let saves: Vec<bool> = maps
            .iter()
            .map(|&v| {
                checked.push(c.checks_next());
                c.on_epoch_end(v)
            })
            .collect();
        // Checked at epochs 1, 3, 5, 7, 9: 0.1 saves (first), 0.2 and 0.3 improve, 0.3 (epoch 7)
        // equals the best (not strictly higher), 0.3 again no; 0.9/0.95/0.99 fall between checks.
        assert_eq!(
            checked,
            vec![false, true, false, true, false, true, false, true, false, true]
        );
        assert_eq!(
            saves,
            vec![false, true, false, true, false, true, false, false, false, false]
        );
        assert_eq!(c.best, 0.3);
        // A lower mAP at a check never saves, a higher one does.
        let mut c = ModelCheckpoint::with_monitor(1, CheckpointMonitor::Map);
        assert!(c.on_epoch_end(0.5));
        assert!(!c.on_epoch_end(0.4));
        assert!(!c.on_epoch_end(0.5));
        assert!(c.on_epoch_end(0.51));
        assert_eq!(c.best, 0.51);
    }

    #[test]
    fn model_checkpoint_never_takes_nan_as_best() {
        for monitor in [CheckpointMonitor::Map, CheckpointMonitor::ValLoss] {
            let mut c = ModelCheckpoint::with_monitor(1, monitor);
            assert!(!c.on_epoch_end(f64::NAN), "{monitor}");
            assert!(c.best.is_infinite(), "{monitor}: {}", c.best);
            assert!(c.on_epoch_end(0.5), "{monitor}");
            assert!(!c.on_epoch_end(f64::NAN), "{monitor}");
            assert_eq!(c.best, 0.5, "{monitor}");
        }
        // mAP not computed for a checked epoch counts as NaN: no save.
        let m = CheckpointMonitor::Map;
        assert!(m.value(3.0, None).is_nan());
        assert_eq!(m.value(3.0, Some(0.25)), 0.25);
        assert_eq!(CheckpointMonitor::ValLoss.value(3.0, Some(0.25)), 3.0);
    }

    #[test]
    fn model_checkpoint_state_of_older_runs_loads_as_val_loss_min() {
        // A state.json checkpoint written before mAP monitoring had no monitor/mode fields.
        let old = r#"{"period": 3, "best": 12.5, "epochs_since_last_save": 1}"#;
        let c: ModelCheckpoint = serde_json::from_str(old).unwrap();
        assert_eq!(
            (c.monitor, c.mode, c.best, c.epochs_since_last_save),
            (CheckpointMonitor::ValLoss, MonitorMode::Min, 12.5, 1)
        );
        let fresh = r#"{"period": 3, "best": "inf", "epochs_since_last_save": 0}"#;
        let c: ModelCheckpoint = serde_json::from_str(fresh).unwrap();
        assert_eq!(c, ModelCheckpoint::new(3));
        // The max mode round-trips with its -inf start and a finite best.
        let mut c = ModelCheckpoint::with_monitor(3, CheckpointMonitor::Map);
        let back: ModelCheckpoint =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        c.best = 0.8125;
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains(r#""monitor":"map""#) && json.contains(r#""mode":"max""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ModelCheckpoint>(&json).unwrap(), c);
    }
}
