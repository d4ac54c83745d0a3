//! Dynamic loss scaling for f16 training.
//!
//! f16's smallest normal value is 6e-5, so most of a YOLO network's gradients would flush to zero
//! in the 16-bit backward pass. The loss is multiplied by a scale before `backward` (every
//! gradient grows by the same factor), the gradients are checked and divided by the scale before
//! Adam sees them. The scale adapts, as PyTorch's `GradScaler` and NVIDIA's Apex do by default:
//!
//! * it starts at 2^16 ([`INITIAL_LOSS_SCALE`]);
//! * a step with any non-finite gradient (an f16 overflow) is skipped (no Adam update, no EMA
//!   update) and the scale is halved, down to [`MIN_LOSS_SCALE`]; a non-finite gradient at that
//!   floor is a real divergence and is reported like one in f32;
//! * after [`GROWTH_INTERVAL`] (2000) consecutive good steps the scale doubles, up to
//!   [`MAX_LOSS_SCALE`].
//!
//! f32 and bf16 (f32's exponent range) run with a disabled scaler: scale 1, nothing skipped.
//! The scale is not saved in the run state: a resumed run starts again at 2^16 and finds its
//! level within a few (skipped) steps.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use yolo_model::Precision;

use crate::error::Result;

/// The first loss scale (2^16).
pub const INITIAL_LOSS_SCALE: f64 = 65536.0;
/// Consecutive good steps after which the scale doubles.
pub const GROWTH_INTERVAL: u64 = 2000;
/// The smallest scale; an overflow at this scale is not the scale's fault.
pub const MIN_LOSS_SCALE: f64 = 1.0;
/// The largest scale (2^24), so that the scale itself stays exact and finite in f32.
pub const MAX_LOSS_SCALE: f64 = 16_777_216.0;

/// What [`LossScaler::update`] decided for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleStep {
    /// The gradients are finite: unscale them and step the optimizer.
    Apply,
    /// A gradient overflowed: skip the step; the scale was halved.
    Skip,
    /// A gradient is non-finite at [`MIN_LOSS_SCALE`] (or with scaling off): a divergence.
    Diverged,
}

/// The dynamic loss scale of one training run (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    enabled: bool,
    scale: f64,
    growth_interval: u64,
    good_steps: u64,
    skipped: u64,
}

impl LossScaler {
    /// The scaler `precision` needs: dynamic from 2^16 for f16, disabled (scale 1) otherwise.
    pub fn new(precision: Precision) -> Self {
        if precision.needs_loss_scaling() {
            Self::dynamic(INITIAL_LOSS_SCALE, GROWTH_INTERVAL)
        } else {
            Self {
                enabled: false,
                scale: 1.0,
                growth_interval: GROWTH_INTERVAL,
                good_steps: 0,
                skipped: 0,
            }
        }
    }

    /// A dynamic scaler starting at `initial` (clamped to the allowed range) that doubles after
    /// `growth_interval` (at least 1) good steps.
    pub fn dynamic(initial: f64, growth_interval: u64) -> Self {
        Self {
            enabled: true,
            scale: initial.clamp(MIN_LOSS_SCALE, MAX_LOSS_SCALE),
            growth_interval: growth_interval.max(1),
            good_steps: 0,
            skipped: 0,
        }
    }

