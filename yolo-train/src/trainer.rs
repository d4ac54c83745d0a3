//! The training loop: phases in order, each a fresh Keras Adam over the phase's trainable
//! variables, epochs of training then deterministic validation, the Keras callbacks, and an atomic
//! latest checkpoint at every epoch end (see [`crate::state`]) so `--resume` continues exactly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use yolo_data::{AugmentConfig, BatchLoader, LoaderConfig};
use yolo_loss::yolo_loss;
use yolo_model::{
    l2_penalty, load_checkpoint_partial, load_darknet_weights, save_checkpoint, tiny_yolo_body,
    trainable_vars, yolo_body, FreezeBody, LoadReport, YoloBody, YoloConfig,
};

use crate::adam::{Adam, AdamConfig};
use crate::best_model::{BestModel, BestMonitor};
use crate::bottleneck::{cache_paths, ensure_cache, entry_boxes, epoch_batches, fingerprint};
use crate::cache::BottleneckCache;
use crate::callbacks::{CheckpointMonitor, EarlyStopping, ModelCheckpoint, ReduceLrOnPlateau};
use crate::config::{PhaseConfig, PhaseKind, TrainConfig};
use crate::dataset::{is_darknet_weights, y_true_tensors, Dataset};
use crate::device::parse_device;
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::evaluate::{map_params, validation_report};
use crate::init::seeded_glorot_init;
use crate::lr_schedule::PhaseSchedule;
use crate::metrics::{write_csv, EpochRecord, LossStats};
use crate::model_source::BEST_WEIGHTS;
use crate::plot::write_png;
use crate::progress::{EpochProgress, PhasePlan, RunProgress};
use crate::state::RunState;

/// How a call to [`Trainer::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Every enabled phase finished; the path of the last phase's weights.
    Finished {
        /// The final weights file.
        weights: Option<PathBuf>,
    },
    /// Stopped by `stop_after` after this phase/epoch (state saved; `--resume` continues).
    Stopped {
        /// The phase.
        phase: PhaseKind,
        /// The epoch just completed.
        epoch: usize,
    },
    /// Stopped by [`crate::request_stop`] (Ctrl-C, SIGTERM) before the work in progress ended;
    /// `state.json`, when present, holds the last completed epoch and `--resume` continues there.
    Interrupted {
        /// What was running (e.g. "frozen epoch 3", "the bottleneck cache build of ...").
        during: String,
        /// The last completed epoch `(phase, Keras epoch)` committed to `state.json`, if any.
        saved: Option<(PhaseKind, usize)>,
    },
}

/// A training run: model, data and state.
pub struct Trainer {
    run_dir: PathBuf,
    device: Device,
    varmap: VarMap,
    model: YoloBody,
    model_cfg: YoloConfig,
    data: Dataset,
    state: RunState,
    /// Messages for the user (initial-weights report, cache reuse, phase summaries).
    log: Box<dyn FnMut(&str)>,
}

fn build_model(
    cfg: &TrainConfig,
    num_classes: usize,
    device: &Device,
) -> Result<(VarMap, YoloBody, YoloConfig)> {
    let model_cfg = if cfg.tiny {
        YoloConfig::tiny(num_classes)
    } else {
        YoloConfig::v3(num_classes)
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = if cfg.tiny {
        tiny_yolo_body(&model_cfg, vb)?
    } else {
        yolo_body(&model_cfg, vb)?
    };
    seeded_glorot_init(&varmap, cfg.seed)?;
    Ok((varmap, model, model_cfg))
}

/// Removes the temporary files that killed processes left in `run_dir`, saying so.
fn log_stale_temps(log: &mut dyn FnMut(&str), run_dir: &Path) {
    for p in crate::run_dir::remove_stale_temps(run_dir) {
        log(&format!(
            "removed {}: a temporary file left by an interrupted process",
            p.display()
        ));
    }
}

/// [`save_weights`] of only the variables `names`.
fn save_weights_subset(varmap: &VarMap, names: &[String], path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
    }
    Ok(yolo_model::save_checkpoint_subset(varmap, names, path)?)
}

