//! Opening a run: a new one ([`Trainer::new`]) or one continued from its `state.json`
//! ([`Trainer::resume`]), both through one builder (device, data, model, weights) and with the
//! log sink in place from the first message on.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;
use yolo_model::{load_checkpoint_partial, load_darknet_weights, LoadReport, YoloBody, YoloConfig};

use crate::callbacks::ModelCheckpoint;
use crate::config::{PhaseKind, TrainConfig};
use crate::dataset::{is_darknet_weights, Dataset};
use crate::device::parse_device;
use crate::error::{Result, TrainError};
use crate::state::RunState;
use crate::trainer::{Log, Trainer};

/// A message sink that writes each message as a line on stderr (what the CLI uses).
pub fn stderr_log() -> impl FnMut(&str) + 'static {
    |m: &str| eprintln!("{m}")
}

/// How a run is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A new run: `config.toml` written, the initial weights' load report logged.
    New,
    /// A resumed run: the run's own latest weights (complete), else the initial weights.
    Resume,
}

fn build_model(
    cfg: &TrainConfig,
    num_classes: usize,
    device: &Device,
) -> Result<(VarMap, YoloBody, YoloConfig)> {
    let model_cfg = YoloConfig::new(cfg.variant, num_classes);
    let (varmap, model) = YoloBody::build(&model_cfg, cfg.seed, device)?;
    let model = model.with_precision(cfg.precision.tensor_precision(device));
    Ok((varmap, model, model_cfg))
}

/// Removes the temporary files that killed processes left in `run_dir`, saying so.
fn log_stale_temps(log: &mut Log, run_dir: &Path) {
    for p in crate::run_dir::remove_stale_temps(run_dir) {
        log(&format!(
            "removed {}: a temporary file left by an interrupted process",
            p.display()
        ));
    }
}

/// Loads initial weights (darknet `.weights` or safetensors, partially) and returns the report.
/// A safetensors file of the other model variant, or with no usable tensor, is an error (see
/// [`crate::init::check_weights_fit`]).
pub fn load_initial_weights(
    varmap: &VarMap,
    model_cfg: &YoloConfig,
    path: &Path,
) -> Result<LoadReport> {
    if is_darknet_weights(path) {
        Ok(load_darknet_weights(varmap, model_cfg, path)?)
    } else {
        let report = load_checkpoint_partial(varmap, path)?;
        crate::init::check_weights_fit(&report, model_cfg, path)?;
        Ok(report)
    }
}

impl Trainer {
    /// Starts a new run in `cfg.run_dir` (created; `config.toml` written there), `log` receiving
    /// every message from the first on (the data check's summary, the initial weights' report);
    /// [`crate::stderr_log`] writes them to stderr.
    ///
    /// A `run_dir` that already holds a run is never mixed with the new one: the run goes to the
    /// next free `run_dir2`, `run_dir3`, ... unless `overwrite` is set, which deletes the old
    /// run's files first (see [`crate::run_dir`]).
    pub fn new(mut cfg: TrainConfig, log: impl FnMut(&str) + 'static) -> Result<Self> {
        if !cfg.phases_with_epochs() {
            return Err(TrainError::Config {
                origin: "schedule".into(),
                msg: "no enabled phase has an epoch to run (each has epochs <= initial_epoch): \
                      nothing would be trained"
                    .into(),
            });
        }
        let mut log: Log = Box::new(log);
        let asked = cfg.run_dir.clone();
        if cfg.overwrite {
            let removed = crate::run_dir::clear_run(&asked)?;
            if !removed.is_empty() {
                log(&format!(
                    "overwrite: deleted {} files and folders of the earlier run in {}",
                    removed.len(),
                    asked.display()
                ));
            }
        } else {
            cfg.run_dir = crate::run_dir::next_free(&asked);
            if cfg.run_dir != asked {
                log(&format!(
                    "{} already holds a run (continue it with `--resume {}`, or replace it with \
                     `--overwrite`): this run goes to {}",
                    asked.display(),
                    asked.display(),
                    cfg.run_dir.display()
                ));
            }
        }
        let run_dir = cfg.run_dir.clone();
        std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::io(&run_dir, e))?;
        log_stale_temps(&mut log, &run_dir);
        let first = PhaseKind::ALL
            .into_iter()
            .find(|p| cfg.phase(*p).enabled)
            .unwrap_or(PhaseKind::Unfreeze);
        Self::build(RunState::new(cfg, first), Start::New, log)
    }

    /// Continues the run in `run_dir` from its `state.json`: same phase and epoch, weights,
    /// optimizer moments, LR and callback counters, `log` receiving every message. `overrides`
    /// (`key=value`) may change settings that do not alter the schedule already run (e.g.
    /// `device`, `progress`, `stop_after`), and lengthen the last phase run: a completed one is
    /// then reopened ([`RunState::reopen_if_extended`]).
    pub fn resume(
        run_dir: &Path,
        overrides: &[String],
        log: impl FnMut(&str) + 'static,
    ) -> Result<Self> {
        let mut log: Log = Box::new(log);
        let mut state = RunState::load(run_dir)?;
        log_stale_temps(&mut log, run_dir);
        let stored = state.config.clone();
        if !overrides.is_empty() {
            let tmp = run_dir.join(".resume-config.toml");
            crate::atomic::atomic_write(&tmp, state.config.to_toml()?.as_bytes())?;
            let cfg = TrainConfig::load(Some(&tmp), overrides);
            let _ = std::fs::remove_file(&tmp);
            state.config = cfg?;
        }
        state.config.run_dir = run_dir.to_path_buf();
        let mut notes: Vec<String> = state.reopen_if_extended(&stored).into_iter().collect();
        let monitor = state.config.checkpoint_monitor;
        if state.checkpoint.monitor != monitor {
            // A best val_loss cannot be compared with an mAP: keep the period counter, restart best.
            notes.push(format!(
                "checkpoint monitor changed from {} (best {}) to {monitor}: the best restarts",
                state.checkpoint.monitor, state.checkpoint.best
            ));
            let since = state.checkpoint.epochs_since_last_save;
            state.checkpoint = ModelCheckpoint::with_monitor(state.checkpoint.period, monitor);
            state.checkpoint.epochs_since_last_save = since;
        }
        let mut trainer = Self::build(state, Start::Resume, log)?;
        for n in notes {
            (trainer.log)(&n);
        }
        Ok(trainer)
    }

    /// The one builder of [`Trainer::new`] and [`Trainer::resume`]: device, data, model and the
    /// weights it starts from.
    fn build(state: RunState, start: Start, mut log: Log) -> Result<Self> {
        let cfg = &state.config;
        let run_dir = cfg.run_dir.clone();
        let device = parse_device(&cfg.device)?;
        let data = Dataset::load(cfg)?;
        let (varmap, model, model_cfg) = build_model(cfg, data.num_classes(), &device)?;
        if start == Start::New {
            crate::atomic::atomic_write(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        }
        log(&data.summary());
        if let Some(w) = &state.weights {
            let p = run_dir.join(w);
            let report = load_checkpoint_partial(&varmap, &p)?;
            if !report.is_complete() {
                return Err(TrainError::format(
                    &p,
                    format!("incomplete checkpoint: {report}"),
                ));
            }
        } else if let Some(w) = &cfg.weights {
            let report = load_initial_weights(&varmap, &model_cfg, w)?;
            if start == Start::New {
                log(&format!("initial weights {}: {report}", w.display()));
            }
        }
        Ok(Trainer {
            run_dir,
            device,
            varmap,
            model,
            model_cfg,
            data,
            state,
            log,
        })
    }
}
