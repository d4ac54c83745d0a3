//! The resumable run state (`state.json`) and the latest-checkpoint protocol.
//!
//! At every epoch end the trainer writes, in this order:
//! 1. `last/weights-<tag>.safetensors` (every variable, BN statistics included),
//! 2. `last/optim-<tag>.safetensors` (Adam moments, iterations, LR),
//! 3. `state.json`, naming exactly those two files (atomic rename),
//!
//! then deletes older `last/*` files. Each file is written atomically (temp + fsync + rename), and
//! `state.json` is the commit point: a crash at any moment leaves a `state.json` whose weights and
//! optimizer files exist and belong to the same epoch. `<tag>` is `<phase>-e<epoch>`.
//!
//! Data order needs no RNG snapshot: the loader's order and augmentation are a function of
//! `(seed, epoch)`, and the seed is in the stored configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::atomic_write;
use crate::best_model::BestModel;
use crate::callbacks::{EarlyStopping, ModelCheckpoint, ReduceLrOnPlateau};
use crate::config::{PhaseKind, TrainConfig};
use crate::error::{Result, TrainError};
use crate::metrics::EpochRecord;

/// Version of the `state.json` layout.
pub const STATE_VERSION: u32 = 1;

/// Where a run stands: what is done, what comes next, and every counter needed to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Layout version ([`STATE_VERSION`]).
    pub version: u32,
    /// The configuration the run was started with (a resume keeps it).
    pub config: TrainConfig,
    /// The phase in progress (or the next to start when `next_epoch` is its initial epoch).
    pub phase: PhaseKind,
    /// The next epoch to run in `phase` (Keras numbering). A phase that is neither complete nor
    /// at its initial epoch continues from here, with or without saved optimizer moments (see
    /// [`RunState::reopen_if_extended`]).
    pub next_epoch: usize,
    /// Phases finished (their final weights written).
    pub completed: Vec<PhaseKind>,
    /// Current learning rate of the phase in progress.
    pub lr: f64,
    /// Optimizer steps in the phase in progress.
    pub phase_steps: u64,
    /// Optimizer steps over the whole run.
    pub global_steps: u64,
    /// Wall time spent in the phase in progress, seconds (for `max_seconds`).
    #[serde(default)]
    pub phase_seconds: f64,
    /// ReduceLROnPlateau state of the phase in progress, when it uses one.
    pub plateau: Option<ReduceLrOnPlateau>,
    /// EarlyStopping state of the phase in progress, when it uses one.
    pub early_stopping: Option<EarlyStopping>,
    /// ModelCheckpoint state (shared by all phases, as keras-yolo3 shares it across stages): its
    /// monitor, mode and best value, so a resumed run compares against the same best.
    pub checkpoint: ModelCheckpoint,
    /// Weights file of the latest epoch end, relative to the run dir.
    pub weights: Option<PathBuf>,
    /// Optimizer file of the latest epoch end, relative to the run dir.
    pub optimizer: Option<PathBuf>,
    /// Weights-average file of the latest epoch end, relative to the run dir, when `ema_decay`
    /// is on (see [`crate::ema`]); absent in older runs.
    #[serde(default)]
    pub ema: Option<PathBuf>,
    /// Every epoch's metrics so far.
    pub history: Vec<EpochRecord>,
    /// The run's best epoch so far, whose weights are `best.safetensors` (absent in older runs).
    #[serde(default)]
    pub best: Option<BestModel>,
}

impl RunState {
    /// The state of a run about to start its first phase.
    pub fn new(config: TrainConfig, first: PhaseKind) -> Self {
        let next_epoch = config.phase(first).initial_epoch;
        let lr = config.phase(first).lr;
        let period = config.checkpoint_period;
        let monitor = config.checkpoint_monitor;
        RunState {
            version: STATE_VERSION,
            config,
            phase: first,
            next_epoch,
            completed: Vec::new(),
            lr,
            phase_steps: 0,
            global_steps: 0,
            phase_seconds: 0.0,
            plateau: None,
            early_stopping: None,
            checkpoint: ModelCheckpoint::with_monitor(period, monitor),
            weights: None,
            optimizer: None,
            ema: None,
            history: Vec::new(),
            best: None,
        }
    }

