//! One epoch of a phase: the training steps (loss, NaN checks, Adam, EMA) over the batch
//! source, and the validation loss after them.

use std::time::Instant;

use candle_core::{DType, Tensor};
use yolo_loss::{yolo_loss_with_objects, LossParts};
use yolo_model::{l2_penalty, FreezeBody};

use crate::adam::Adam;
use crate::batches::{Batch, BatchSource};
use crate::config::{PhaseConfig, PhaseKind};
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::loss_scale::{LossScaler, ScaleStep};
use crate::lr_schedule::PhaseSchedule;
use crate::metrics::LossStats;
use crate::progress::RunProgress;
use crate::schedule::PhasePlan;
use crate::trainer::Trainer;

/// [`TrainError::Interrupted`] when a stop was requested (checked between steps).
pub(crate) fn check_stop(phase: PhaseKind, pc: &PhaseConfig, epoch: usize) -> Result<()> {
    if crate::interrupt::stop_requested() {
        return Err(TrainError::Interrupted(format!(
            "{phase} epoch {}",
            pc.describe_epoch(epoch)
        )));
    }
    Ok(())
}

/// One batch's loss as tensors, nothing read yet: the total to differentiate (yolo_loss + L2),
/// its parts and the L2 term.
struct BatchLoss {
    total: Tensor,
    parts: LossParts,
    l2: Tensor,
}

impl BatchLoss {
    /// The logged values, with `extra` f32 scalars, in one copy to the host: on a GPU every copy
    /// waits for the queued kernels, so a step makes exactly this one.
    fn read(&self, extra: &[Tensor]) -> Result<(LossStats, Vec<f32>)> {
        // f32 because Metal has no f64.
        let mut scalars = vec![self.l2.to_dtype(DType::F32)?];
        scalars.extend(extra.iter().cloned());
        let (v, rest) = self.parts.values_and(&scalars)?;
        let l2v = f64::from(rest[0]);
        let stats = LossStats {
            total: v.total as f64 + l2v,
            xy: v.xy.iter().map(|x| *x as f64).sum(),
            wh: v.wh.iter().map(|x| *x as f64).sum(),
            confidence: v.confidence.iter().map(|x| *x as f64).sum(),
            class: v.class.iter().map(|x| *x as f64).sum(),
            l2: l2v,
        };
        Ok((stats, rest[1..].to_vec()))
    }
}

impl Trainer {
    /// Loss (yolo_loss + L2) and its parts for one batch, queued on the device: the object slots
    /// come with the batch from the host, so nothing is read back here.
    fn batch_loss(
        &self,
        outputs: &[Tensor],
        batch: &Batch,
        freeze: FreezeBody,
    ) -> Result<BatchLoss> {
        let cfg = self.cfg();
        let parts = yolo_loss_with_objects(
            outputs,
            &batch.y_true,
            &batch.objects,
            &self.data.anchors.wh,
            self.data.num_classes(),
            &self.data.loss_config(cfg),
        )?;
        let l2 = l2_penalty(&self.varmap, &self.model_cfg, freeze, cfg.l2)?;
        let total = (&parts.total + &l2)?;
        Ok(BatchLoss { total, parts, l2 })
    }