/// `save_checkpoint` (atomic) after creating the parent directory.
fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
    }
    Ok(save_checkpoint(varmap, path)?)
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
    /// Starts a new run in `cfg.run_dir` (created; `config.toml` written there).
    ///
    /// A `run_dir` that already holds a run is never mixed with the new one: the run goes to the
    /// next free `run_dir2`, `run_dir3`, ... unless `overwrite` is set, which deletes the old
    /// run's files first (see [`crate::run_dir`]).
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        Self::new_with_log(cfg, |m| eprintln!("{m}"))
    }

    /// [`Trainer::new`] with `log` as the message sink from the first message on (the data
    /// check's summary, the initial weights' report), instead of stderr.
    pub fn new_with_log(mut cfg: TrainConfig, log: impl FnMut(&str) + 'static) -> Result<Self> {
        if !cfg.phases_with_epochs() {
            return Err(TrainError::Config {
                origin: "schedule".into(),
                msg: "no enabled phase has an epoch to run (each has epochs <= initial_epoch): \
                      nothing would be trained"
                    .into(),
            });
        }
        let mut log: Box<dyn FnMut(&str)> = Box::new(log);
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
        let device = parse_device(&cfg.device)?;
        let data = Dataset::load(&cfg)?;
        let (varmap, model, model_cfg) = build_model(&cfg, data.num_classes(), &device)?;
        crate::atomic::atomic_write(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        log(&data.summary());
        if let Some(w) = &cfg.weights {
            let report = load_initial_weights(&varmap, &model_cfg, w)?;
            log(&format!("initial weights {}: {report}", w.display()));
        }
        let first = PhaseKind::ALL
            .into_iter()
            .find(|p| cfg.phase(*p).enabled)
            .unwrap_or(PhaseKind::Unfreeze);
        let state = RunState::new(cfg, first);
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

    /// Continues the run in `run_dir` from its `state.json`: same phase and epoch, weights,
    /// optimizer moments, LR and callback counters. `overrides` (`key=value`) may change settings
    /// that do not alter the schedule already run (e.g. `device`, `progress`, `stop_after`), and
    /// lengthen the last phase run: a completed one is then reopened
    /// ([`RunState::reopen_if_extended`]).
    pub fn resume(run_dir: &Path, overrides: &[String]) -> Result<Self> {
        Self::resume_with_log(run_dir, overrides, |m| eprintln!("{m}"))
    }

    /// [`Trainer::resume`] with `log` as the message sink from the first message on.
    pub fn resume_with_log(
        run_dir: &Path,
        overrides: &[String],
        log: impl FnMut(&str) + 'static,
    ) -> Result<Self> {
        let mut log: Box<dyn FnMut(&str)> = Box::new(log);
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
        let cfg = state.config.clone();
        let device = parse_device(&cfg.device)?;
        let data = Dataset::load(&cfg)?;
        log(&data.summary());
        let (varmap, model, model_cfg) = build_model(&cfg, data.num_classes(), &device)?;
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
            load_initial_weights(&varmap, &model_cfg, w)?;
        }
        let mut trainer = Trainer {
            run_dir: run_dir.to_path_buf(),
            device,
            varmap,
            model,
            model_cfg,
            data,
            state,
            log,
        };
        for n in notes {
            (trainer.log)(&n);
        }
        Ok(trainer)
    }

    /// Replaces the message sink (default: stderr; [`Trainer::new_with_log`] sets it before the
    /// first message).
    pub fn set_log(&mut self, log: impl FnMut(&str) + 'static) {
        self.log = Box::new(log);
    }

    /// The run state (history, counters).
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// The model.
    pub fn model(&self) -> &YoloBody {
        &self.model
    }

    /// The variables.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The data of the run.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn cfg(&self) -> &TrainConfig {
        &self.state.config
    }

    /// Runs the remaining phases.
    pub fn run(&mut self) -> Result<RunOutcome> {
        let mut last_weights = None;
        let progress = self.run_progress();
        for phase in PhaseKind::ALL {
            let pc = self.cfg().phase(phase).clone();
            if !pc.enabled || self.state.completed.contains(&phase) {
                continue;
            }
            if pc.epochs <= pc.initial_epoch {
                (self.log)(&format!(
                    "phase {phase}: no epoch to run (epochs {} <= initial_epoch {}): skipped, no {} written",
                    pc.epochs,
                    pc.initial_epoch,
                    phase.weights_file()
                ));
                continue;
            }
            match self.run_phase(phase, &pc, &progress) {
                Ok(Some(stop)) => return Ok(stop),
                Ok(None) => {}
                Err(TrainError::Interrupted(during)) => {
                    let saved = self
                        .state
                        .history
                        .last()
                        .and_then(|r| PhaseKind::parse(&r.phase).map(|p| (p, r.epoch)));
                    return Ok(RunOutcome::Interrupted { during, saved });
                }
                Err(e) => return Err(e),
            }
            last_weights = Some(self.run_dir.join(phase.weights_file()));
        }
        if last_weights.is_none() {
            last_weights = self
                .state
                .completed
                .last()
                .map(|p| self.run_dir.join(p.weights_file()));
        }
        Ok(RunOutcome::Finished {
            weights: last_weights,
        })
    }

    /// The progress line over the phases [`Trainer::run`] has still to run.
    fn run_progress(&self) -> RunProgress {
        let n_train = self.data.train.len();
        let plans = PhaseKind::ALL
            .into_iter()
            .filter_map(|p| {
                let pc = self.cfg().phase(p);
                (pc.enabled && !self.state.completed.contains(&p) && pc.count() > 0)
                    .then(|| PhasePlan::new(p, pc, n_train))
            })
            .collect();
        RunProgress::new(self.cfg().progress, plans)
    }

    fn freeze_of(phase: PhaseKind, pc: &PhaseConfig) -> FreezeBody {
        if phase == PhaseKind::Bottleneck {
            FreezeBody::AllButOutputs
        } else {
            FreezeBody::from_level(pc.freeze_body).unwrap_or(FreezeBody::None)
        }
    }

    fn enter_phase(&mut self, phase: PhaseKind, pc: &PhaseConfig) {
        let mid_phase = self.state.optimizer.is_some() || self.state.next_epoch > pc.initial_epoch;
        if self.state.phase == phase && mid_phase {
            return; // resuming mid-phase, or a completed phase reopened by a longer schedule
        }
        let cfg = self.state.config.clone();
        self.state.phase = phase;
        self.state.next_epoch = pc.initial_epoch;
        self.state.lr = pc.lr;
        self.state.phase_steps = 0;
        self.state.phase_seconds = 0.0;
        self.state.optimizer = None;
        self.state.ema = None;
        self.state.plateau = pc.plateau_and_early_stopping.then(|| {
            ReduceLrOnPlateau::new(
                cfg.plateau_factor,
                cfg.plateau_patience,
                cfg.plateau_min_delta,
            )
        });
        self.state.early_stopping = pc
            .plateau_and_early_stopping
            .then(|| EarlyStopping::new(cfg.early_stopping_patience, cfg.early_stopping_min_delta));
    }

    /// Runs one phase from `state.next_epoch`; `Some(outcome)` when stopped by `stop_after`.
    fn run_phase(
        &mut self,
        phase: PhaseKind,
        pc: &PhaseConfig,
        progress: &RunProgress,
    ) -> Result<Option<RunOutcome>> {
        self.enter_phase(phase, pc);
        let freeze = Self::freeze_of(phase, pc);
        let vars = trainable_vars(&self.varmap, &self.model_cfg, freeze);
        let n_params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
        let resuming = match self.state.next_epoch.checked_sub(pc.initial_epoch) {
            Some(done) if done > 0 => format!(", from epoch {}/{}", done + 1, pc.count()),
            _ => String::new(),
        };
        (self.log)(&format!(
            "phase {phase}: {} epochs (Keras epochs {}..{}){resuming}, batch {}, lr {:e}, freeze_body {} ({} trainable tensors, {n_params} parameters)",
            pc.count(),
            pc.initial_epoch,
            pc.epochs,
            pc.batch_size,
            self.state.lr,
            freeze.level(),
            vars.len()
        ));
        let mut adam = Adam::new(
            vars,
            AdamConfig {
                lr: self.state.lr,
                ..self.cfg().adam
            },
        )?;
        if let Some(o) = &self.state.optimizer {
            adam.load(&self.run_dir.join(o))?;
        }

        let source = match phase {
            PhaseKind::Bottleneck => Source::Cache(Box::new(self.prepare_cache()?)),
            _ => Source::Images(self.image_loader(phase, pc)?),
        };
        let schedule = PhaseSchedule {
            spec: pc.schedule(),
            steps_per_epoch: source.steps_per_epoch(pc) as u64,
            epochs: pc.count() as u64,
        };
        let mut ema = self.phase_ema()?;
        if !schedule.spec.is_constant() || ema.is_some() {
            (self.log)(&format!(
                "phase {phase}: lr_schedule {}, warm-up {} steps, {} steps; weights EMA {}",
                schedule.spec.schedule,
                schedule.spec.warmup_steps(schedule.steps_per_epoch),
                schedule.total_steps(),
                if ema.is_some() { "on" } else { "off" }
            ));
        }

        let mut stopped_early = false;
        let mut last_epoch_secs = 0.0;
        while self.state.next_epoch < pc.epochs && !stopped_early {
            let epoch = self.state.next_epoch;
            if let Some(limit) = pc.max_seconds {
                let spent = self.state.phase_seconds;
                if epoch > pc.initial_epoch && spent + last_epoch_secs > limit {
                    (self.log)(&format!(
                        "phase {phase}: time budget {limit:.0}s reached after {spent:.0}s; ending the phase"
                    ));
                    self.state.next_epoch = pc.epochs;
                    break;
                }
            }
            let t0 = Instant::now();
            // The epoch's first-step learning rate (the one logged) when a schedule is on.
            let phase_epoch = (epoch - pc.initial_epoch) as u64;
            if let Some(l) = schedule.lr(phase_epoch, 0, self.state.lr) {
                adam.set_learning_rate(l);
            }
            let lr = adam.learning_rate();
            let (train, images) = self.train_epoch(
                phase,
                pc,
                freeze,
                epoch,
                &source,
                (&mut adam, &schedule, &mut ema),
                progress,
            )?;
            let train_secs = t0.elapsed().as_secs_f64();
            // Validation, mAP and the weights files written until the restore see the average.
            let averaged = ema
                .as_mut()
                .map(|e| e.swapped_in(&self.varmap))
                .transpose()?;
            let val = self.validate(&source, pc, freeze, epoch)?;
            let map = if self.map_due(phase, pc, epoch) {
                Some(self.validation_map()?)
            } else {
                None
            };
            let record = EpochRecord {
                phase: phase.name().to_string(),
                epoch,
                train,
                val,
                lr,
                images_per_sec: images as f64 / train_secs.max(1e-9),
                seconds: t0.elapsed().as_secs_f64(),
                map,
            };
            // Epochs as users see them: 1-based within the phase, over the phase's count.
            (self.log)(&format!(
                "{phase} epoch {}/{}: loss {:.4} val_loss {:.4}{} (xy {:.3} wh {:.3} conf {:.3} cls {:.3} l2 {:.3}) lr {:e} {:.1} img/s {:.1}s",
                epoch - pc.initial_epoch + 1,
                pc.count(),
                train.total,
                val.total,
                map.map(|m| format!(" mAP@0.5 {m:.4}")).unwrap_or_default(),
                val.xy,
                val.wh,
                val.confidence,
                val.class,
                val.l2,
                lr,
                record.images_per_sec,
                record.seconds
            ));
            // Callbacks, in keras-yolo3's order: checkpoint, plateau, early stopping.
            let monitored = self.state.checkpoint.monitor.value(val.total, map);
            if self.state.checkpoint.on_epoch_end(monitored) {
                let dir = self.run_dir.join("checkpoints").join(phase.name());
                let p = dir.join(ModelCheckpoint::file_name(
                    epoch,
                    train.total,
                    val.total,
                    map,
                ));
                if phase == PhaseKind::Bottleneck {
                    // The body is frozen and identical to the initial weights: keep only the
                    // output convs this phase trains (KBs instead of the whole model).
                    let names: Vec<String> = trainable_vars(&self.varmap, &self.model_cfg, freeze)
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect();
                    save_weights_subset(&self.varmap, &names, &p)?;
                } else {
                    save_weights(&self.varmap, &p)?;
                }
            }
            self.update_best(phase, epoch, &val, map)?;
            averaged.map(|g| g.restore()).transpose()?;
            // With a schedule on, the plateau cuts the base rate the schedule scales.
            let scheduled = !schedule.spec.is_constant();
            if let Some(pl) = self.state.plateau.as_mut() {
                let current = if scheduled {
                    self.state.lr
                } else {
                    adam.learning_rate()
                };
                if let Some(new_lr) = pl.on_epoch_end(val.total, current) {
                    (self.log)(&format!("ReduceLROnPlateau: lr {current:e} -> {new_lr:e}"));
                    if scheduled {
                        self.state.lr = new_lr;
                    } else {
                        adam.set_learning_rate(new_lr);
                    }
                }
            }
            if let Some(es) = self.state.early_stopping.as_mut() {
                if es.on_epoch_end(val.total) {
                    (self.log)(&format!(
                        "EarlyStopping after {phase} epoch {}/{}",
                        epoch - pc.initial_epoch + 1,
                        pc.count()
                    ));
                    stopped_early = true;
                }
            }
            last_epoch_secs = record.seconds;
            self.state.phase_seconds += record.seconds;
            self.state.global_steps += adam.iterations() - self.state.phase_steps;
            self.state.history.push(record);
            self.state.next_epoch = epoch + 1;
            if !scheduled {
                self.state.lr = adam.learning_rate();
            }
            self.state.phase_steps = adam.iterations();
            if stopped_early {
                // Nothing left in this phase: make the remaining epochs empty for a resume.
                self.state.next_epoch = pc.epochs;
            }
            self.save_latest(phase, epoch, &adam, ema.as_ref())?;
            if self
                .cfg()
                .stop_after
                .as_ref()
                .is_some_and(|s| s.phase == phase && s.epoch == epoch)
            {
                return Ok(Some(RunOutcome::Stopped { phase, epoch }));
            }
        }
        if let Some(e) = &ema {
            // The phase's result is its average; the next phase starts from it.
            e.adopt(&self.varmap)?;
        }
        self.finish_phase(phase)?;
        Ok(None)
    }

    /// The weights average of the phase when `ema_decay` is on: the saved one of the latest
    /// checkpoint when resuming mid-phase, else a fresh one from the current weights.
    fn phase_ema(&self) -> Result<Option<Ema>> {
        let cfg = self.cfg();
        if cfg.ema_decay <= 0.0 {
            return Ok(None);
        }
        let mut e = Ema::new(&self.varmap, cfg.ema_decay, cfg.ema_tau)?;
        if let Some(f) = &self.state.ema {
            e.load(&self.run_dir.join(f))?;
        }
        Ok(Some(e))
    }

    fn save_latest(
        &mut self,
        phase: PhaseKind,
        epoch: usize,
        adam: &Adam,
        ema: Option<&Ema>,
    ) -> Result<()> {
        let (w, o) = RunState::last_files(phase, epoch);
        save_weights(&self.varmap, &self.run_dir.join(&w))?;
        adam.save(&self.run_dir.join(&o))?;
        self.state.ema = match ema {
            Some(e) => {
                let f = RunState::last_ema_file(phase, epoch);
                e.save(&self.run_dir.join(&f))?;
                Some(f)
            }
            None => None,
        };
        self.state.weights = Some(w);
        self.state.optimizer = Some(o);
        self.state.save(&self.run_dir)?;
        self.state.prune_last(&self.run_dir);
        write_csv(
            &self.run_dir.join("metrics.csv"),
            &self.state.history,
            &self.state.config,
        )?;
        write_png(&self.run_dir.join("loss.png"), &self.state.history)?;
        Ok(())
    }

    /// Whether mAP is computed after `epoch`: every `map_every`-th epoch of the phase, and every
    /// epoch the checkpoint compares when it monitors mAP. The end of the phase is
    /// [`Trainer::finish_phase`]'s (it reuses a value computed here for the last epoch).
    fn map_due(&self, phase: PhaseKind, pc: &PhaseConfig, epoch: usize) -> bool {
        let every = self.cfg().map_every;
        let nth = epoch.saturating_sub(pc.initial_epoch) + 1;
        let periodic = every > 0 && nth.is_multiple_of(every);
        let ck = &self.state.checkpoint;
        // The bottleneck phase (cached features, many short epochs) and the from-scratch phase
        // (a model still far from any best, on a time budget) get theirs at the end only.
        let only_at_end = matches!(phase, PhaseKind::Bottleneck | PhaseKind::Scratch);
        let best =
            self.best_monitor() == BestMonitor::Map && (!only_at_end || epoch + 1 == pc.epochs);
        periodic || best || (ck.monitor == CheckpointMonitor::Map && ck.checks_next())
    }

    /// The monitor of `best.safetensors`: the configured one, `val_loss` in place of `map` when
    /// mAP is off.
    fn best_monitor(&self) -> BestMonitor {
        match self.cfg().best_monitor {
            BestMonitor::Map if !self.cfg().eval_map => BestMonitor::ValLoss,
            m => m,
        }
    }

    /// Writes `best.safetensors` when the epoch's monitored value beats the run's best so far.
    fn update_best(
        &mut self,
        phase: PhaseKind,
        epoch: usize,
        val: &LossStats,
        map: Option<f64>,
    ) -> Result<()> {
        let monitor = self.best_monitor();
        let value = match monitor {
            BestMonitor::Map => map.unwrap_or(f64::NAN),
            _ => val.total - val.l2,
        };
        if !BestModel::improves(self.state.best.as_ref(), monitor, value) {
            return Ok(());
        }
        let pc = self.cfg().phase(phase);
        let best = BestModel {
            monitor,
            value,
            phase: phase.name().to_string(),
            epoch: epoch - pc.initial_epoch + 1,
        };
        save_weights(&self.varmap, &self.run_dir.join(BEST_WEIGHTS))?;
        (self.log)(&format!(
            "best model: {} -> {BEST_WEIGHTS}",
            best.describe()
        ));
        self.state.best = Some(best);
        Ok(())
    }

    /// VOC mAP@0.5 of the current weights on the validation split, as `yolo eval --run`
    /// computes it.
    fn validation_map(&self) -> Result<f64> {
        Ok(validation_report(
            &self.model,
            &self.data.val,
            &self.data.anchors,
            &self.data.classes,
            self.data.input,
            map_params(self.cfg().map_score_threshold),
            &self.cfg().annotations,
            &self.device,
        )?
        .voc
        .map_all_point)
    }

    fn finish_phase(&mut self, phase: PhaseKind) -> Result<()> {
        let recalibrated = phase == PhaseKind::Scratch && self.cfg().recalibrate_bn_batches > 0;
        if recalibrated {
            self.recalibrate_bn()?;
        }
        let wf = PathBuf::from(phase.weights_file());
        save_weights(&self.varmap, &self.run_dir.join(&wf))?;
        if self.cfg().eval_map {
            let last = self
                .state
                .history
                .iter()
                .rev()
                .find(|r| r.phase == phase.name());
            // The last epoch's mAP (map_every / checkpoint) was measured on these very weights,
            // unless the BatchNorm recalibration has changed them since.
            let (initial, count) = {
                let pc = self.cfg().phase(phase);
                (pc.initial_epoch, pc.count())
            };
            match last.and_then(|r| r.map.map(|m| (m, r.phase_epoch(initial)))) {
                Some((map, e)) if !recalibrated => (self.log)(&format!(
                    "phase {phase}: validation mAP@0.5 = {map:.4} ({} images, computed after epoch {e}/{count})",
                    self.data.val.len(),
                )),
                _ => {
                    let t = Instant::now();
                    let map = self.validation_map()?;
                    (self.log)(&format!(
                        "phase {phase}: validation mAP@0.5 = {map:.4} ({} images, {:.1}s)",
                        self.data.val.len(),
                        t.elapsed().as_secs_f64()
                    ));
                    if let Some(last) = self
                        .state
                        .history
                        .iter_mut()
                        .rev()
                        .find(|r| r.phase == phase.name())
                    {
                        last.map = Some(map);
                        let (epoch, val) = (last.epoch, last.val);
                        // Recalibrated BatchNorm statistics make these weights new ones.
                        self.update_best(phase, epoch, &val, Some(map))?;
                    }
                }
            }
        }
        self.state.completed.push(phase);
        self.state.weights = Some(wf);
        self.state.optimizer = None;
        self.state.ema = None;
        self.state.save(&self.run_dir)?;
        self.state.prune_last(&self.run_dir);
        write_csv(
            &self.run_dir.join("metrics.csv"),
            &self.state.history,
            &self.state.config,
        )?;
        write_png(&self.run_dir.join("loss.png"), &self.state.history)?;
        (self.log)(&format!(
            "phase {phase} done: weights {}",
            self.run_dir.join(phase.weights_file()).display()
        ));
        Ok(())
    }

    /// Re-estimates the BatchNorm moving statistics on letterboxed training images (see
    /// [`TrainConfig::recalibrate_bn_batches`]).
    fn recalibrate_bn(&mut self) -> Result<()> {
        let t = Instant::now();
        let cfg = self.cfg();
        let loader = BatchLoader::new(
            self.data.train.clone(),
            LoaderConfig {
                batch_size: cfg.scratch.batch_size.max(2),
                input: self.data.input,
                random: false,
                seed: cfg.seed,
                augment: AugmentConfig::default(),
                shuffle: true,
                prefetch: cfg.prefetch,
            },
            self.data.anchors.clone(),
            self.data.num_classes(),
        )?;
        let mut images = Vec::new();
        for batch in loader.epoch(0).take(cfg.recalibrate_bn_batches) {
            let batch = batch?;
            if !batch.is_empty() {
                images.push(batch.images.to_device(&self.device)?);
            }
        }
        self.model.recalibrate_batch_norm(&images)?;
        (self.log)(&format!(
            "recalibrated BatchNorm statistics on {} batches ({:.1}s)",
            images.len(),
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn prepare_cache(&mut self) -> Result<(BottleneckCache, BottleneckCache)> {
        let cfg = self.cfg().clone();
        let (tp, vp) = cache_paths(&self.run_dir);
        let mut out = Vec::new();
        for (label, anns, path) in [("train", &self.data.train, tp), ("val", &self.data.val, vp)] {
            let fp = fingerprint(
                &self.varmap,
                anns,
                self.data.input,
                &self.data.anchors,
                cfg.cache_dtype,
                cfg.tiny,
                label,
            )?;
            let t = Instant::now();
            let (c, rebuilt) = ensure_cache(
                &path,
                &self.model,
                anns,
                &fp,
                self.data.input,
                cfg.cache_dtype,
                cfg.seed,
                &self.device,
            )?;
            (self.log)(&format!(
                "bottleneck cache {label}: {} ({} images, {}, {:.1}s)",
                path.display(),
                c.len(),
                if rebuilt {
                    "built"
                } else {
                    "reused: fingerprint matches"
                },
                t.elapsed().as_secs_f64()
            ));
            out.push(c);
        }
        let v = out.pop().expect("two caches");
        let t = out.pop().expect("two caches");
        Ok((t, v))
    }

    fn image_loader(
        &self,
        phase: PhaseKind,
        pc: &PhaseConfig,
    ) -> Result<(BatchLoader, BatchLoader)> {
        let cfg = self.cfg();
        let seed = cfg.seed.wrapping_add(1 + phase as u64);
        let train = BatchLoader::new(
            self.data.train.clone(),
            LoaderConfig {
                batch_size: pc.batch_size,
                input: self.data.input,
                random: pc.augment,
                seed,
                // The mosaic applies only where the phase augments (the loader checks `random`).
                augment: AugmentConfig {
                    mosaic: cfg.mosaic,
                    ..AugmentConfig::default()
                },
                shuffle: pc.shuffle,
                prefetch: cfg.prefetch,
            },
            self.data.anchors.clone(),
            self.data.num_classes(),
        )?;
        let val = BatchLoader::new(
            self.data.val.clone(),
            LoaderConfig {
                batch_size: pc.batch_size,
                input: self.data.input,
                random: cfg.augmented_validation,
                seed: seed ^ 0x5641_4c00,
                augment: AugmentConfig::default(),
                shuffle: cfg.augmented_validation,
                prefetch: cfg.prefetch,
            },
            self.data.anchors.clone(),
            self.data.num_classes(),
        )?;
        Ok((train, val))
    }

    /// Loss (yolo_loss + L2) and its parts for one batch.
    fn batch_loss(
        &self,
        outputs: &[Tensor],
        y_true: &[Tensor],
        freeze: FreezeBody,
    ) -> Result<(Tensor, LossStats)> {
        let cfg = self.cfg();
        let parts = yolo_loss(
            outputs,
            y_true,
            &self.data.anchors.wh,
            self.data.num_classes(),
            &self.data.loss_config(cfg),
        )?;
        let l2 = l2_penalty(&self.varmap, &self.model_cfg, freeze, cfg.l2)?;
        let total = (&parts.total + &l2)?;
        let v = parts.values()?;
        // f32 on the host: Metal has no f64.
        let l2v = f64::from(l2.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        let stats = LossStats {
            total: v.total as f64 + l2v,
            xy: v.xy.iter().map(|x| *x as f64).sum(),
            wh: v.wh.iter().map(|x| *x as f64).sum(),
            confidence: v.confidence.iter().map(|x| *x as f64).sum(),
            class: v.class.iter().map(|x| *x as f64).sum(),
            l2: l2v,
        };
        Ok((total, stats))
    }

    #[allow(clippy::too_many_arguments)]
    fn train_epoch(
        &self,
        phase: PhaseKind,
        pc: &PhaseConfig,
        freeze: FreezeBody,
        epoch: usize,
        source: &Source,
        (adam, schedule, ema): (&mut Adam, &PhaseSchedule, &mut Option<Ema>),
        progress: &RunProgress,
    ) -> Result<(LossStats, usize)> {
        let cfg = self.cfg();
        let mut sum = LossStats::default();
        let mut steps = 0usize;
        let mut images = 0usize;
        let t0 = Instant::now();
        let mut step_fn = |outputs: Vec<Tensor>,
                           y_true: Vec<Tensor>,
                           paths: Vec<String>,
                           step: usize,
                           bar: &mut EpochProgress<'_>|
         -> Result<()> {
            let (loss, stats) = self.batch_loss(&outputs, &y_true, freeze)?;
            let nonfinite = |what: String, value: f64| TrainError::NonFinite {
                what,
                phase: phase.name().to_string(),
                epoch,
                phase_epoch: pc.describe_epoch(epoch),
                step,
                value,
                paths: paths.clone(),
            };
            if !stats.total.is_finite() {
                return Err(nonfinite("loss".into(), stats.total));
            }
            let grads = loss.backward()?;
            if cfg.check_gradients {
                if let Some((name, v)) = adam.first_non_finite_grad(&grads)? {
                    return Err(nonfinite(format!("gradient of {name}"), v));
                }
            }
            let phase_epoch = (epoch - pc.initial_epoch) as u64;
            if let Some(lr) = schedule.lr(phase_epoch, step as u64, self.state.lr) {
                adam.set_learning_rate(lr);
            }
            adam.step(&grads)?;
            if let Some(e) = ema.as_mut() {
                e.update(&self.varmap)?;
            }
            sum.add(&stats);
            steps += 1;
            images += paths.len();
            bar.step(
                sum.total / steps as f64,
                images as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            );
            Ok(())
        };
        match source {
            Source::Cache(c) => {
                let train = &c.0;
                let batches =
                    epoch_batches(train.len(), pc.batch_size, cfg.seed, epoch, pc.shuffle);
                let mut bar = progress.epoch(phase, epoch, batches.len());
                for (step, idx) in batches.iter().enumerate() {
                    check_stop(phase, pc, epoch)?;
                    let feats = train.batch(idx, &self.device)?;
                    let boxes: Vec<_> = idx
                        .iter()
                        .map(|&i| entry_boxes(&train.header().entries[i]))
                        .collect();
                    let paths: Vec<String> = idx
                        .iter()
                        .map(|&i| train.header().entries[i].path.clone())
                        .collect();
                    let y_true = y_true_tensors(
                        &boxes,
                        self.data.input,
                        &self.data.anchors,
                        self.data.num_classes(),
                        &self.device,
                    )?;
                    let outputs = self.model.forward_last(&feats)?;
                    step_fn(outputs, y_true, paths, step, &mut bar)?;
                }
                bar.finish();
            }
            Source::Images((train, _)) => {
                let mut bar = progress.epoch(phase, epoch, train.steps_per_epoch());
                for (step, b) in train.epoch(epoch).enumerate() {
                    check_stop(phase, pc, epoch)?;
                    let b = b?;
                    for (p, why) in &b.skipped {
                        bar.suspend(|| eprintln!("warning: skipped {}: {why}", p.display()));
                    }
                    if b.is_empty() {
                        continue;
                    }
                    let x = b.images.to_device(&self.device)?;
                    let y_true: Vec<Tensor> = b
                        .y_true
                        .iter()
                        .map(|t| t.to_device(&self.device))
                        .collect::<candle_core::Result<_>>()?;
                    let outputs = self.model.forward_t(&x, true, freeze)?;
                    let paths = b.paths.iter().map(|p| p.display().to_string()).collect();
                    step_fn(outputs, y_true, paths, step, &mut bar)?;
                }
                bar.finish();
            }
        }
        sum.scale(steps);
        Ok((sum, images))
    }

    /// Validation loss: every validation image once, deterministic (letterbox, inference-mode BN),
    /// unless `augmented_validation` restores keras-yolo3's augmented, sampled validation.
    fn validate(
        &self,
        source: &Source,
        pc: &PhaseConfig,
        freeze: FreezeBody,
        epoch: usize,
    ) -> Result<LossStats> {
        // Per-image weighted sums of the yolo_loss parts; the L2 term is the same for every batch.
        let mut sum = LossStats::default();
        let mut l2 = 0.0;
        let mut n = 0usize;
        let mut add = |s: LossStats, m: usize| {
            let k = m as f64;
            sum.total += (s.total - s.l2) * k;
            sum.xy += s.xy * k;
            sum.wh += s.wh * k;
            sum.confidence += s.confidence * k;
            sum.class += s.class * k;
            l2 = s.l2;
            n += m;
        };
        match source {
            Source::Cache(c) => {
                let val = &c.1;
                let all: Vec<usize> = (0..val.len()).collect();
                for idx in all.chunks(pc.batch_size) {
                    check_stop(self.state.phase, pc, epoch)?;
                    let feats = val.batch(idx, &self.device)?;
                    let boxes: Vec<_> = idx
                        .iter()
                        .map(|&i| entry_boxes(&val.header().entries[i]))
                        .collect();
                    let y_true = y_true_tensors(
                        &boxes,
                        self.data.input,
                        &self.data.anchors,
                        self.data.num_classes(),
                        &self.device,
                    )?;
                    let outputs = self.model.forward_last(&feats)?;
                    let (_, stats) = self.batch_loss(&outputs, &y_true, freeze)?;
                    add(stats, idx.len());
                }
            }
            Source::Images((_, val)) => {
                let nval = val.len();
                let b = pc.batch_size;
                let iter = if self.cfg().augmented_validation {
                    val.epoch(epoch)
                } else {
                    val.batches(0, nval.div_ceil(b))
                };
                let mut seen = 0usize;
                for batch in iter {
                    check_stop(self.state.phase, pc, epoch)?;
                    let batch = batch?;
                    let mut m = batch.len();
                    if m == 0 {
                        continue;
                    }
                    let mut x = batch.images;
                    let mut y_true = batch.y_true;
                    if !self.cfg().augmented_validation && seen + m > nval {
                        // The last ordered batch wraps around: keep each image once.
                        m = nval - seen;
                        x = x.narrow(0, 0, m)?;
                        y_true = y_true
                            .iter()
                            .map(|t| t.narrow(0, 0, m))
                            .collect::<candle_core::Result<_>>()?;
                    }
                    seen += m;
                    let x = x.to_device(&self.device)?;
                    let y_true: Vec<Tensor> = y_true
                        .iter()
                        .map(|t| t.to_device(&self.device))
                        .collect::<candle_core::Result<_>>()?;
                    let outputs = self.model.forward(&x)?;
                    let (_, stats) = self.batch_loss(&outputs, &y_true, freeze)?;
                    add(stats, m);
                }
            }
        }
        sum.scale(n);
        sum.l2 = l2;
        sum.total += l2;
        Ok(sum)
    }
}

/// [`TrainError::Interrupted`] when a stop was requested (checked between steps).
fn check_stop(phase: PhaseKind, pc: &PhaseConfig, epoch: usize) -> Result<()> {
    if crate::interrupt::stop_requested() {
        return Err(TrainError::Interrupted(format!(
            "{phase} epoch {}",
            pc.describe_epoch(epoch)
        )));
    }
    Ok(())
}

enum Source {
    Cache(Box<(BottleneckCache, BottleneckCache)>),
    Images((BatchLoader, BatchLoader)),
}

impl Source {
    /// Optimizer steps per training epoch (batches, empty ones included).
    fn steps_per_epoch(&self, pc: &PhaseConfig) -> usize {
        match self {
            Source::Cache(c) => epoch_batches(c.0.len(), pc.batch_size, 0, 0, false).len(),
            Source::Images((train, _)) => train.steps_per_epoch(),
        }
    }
}