    /// `state.json` inside `run_dir`.
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("state.json")
    }

    /// Atomically writes `state.json`.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let p = Self::path(run_dir);
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| TrainError::format(&p, e.to_string()))?;
        atomic_write(&p, &json)
    }

    /// Reads `state.json` from `run_dir`, checking that the files it names exist.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let p = Self::path(run_dir);
        let bytes = std::fs::read(&p).map_err(|e| TrainError::io(&p, e))?;
        let s: RunState =
            serde_json::from_slice(&bytes).map_err(|e| TrainError::format(&p, e.to_string()))?;
        if s.version != STATE_VERSION {
            return Err(TrainError::format(
                &p,
                format!(
                    "state version {}, this build reads {STATE_VERSION}",
                    s.version
                ),
            ));
        }
        for f in [&s.weights, &s.optimizer, &s.ema].into_iter().flatten() {
            if !run_dir.join(f).exists() {
                return Err(TrainError::format(
                    &p,
                    format!("names {}, which is missing", f.display()),
                ));
            }
        }
        Ok(s)
    }

    /// The epoch after the last one `phase` ran (from the history), if it ran any.
    pub fn epochs_done(&self, phase: PhaseKind) -> Option<usize> {
        self.history
            .iter()
            .rev()
            .find(|r| r.phase == phase.name())
            .map(|r| r.epoch + 1)
    }

    /// After `self.config` has replaced `old` (a `--resume` with a changed schedule): when the
    /// phase the run ended with is complete but now ends later than in `old` and than the epochs
    /// it ran, it is reopened to continue from the epoch after its last one; returns what to tell
    /// the user. The phase's optimizer moments are not kept once it completes, so they restart
    /// (at the phase's last learning rate); its plateau and early-stopping counters carry on,
    /// and its `max_seconds` budget counts afresh.
    pub fn reopen_if_extended(&mut self, old: &TrainConfig) -> Option<String> {
        let p = self.phase;
        let now = self.config.phase(p);
        if !self.completed.contains(&p) || !now.enabled || now.epochs <= old.phase(p).epochs {
            return None;
        }
        let done = self.epochs_done(p).unwrap_or(now.initial_epoch);
        if done >= now.epochs {
            return None;
        }
        let end = now.epochs;
        self.completed.retain(|c| *c != p);
        self.next_epoch = done;
        self.phase_steps = 0;
        self.phase_seconds = 0.0;
        self.optimizer = None;
        self.ema = None;
        Some(format!(
            "phase {p} had finished; its schedule now ends at epoch {end}: continuing it with \
             epochs {}..{end} ({} more; Adam's moments restart at lr {:e}, as they are not kept \
             once a phase completes)",
            done + 1,
            end - done,
            self.lr
        ))
    }

    /// Completed phases other than the last one run whose schedule `self.config` makes longer
    /// than `old`: later phases have run on from their weights, so they cannot be extended.
    pub fn unextendable(&self, old: &TrainConfig) -> Vec<PhaseKind> {
        self.completed
            .iter()
            .copied()
            .filter(|p| *p != self.phase && self.config.phase(*p).epochs > old.phase(*p).epochs)
            .collect()
    }

    /// Whether running this state trains anything: an enabled phase with epochs that is not
    /// complete.
    pub fn has_work(&self) -> bool {
        PhaseKind::ALL.into_iter().any(|p| {
            let c = self.config.phase(p);
            c.enabled && !self.completed.contains(&p) && c.epochs > c.initial_epoch
        })
    }

    /// File names for the latest checkpoint of `phase`/`epoch`: `(weights, optimizer)`, relative.
    pub fn last_files(phase: PhaseKind, epoch: usize) -> (PathBuf, PathBuf) {
        let tag = format!("{}-e{epoch:03}", phase.name());
        (
            PathBuf::from("last").join(format!("weights-{tag}.safetensors")),
            PathBuf::from("last").join(format!("optim-{tag}.safetensors")),
        )
    }

    /// File name for the weights average of the latest checkpoint of `phase`/`epoch`, relative.
    pub fn last_ema_file(phase: PhaseKind, epoch: usize) -> PathBuf {
        PathBuf::from("last").join(format!("ema-{}-e{epoch:03}.safetensors", phase.name()))
    }

    /// Deletes `last/*` files other than the ones this state names.
    pub fn prune_last(&self, run_dir: &Path) {
        let keep: Vec<PathBuf> = [&self.weights, &self.optimizer, &self.ema]
            .into_iter()
            .flatten()
            .map(|f| run_dir.join(f))
            .collect();
        if let Ok(rd) = std::fs::read_dir(run_dir.join("last")) {
            for e in rd.flatten() {
                let p = e.path();
                if !keep.contains(&p) {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::{CheckpointMonitor, MonitorMode};

    #[test]
    fn state_round_trips_and_checks_named_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RunState::new(TrainConfig::default(), PhaseKind::Bottleneck);
        assert_eq!((s.next_epoch, s.lr), (0, 1e-3));
        s.phase = PhaseKind::Unfreeze;
        s.next_epoch = 57;
        s.plateau = Some(ReduceLrOnPlateau::new(0.1, 3, 1e-4));
        let (w, o) = RunState::last_files(PhaseKind::Unfreeze, 56);
        std::fs::create_dir_all(dir.path().join("last")).unwrap();
        std::fs::write(dir.path().join(&w), b"w").unwrap();
        std::fs::write(dir.path().join(&o), b"o").unwrap();
        std::fs::write(dir.path().join("last/weights-old.safetensors"), b"x").unwrap();
        s.weights = Some(w.clone());
        s.optimizer = Some(o.clone());
        s.save(dir.path()).unwrap();
        let back = RunState::load(dir.path()).unwrap();
        assert_eq!(back, s);
        s.prune_last(dir.path());
        assert!(!dir.path().join("last/weights-old.safetensors").exists());
        assert!(dir.path().join(&w).exists());
        std::fs::remove_file(dir.path().join(&o)).unwrap();
        let e = RunState::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn map_monitor_and_best_persist_and_older_state_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            checkpoint_monitor: CheckpointMonitor::Map,
            map_every: 2,
            ..TrainConfig::default()
        };
        let mut s = RunState::new(cfg, PhaseKind::Bottleneck);
        assert_eq!(
            (s.checkpoint.monitor, s.checkpoint.mode, s.checkpoint.best),
            (CheckpointMonitor::Map, MonitorMode::Max, f64::NEG_INFINITY)
        );
        s.save(dir.path()).unwrap();
        assert_eq!(RunState::load(dir.path()).unwrap(), s);
        s.checkpoint.best = 0.625;
        s.save(dir.path()).unwrap();
        let back = RunState::load(dir.path()).unwrap();
        assert_eq!((back.checkpoint.best, back.config.map_every), (0.625, 2));
        assert_eq!(back, s);

        // A state.json written before these settings existed: no map_every/checkpoint_monitor in
        // its config, no monitor/mode in its checkpoint. It loads as val_loss, mode min, best kept.
        let mut v: serde_json::Value =
            serde_json::to_value(RunState::new(TrainConfig::default(), PhaseKind::Frozen)).unwrap();
        v["config"].as_object_mut().unwrap().remove("map_every");
        v["config"]
            .as_object_mut()
            .unwrap()
            .remove("checkpoint_monitor");
        let ck = v["checkpoint"].as_object_mut().unwrap();
        ck.remove("monitor");
        ck.remove("mode");
        ck.insert("best".into(), serde_json::json!(17.25));
        std::fs::write(RunState::path(dir.path()), v.to_string()).unwrap();
        let old = RunState::load(dir.path()).unwrap();
        assert_eq!(old.config.map_every, 0);
        assert_eq!(old.config.checkpoint_monitor, CheckpointMonitor::ValLoss);
        assert_eq!(
            (
                old.checkpoint.monitor,
                old.checkpoint.mode,
                old.checkpoint.best
            ),
            (CheckpointMonitor::ValLoss, MonitorMode::Min, 17.25)
        );
    }

    fn record(phase: PhaseKind, epoch: usize) -> EpochRecord {
        EpochRecord {
            phase: phase.name().into(),
            epoch,
            train: Default::default(),
            val: Default::default(),
            lr: 1e-4,
            images_per_sec: 1.0,
            seconds: 1.0,
            map: None,
        }
    }

    /// A finished run of 1 bottleneck, 1 frozen and 1 unfreeze epoch (Keras epoch 1).
    fn finished() -> RunState {
        let cfg = TrainConfig::load(
            None,
            &[
                "bottleneck.epochs=1".into(),
                "frozen.epochs=1".into(),
                "unfreeze.initial_epoch=1".into(),
                "unfreeze.epochs=2".into(),
            ],
        )
        .unwrap();
        let mut s = RunState::new(cfg, PhaseKind::Bottleneck);
        s.history = vec![
            record(PhaseKind::Bottleneck, 0),
            record(PhaseKind::Frozen, 0),
            record(PhaseKind::Unfreeze, 1),
        ];
        s.completed = vec![
            PhaseKind::Bottleneck,
            PhaseKind::Frozen,
            PhaseKind::Unfreeze,
        ];
        s.phase = PhaseKind::Unfreeze;
        s.next_epoch = 2;
        s.phase_steps = 4;
        s.phase_seconds = 9.0;
        s
    }

    #[test]
    fn a_finished_run_reopens_its_last_phase_only_when_the_schedule_grows() {
        // Same schedule: nothing to do.
        let mut s = finished();
        let old = s.config.clone();
        assert_eq!(s.epochs_done(PhaseKind::Unfreeze), Some(2));
        assert_eq!(s.reopen_if_extended(&old), None);
        assert!(!s.has_work());
        assert!(s.unextendable(&old).is_empty());

        // Three more unfreeze epochs: continue at Keras epoch 2, up to 5.
        s.config = old
            .with_overrides(&["unfreeze.epochs=\"+3\"".into()])
            .unwrap();
        assert_eq!(
            (s.config.unfreeze.epochs, s.config.unfreeze.count()),
            (5, 4)
        );
        let note = s.reopen_if_extended(&old).expect("reopened");
        assert!(note.contains("epochs 3..5 (3 more"), "{note}");
        assert_eq!(
            (
                s.next_epoch,
                s.phase_steps,
                s.phase_seconds,
                s.optimizer.clone()
            ),
            (2, 0, 0.0, None)
        );
        assert_eq!(s.completed, vec![PhaseKind::Bottleneck, PhaseKind::Frozen]);
        assert!(s.has_work());

        // A longer earlier phase cannot be extended; a shorter last one reopens nothing.
        let mut s = finished();
        s.config = old
            .with_overrides(&["frozen.epochs=\"+2\"".into()])
            .unwrap();
        assert_eq!(s.unextendable(&old), vec![PhaseKind::Frozen]);
        assert_eq!(s.reopen_if_extended(&old), None);
        assert!(!s.has_work());

        // A phase that was never run (disabled before) is work without reopening anything.
        let mut s = finished();
        s.config.scratch.enabled = true;
        assert!(s.has_work());
    }

    #[test]
    fn a_state_json_of_an_older_version_keeps_its_keras_end_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let s = finished();
        let mut v = serde_json::to_value(&s).unwrap();
        for p in ["scratch", "bottleneck", "frozen", "unfreeze"] {
            let t = v["config"][p].as_object_mut().unwrap();
            let end = t.remove("end_epoch").unwrap();
            t.insert("epochs".into(), end);
        }
        std::fs::write(RunState::path(dir.path()), v.to_string()).unwrap();
        let back = RunState::load(dir.path()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            (
                back.config.unfreeze.initial_epoch,
                back.config.unfreeze.epochs
            ),
            (1, 2)
        );
    }
}