    /// Trains one epoch; the mean loss parts and the number of images seen.
    ///
    /// A step copies from the device to the host once: the backward pass is queued right after
    /// the loss, then the logged values and (with `check_gradients`) the gradients' fused
    /// finiteness flag come back together. A non-finite loss is reported before a non-finite
    /// gradient; only when the flag is not finite does a second copy name the gradient.
    pub(crate) fn train_epoch(
        &self,
        plan: &PhasePlan,
        epoch: usize,
        source: &BatchSource,
        (adam, schedule, ema, scaler): (
            &mut Adam,
            &PhaseSchedule,
            &mut Option<Ema>,
            &mut LossScaler,
        ),
        progress: &RunProgress,
    ) -> Result<(LossStats, usize)> {
        let (phase, pc) = (plan.kind, &plan.config);
        let cfg = self.cfg();
        let mut sum = LossStats::default();
        let mut steps = 0usize;
        let mut images = 0usize;
        let t0 = Instant::now();
        let mut bar = progress.epoch(phase, epoch, source.steps_per_epoch(pc.batch_size));
        for s in source.train_epoch(self.targets(), plan, epoch) {
            check_stop(phase, pc, epoch)?;
            let s = s?;
            for (p, why) in &s.skipped {
                bar.suspend(|| eprintln!("warning: skipped {}: {why}", p.display()));
            }
            let Some(batch) = s.batch else {
                continue;
            };
            let step = s.index;
            let outputs = batch.forward(&self.model, Some(plan.freeze))?;
            let loss = self.batch_loss(&outputs, &batch, plan.freeze)?;
            let mut grads = scaler.scale_loss(&loss.total)?.backward()?;
            let flag = if cfg.check_gradients || scaler.enabled() {
                adam.non_finite_flag(&grads)?
            } else {
                None
            };
            let (stats, flag) = loss.read(flag.as_slice())?;
            let nonfinite = |what: String, value: f64| TrainError::NonFinite {
                what,
                phase: phase.name().to_string(),
                epoch,
                phase_epoch: pc.describe_epoch(epoch),
                step,
                value,
                paths: batch.paths.clone(),
            };
            if !stats.total.is_finite() {
                return Err(nonfinite("loss".into(), stats.total));
            }
            // f16: an overflow skips the step and halves the scale (see `loss_scale`); the
            // step's loss still counts in the epoch's mean.
            let mut apply = true;
            let flag = flag.first().copied();
            if scaler.enabled() {
                let bad = adam.first_non_finite_grad_flagged(&grads, flag)?;
                if bad.is_none() {
                    scaler.unscale(&mut grads, adam.vars().map(|(_, v)| v))?;
                }
                match (scaler.update(bad.is_none()), bad) {
                    (ScaleStep::Apply, _) => {}
                    (ScaleStep::Skip, _) => apply = false,
                    (ScaleStep::Diverged, bad) => {
                        let (name, v) = bad.unwrap_or_default();
                        return Err(nonfinite(format!("gradient of {name} at loss scale 1"), v));
                    }
                }
            } else if cfg.check_gradients {
                if let Some((name, v)) = adam.first_non_finite_grad_flagged(&grads, flag)? {
                    return Err(nonfinite(format!("gradient of {name}"), v));
                }
            }
            if apply {
                let phase_epoch = (epoch - pc.initial_epoch) as u64;
                if let Some(lr) = schedule.lr(phase_epoch, step as u64, self.state.lr) {
                    adam.set_learning_rate(lr);
                }
                adam.step(&grads)?;
                if let Some(e) = ema.as_mut() {
                    e.update(&self.varmap)?;
                }
            }
            sum.add(&stats);
            steps += 1;
            images += batch.len();
            bar.step(
                sum.total / steps as f64,
                images as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            );
        }
        bar.finish();
        sum.scale(steps);
        Ok((sum, images))
    }

    /// Validation loss: every validation image once, deterministic (letterbox, inference-mode BN),
    /// unless `augmented_validation` restores keras-yolo3's augmented, sampled validation.
    pub(crate) fn validate(
        &self,
        source: &BatchSource,
        plan: &PhasePlan,
        epoch: usize,
    ) -> Result<LossStats> {
        let pc = &plan.config;
        // Per-image weighted sums of the yolo_loss parts; the L2 term is the same for every batch.
        let mut sum = LossStats::default();
        let mut l2 = 0.0;
        let mut n = 0usize;
        let augmented = self.cfg().augmented_validation;
        for batch in source.validation(self.targets(), pc.batch_size, epoch, augmented) {
            check_stop(self.state.phase, pc, epoch)?;
            let batch = batch?;
            let outputs = batch.forward(&self.model, None)?;
            let (s, _) = self.batch_loss(&outputs, &batch, plan.freeze)?.read(&[])?;
            let k = batch.len() as f64;
            sum.total += (s.total - s.l2) * k;
            sum.xy += s.xy * k;
            sum.wh += s.wh * k;
            sum.confidence += s.confidence * k;
            sum.class += s.class * k;
            l2 = s.l2;
            n += batch.len();
        }
        sum.scale(n);
        sum.l2 = l2;
        sum.total += l2;
        Ok(sum)
    }
}
