//! The end of a phase: BatchNorm recalibration where the plan asks for it, the phase's weights
//! file, its validation mAP, and the state committed with the phase completed.

use std::path::PathBuf;
use std::time::Instant;

use yolo_data::{AugmentConfig, BatchLoader, LoaderConfig};

use crate::error::Result;
use crate::run_files::save_weights;
use crate::schedule::PhasePlan;
use crate::trainer::Trainer;

impl Trainer {
    /// Ends `plan`'s phase: recalibrates BatchNorm if planned, writes the phase's weights file,
    /// logs its validation mAP (measured again when the weights changed since the last epoch's)
    /// and commits the phase as completed.
    pub(crate) fn finish_phase(&mut self, plan: &PhasePlan) -> Result<()> {
        let phase = plan.kind;
        let recalibrated = plan.recalibrate_bn_after;
        if recalibrated {
            self.recalibrate_bn(plan)?;
        }
        let wf = PathBuf::from(phase.weights_file());
        save_weights(&self.varmap, &self.run_dir.join(&wf))?;
        if self.cfg().eval_map {
            let (initial, count) = (plan.config.initial_epoch, plan.count());
            let last = self
                .state
                .history
                .iter()
                .rev()
                .find(|r| r.phase == phase.name());
            // The last epoch's mAP (map_every / checkpoint) was measured on these very weights,
            // unless the BatchNorm recalibration has changed them since.
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
                        self.update_best(plan, epoch, &val, Some(map))?;
                    }
                }
            }
        }
        self.state.completed.push(phase);
        self.state.weights = Some(wf);
        self.state.optimizer = None;
        self.state.ema = None;
        self.commit()?;
        (self.log)(&format!(
            "phase {phase} done: weights {}",
            self.run_dir.join(phase.weights_file()).display()
        ));
        Ok(())
    }

    /// Re-estimates the BatchNorm moving statistics on letterboxed training images (see
    /// [`crate::config::TrainConfig::recalibrate_bn_batches`]).
    fn recalibrate_bn(&mut self, plan: &PhasePlan) -> Result<()> {
        let t = Instant::now();
        let cfg = self.cfg();
        let loader = BatchLoader::new(
            self.data.train.clone(),
            LoaderConfig {
                batch_size: plan.config.batch_size.max(2),
                input: self.data.input,
                random: false,
                seed: cfg.seed,
                augment: AugmentConfig::default(),
                shuffle: true,
                prefetch: cfg.prefetch,
                multi_scale: None,
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
}
