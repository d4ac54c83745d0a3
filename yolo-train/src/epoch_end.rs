//! The end of an epoch, in keras-yolo3's callback order: ModelCheckpoint, then the run's
//! `best.safetensors`, then ReduceLROnPlateau and EarlyStopping, which answer with a
//! [`Control`]; and when validation mAP is measured.

use crate::adam::Adam;
use crate::best_model::{BestModel, BestMonitor};
use crate::callbacks::{CheckpointMonitor, ModelCheckpoint};
use crate::error::Result;
use crate::evaluate::{map_params, validation_report};
use crate::metrics::{EpochRecord, LossStats};
use crate::model_source::BEST_WEIGHTS;
use crate::run_files::save_weights;
use crate::schedule::PhasePlan;
use crate::trainer::Trainer;

/// What the epoch-end callbacks tell the training loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on with the next epoch.
    Continue,
    /// End the phase after this epoch (EarlyStopping).
    Stop,
}

impl Trainer {
    /// Whether mAP is computed after `epoch`: every `map_every`-th epoch of the phase, and every
    /// epoch the checkpoint compares when it monitors mAP. The end of the phase is
    /// [`Trainer::finish_phase`]'s (it reuses a value computed here for the last epoch).
    pub(crate) fn map_due(&self, plan: &PhasePlan, epoch: usize) -> bool {
        let pc = &plan.config;
        let every = self.cfg().map_every;
        let nth = epoch.saturating_sub(pc.initial_epoch) + 1;
        let periodic = every > 0 && nth.is_multiple_of(every);
        let ck = &self.state.checkpoint;
        let best = self.best_monitor() == BestMonitor::Map
            && (!plan.best_map_at_end_only || epoch + 1 == pc.epochs);
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

    /// VOC mAP@0.5 of the current weights on the validation split, as `yolo eval --run`
    /// computes it.
    pub(crate) fn validation_map(&self) -> Result<f64> {
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

    /// ModelCheckpoint then `best.safetensors`, on the weights validated (the EMA's when on).
    pub(crate) fn save_epoch_weights(&mut self, plan: &PhasePlan, r: &EpochRecord) -> Result<()> {
        let monitored = self.state.checkpoint.monitor.value(r.val.total, r.map);
        if self.state.checkpoint.on_epoch_end(monitored) {
            let dir = self.run_dir.join("checkpoints").join(plan.kind.name());
            let name = ModelCheckpoint::file_name(r.epoch, r.train.total, r.val.total, r.map);
            self.save_checkpoint_file(plan, &dir.join(name))?;
        }
        self.update_best(plan, r.epoch, &r.val, r.map)
    }

    /// ReduceLROnPlateau, then EarlyStopping, on the epoch's `val_loss`. With a schedule on
    /// (`scheduled`), the plateau cuts the base rate the schedule scales.
    pub(crate) fn adjust_or_stop(
        &mut self,
        plan: &PhasePlan,
        r: &EpochRecord,
        adam: &mut Adam,
        scheduled: bool,
    ) -> Control {
        if let Some(pl) = self.state.plateau.as_mut() {
            let current = if scheduled {
                self.state.lr
            } else {
                adam.learning_rate()
            };
            if let Some(new_lr) = pl.on_epoch_end(r.val.total, current) {
                (self.log)(&format!("ReduceLROnPlateau: lr {current:e} -> {new_lr:e}"));
                if scheduled {
                    self.state.lr = new_lr;
                } else {
                    adam.set_learning_rate(new_lr);
                }
            }
        }
        if let Some(es) = self.state.early_stopping.as_mut() {
            if es.on_epoch_end(r.val.total) {
                (self.log)(&format!(
                    "EarlyStopping after {} epoch {}",
                    plan.kind,
                    plan.config.describe_epoch(r.epoch)
                ));
                return Control::Stop;
            }
        }
        Control::Continue
    }

    /// Writes `best.safetensors` when the epoch's monitored value beats the run's best so far.
    pub(crate) fn update_best(
        &mut self,
        plan: &PhasePlan,
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
        let best = BestModel {
            monitor,
            value,
            phase: plan.kind.name().to_string(),
            epoch: epoch - plan.config.initial_epoch + 1,
        };
        save_weights(&self.varmap, &self.run_dir.join(BEST_WEIGHTS))?;
        (self.log)(&format!(
            "best model: {} -> {BEST_WEIGHTS}",
            best.describe()
        ));
        self.state.best = Some(best);
        Ok(())
    }
}