    /// Whether the loss is scaled at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The current scale (1 when disabled).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Steps skipped so far because of an overflow.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// `loss * scale`, what `backward` runs on (the loss itself when disabled).
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        if !self.enabled {
            return Ok(loss.clone());
        }
        Ok(loss.affine(self.scale, 0.0)?)
    }

    /// Records whether a step's gradients were all finite and says what to do with it: a finite
    /// step counts towards growth (the scale doubles every `growth_interval` of them in a row);
    /// an overflow halves the scale and resets the count.
    pub fn update(&mut self, all_finite: bool) -> ScaleStep {
        if all_finite {
            if self.enabled {
                self.good_steps += 1;
                if self.good_steps >= self.growth_interval {
                    self.scale = (self.scale * 2.0).min(MAX_LOSS_SCALE);
                    self.good_steps = 0;
                }
            }
            return ScaleStep::Apply;
        }
        if !self.enabled || self.scale <= MIN_LOSS_SCALE {
            return ScaleStep::Diverged;
        }
        self.scale = (self.scale / 2.0).max(MIN_LOSS_SCALE);
        self.good_steps = 0;
        self.skipped += 1;
        ScaleStep::Skip
    }

    /// Divides the gradients of `vars` in `grads` by the current scale, the one
    /// [`LossScaler::scale_loss`] applied (nothing when disabled). Call it before
    /// [`LossScaler::update`], which may change the scale.
    pub fn unscale<'a>(
        &self,
        grads: &mut GradStore,
        vars: impl IntoIterator<Item = &'a Var>,
    ) -> Result<()> {
        if !self.enabled || self.scale == 1.0 {
            return Ok(());
        }
        let inv = 1.0 / self.scale;
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach().affine(inv, 0.0)?;
                grads.insert(var.as_tensor(), g);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn overflow_halves_and_skips_and_growth_doubles_after_the_interval() {
        let mut s = LossScaler::dynamic(1024.0, 3);
        assert_eq!(s.update(false), ScaleStep::Skip);
        assert_eq!(s.scale(), 512.0);
        assert_eq!(s.skipped(), 1);
        // Two good steps, an overflow: the count restarts.
        assert_eq!(s.update(true), ScaleStep::Apply);
        assert_eq!(s.update(true), ScaleStep::Apply);
        assert_eq!(s.update(false), ScaleStep::Skip);
        assert_eq!(s.scale(), 256.0);
        for _ in 0..2 {
            assert_eq!(s.update(true), ScaleStep::Apply);
            assert_eq!(s.scale(), 256.0);
        }
        // The third good step in a row doubles it.
        assert_eq!(s.update(true), ScaleStep::Apply);
        assert_eq!(s.scale(), 512.0);
        assert_eq!(s.skipped(), 2);
    }

    #[test]
    fn the_scale_stays_within_its_bounds_and_diverges_at_the_floor() {
        let mut s = LossScaler::dynamic(2.0, 1);
        assert_eq!(s.update(false), ScaleStep::Skip);
        assert_eq!(s.scale(), MIN_LOSS_SCALE);
        assert_eq!(s.update(false), ScaleStep::Diverged);
        let mut s = LossScaler::dynamic(MAX_LOSS_SCALE, 1);
        s.update(true);
        assert_eq!(s.scale(), MAX_LOSS_SCALE);
        // Disabled: never skips, a non-finite gradient is a divergence.
        let mut off = LossScaler::new(Precision::Bf16);
        assert!(!off.enabled());
        assert_eq!(off.update(true), ScaleStep::Apply);
        assert_eq!(off.update(false), ScaleStep::Diverged);
        assert_eq!(off.scale(), 1.0);
        let f16 = LossScaler::new(Precision::F16);
        assert_eq!((f16.scale(), f16.growth_interval), (65536.0, 2000));
    }

    #[test]
    fn scaled_backward_then_unscale_gives_the_plain_gradient() {
        let var = Var::new(&[1.5f32, -2.0, 0.25], &Device::Cpu).unwrap();
        let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
        let s = LossScaler::new(Precision::F16);
        let scaled = s.scale_loss(&loss).unwrap();
        assert_eq!(scaled.to_scalar::<f32>().unwrap(), 6.3125 * 65536.0);
        let mut grads = scaled.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, vec![3.0 * 65536.0, -4.0 * 65536.0, 0.5 * 65536.0]);
        s.unscale(&mut grads, [&var]).unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, vec![3.0, -4.0, 0.5]);
    }
}
