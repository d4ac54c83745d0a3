//! The training loop: the schedule's phases in order (see [`crate::schedule`]), each a fresh
//! Keras Adam over the phase's trainable variables, epochs of training then deterministic
//! validation, the Keras callbacks, and an atomic latest checkpoint at every epoch end (see
//! [`crate::state`]) so `--resume` continues exactly.
//!
//! Around the loop: opening a run in `open.rs`, batches in `batches.rs`, one epoch in `epoch.rs`,
//! its end in `epoch_end.rs`, a phase's end in `phase_end.rs`, and the files a run writes in
//! `run_files.rs`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use yolo_model::{trainable_vars, YoloBody, YoloConfig};

use crate::adam::{Adam, AdamConfig};
use crate::callbacks::{EarlyStopping, ReduceLrOnPlateau};
use crate::config::{PhaseKind, TrainConfig};
use crate::dataset::Dataset;
use crate::ema::Ema;
use crate::epoch_end::Control;
use crate::error::{Result, TrainError};
use crate::lr_schedule::PhaseSchedule;
use crate::metrics::EpochRecord;
use crate::progress::{PhaseSteps, RunProgress};
use crate::schedule::{plan, PhasePlan};
use crate::state::RunState;

/// The message sink of a run (initial-weights report, cache reuse, phase summaries).
pub(crate) type Log = Box<dyn FnMut(&str)>;

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

/// A training run: model, data and state. Opened by [`Trainer::new`] or [`Trainer::resume`].
pub struct Trainer {
    pub(crate) run_dir: PathBuf,
    pub(crate) device: Device,
    pub(crate) varmap: VarMap,
    pub(crate) model: YoloBody,
    pub(crate) model_cfg: YoloConfig,
    pub(crate) data: Dataset,
    pub(crate) state: RunState,
    /// Messages for the user, from the first one on.
    pub(crate) log: Log,
}

impl Trainer {
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

    pub(crate) fn cfg(&self) -> &TrainConfig {
        &self.state.config
    }

    /// Runs the remaining phases.
    pub fn run(&mut self) -> Result<RunOutcome> {
        let mut last_weights = None;
        let progress = self.run_progress();
        // bf16 on a CPU with AMX: f32 tensors, bf16 convolution products, for the whole run.
        let cpu_tiles = self.cfg().precision.uses_cpu_tiles(&self.device);
        let _tiles = yolo_model::ops::bf16_matmul_scope(cpu_tiles);
        for plan in plan(self.cfg()) {
            let (phase, pc) = (plan.kind, &plan.config);
            if self.state.completed.contains(&phase) {
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
            match self.run_phase(&plan, &progress) {
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
        let phases = plan(self.cfg())
            .iter()
            .filter(|p| !self.state.completed.contains(&p.kind) && p.count() > 0)
            .map(|p| PhaseSteps::new(p.kind, &p.config, n_train))
            .collect();
        RunProgress::new(self.cfg().progress, phases)
    }

    /// Starts `plan`'s phase in the state (learning rate, counters, callbacks), unless the state
    /// is already inside it.
    fn enter_phase(&mut self, plan: &PhasePlan) {
        let pc = &plan.config;
        let mid_phase = self.state.optimizer.is_some() || self.state.next_epoch > pc.initial_epoch;
        if self.state.phase == plan.kind && mid_phase {
            return; // resuming mid-phase, or a completed phase reopened by a longer schedule
        }
        let cfg = self.state.config.clone();
        self.state.phase = plan.kind;
        self.state.next_epoch = pc.initial_epoch;
        self.state.lr = pc.lr;
        self.state.phase_steps = 0;
        self.state.phase_seconds = 0.0;
        self.state.optimizer = None;
        self.state.ema = None;
        self.state.plateau = plan.plateau_and_early_stopping.then(|| {
            ReduceLrOnPlateau::new(
                cfg.plateau_factor,
                cfg.plateau_patience,
                cfg.plateau_min_delta,
            )
        });
        self.state.early_stopping = plan
            .plateau_and_early_stopping
            .then(|| EarlyStopping::new(cfg.early_stopping_patience, cfg.early_stopping_min_delta));
    }

    /// Runs one phase from `state.next_epoch`; `Some(outcome)` when stopped by `stop_after`.
    fn run_phase(
        &mut self,
        plan: &PhasePlan,
        progress: &RunProgress,
    ) -> Result<Option<RunOutcome>> {
        let (phase, pc) = (plan.kind, &plan.config);
        self.enter_phase(plan);
        let vars = trainable_vars(&self.varmap, &self.model_cfg, plan.freeze);
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
            plan.freeze.level(),
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
        let source = self.batch_source(plan)?;
        let schedule = PhaseSchedule {
            spec: pc.schedule(),
            steps_per_epoch: source.steps_per_epoch(pc.batch_size) as u64,
            epochs: pc.count() as u64,
        };
        // With a schedule on, the plateau cuts the base rate the schedule scales.
        let scheduled = !schedule.spec.is_constant();
        let mut ema = self.phase_ema()?;
        let mut scaler = crate::loss_scale::LossScaler::new(self.cfg().precision);
        if scheduled || ema.is_some() {
            (self.log)(&format!(
                "phase {phase}: lr_schedule {}, warm-up {} steps, {} steps; weights EMA {}",
                schedule.spec.schedule,
                schedule.spec.warmup_steps(schedule.steps_per_epoch),
                schedule.total_steps(),
                if ema.is_some() { "on" } else { "off" }
            ));
        }

        let mut last_epoch_secs = 0.0;
        while self.state.next_epoch < pc.epochs {
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
                plan,
                epoch,
                &source,
                (&mut adam, &schedule, &mut ema, &mut scaler),
                progress,
            )?;
            let train_secs = t0.elapsed().as_secs_f64();
            // Validation, mAP and the weights files written until the restore see the average.
            let averaged = ema
                .as_mut()
                .map(|e| e.swapped_in(&self.varmap))
                .transpose()?;
            let val = self.validate(&source, plan, epoch)?;
            let map = if self.map_due(plan, epoch) {
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
                "{phase} epoch {}: loss {:.4} val_loss {:.4}{} (xy {:.3} wh {:.3} conf {:.3} cls {:.3} l2 {:.3}) lr {:e} {:.1} img/s {:.1}s",
                pc.describe_epoch(epoch),
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
            self.save_epoch_weights(plan, &record)?;
            averaged.map(|g| g.restore()).transpose()?;
            let control = self.adjust_or_stop(plan, &record, &mut adam, scheduled);
            last_epoch_secs = record.seconds;
            self.record_epoch(plan, record, (&adam, ema.as_ref()), scheduled, control)?;
            if self
                .cfg()
                .stop_after
                .as_ref()
                .is_some_and(|s| s.phase == phase && s.epoch == epoch)
            {
                return Ok(Some(RunOutcome::Stopped { phase, epoch }));
            }
            if control == Control::Stop {
                break;
            }
        }
        if let Some(e) = &ema {
            // The phase's result is its average; the next phase starts from it.
            e.adopt(&self.varmap)?;
        }
        self.finish_phase(plan)?;
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
}
