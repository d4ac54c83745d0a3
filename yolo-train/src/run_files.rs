//! What a run writes, and the one place that commits its state: weights files, the latest
//! checkpoint of each epoch (weights, optimizer, EMA), then `state.json`, `metrics.csv` and
//! `loss.png` together.

use std::path::Path;

use candle_nn::VarMap;
use yolo_model::{save_checkpoint, trainable_vars};

use crate::adam::Adam;
use crate::ema::Ema;
use crate::epoch_end::Control;
use crate::error::{Result, TrainError};
use crate::metrics::{write_csv, EpochRecord};
use crate::plot::write_png;
use crate::schedule::{CheckpointScope, PhasePlan};
use crate::state::RunState;
use crate::trainer::Trainer;

/// `save_checkpoint` (atomic) after creating the parent directory.
pub(crate) fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
    }
    Ok(save_checkpoint(varmap, path)?)
}

/// [`save_weights`] of only the variables `names`.
fn save_weights_subset(varmap: &VarMap, names: &[String], path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
    }
    Ok(yolo_model::save_checkpoint_subset(varmap, names, path)?)
}

impl Trainer {
    /// Writes an epoch checkpoint of `plan`'s phase to `path`: the whole model, or only what
    /// the phase trains (the frozen body of the bottleneck phase is the initial weights: KBs
    /// instead of the whole model).
    pub(crate) fn save_checkpoint_file(&self, plan: &PhasePlan, path: &Path) -> Result<()> {
        match plan.checkpoints {
            CheckpointScope::All => save_weights(&self.varmap, path),
            CheckpointScope::Trained => {
                let names: Vec<String> = trainable_vars(&self.varmap, &self.model_cfg, plan.freeze)
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                save_weights_subset(&self.varmap, &names, path)
            }
        }
    }

    /// Adds a finished epoch to the run state (history, counters, learning rate; the rest of
    /// the phase emptied when `control` stops it) and commits it with the latest checkpoint.
    pub(crate) fn record_epoch(
        &mut self,
        plan: &PhasePlan,
        record: EpochRecord,
        (adam, ema): (&Adam, Option<&Ema>),
        scheduled: bool,
        control: Control,
    ) -> Result<()> {
        let epoch = record.epoch;
        self.state.phase_seconds += record.seconds;
        self.state.global_steps += adam.iterations() - self.state.phase_steps;
        self.state.history.push(record);
        self.state.next_epoch = epoch + 1;
        if !scheduled {
            self.state.lr = adam.learning_rate();
        }
        self.state.phase_steps = adam.iterations();
        if control == Control::Stop {
            // Nothing left in this phase: make the remaining epochs empty for a resume.
            self.state.next_epoch = plan.config.epochs;
        }
        let (w, o) = RunState::last_files(plan.kind, epoch);
        save_weights(&self.varmap, &self.run_dir.join(&w))?;
        adam.save(&self.run_dir.join(&o))?;
        self.state.ema = match ema {
            Some(e) => {
                let f = RunState::last_ema_file(plan.kind, epoch);
                e.save(&self.run_dir.join(&f))?;
                Some(f)
            }
            None => None,
        };
        self.state.weights = Some(w);
        self.state.optimizer = Some(o);
        self.commit()
    }

    /// Commits the run state: `state.json` (atomic; older latest checkpoints pruned after it),
    /// then `metrics.csv` and `loss.png` from its history.
    pub(crate) fn commit(&mut self) -> Result<()> {
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
}
