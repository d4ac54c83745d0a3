//! Per-phase learning-rate schedules, the options ultralytics users expect: a linear warm-up over
//! the phase's first steps and a cosine decay over the whole phase. Both are off by default, so a
//! phase keeps keras-yolo3's constant Adam learning rate.
//!
//! The learning rate is a pure function of the step's position in the phase
//! (`(epoch - initial_epoch) * steps_per_epoch + step`), never of a running counter, so a resumed
//! run steps with exactly the learning rates of an uninterrupted one.
//!
//! ReduceLROnPlateau: with a schedule on, the plateau cuts the phase's *base* learning rate (kept
//! in `RunState::lr`), and the schedule is applied on top of it, so each scheduled learning rate is
//! multiplied by the plateau's reduction factor so far.

use serde::{Deserialize, Serialize};

/// How the learning rate evolves over a phase (after any warm-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The phase's `lr` throughout (keras-yolo3).
    #[default]
    Constant,
    /// Half a cosine from `lr` at the phase's first step to `lr_final_factor * lr` at its last.
    Cosine,
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        })
    }
}

/// The schedule settings of one phase (see [`crate::PhaseConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleSpec {
    /// Constant or cosine.
    pub schedule: LrSchedule,
    /// Epochs of linear warm-up at the start of the phase (0: none; fractions allowed).
    pub warmup_epochs: f64,
    /// The warm-up's first step runs at this fraction of the learning rate.
    pub warmup_start_factor: f64,
    /// The cosine schedule ends at this fraction of the learning rate.
    pub lr_final_factor: f64,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            schedule: LrSchedule::Constant,
            warmup_epochs: 0.0,
            warmup_start_factor: DEFAULT_WARMUP_START_FACTOR,
            lr_final_factor: DEFAULT_LR_FINAL_FACTOR,
        }
    }
}

/// Default [`ScheduleSpec::warmup_start_factor`].
pub const DEFAULT_WARMUP_START_FACTOR: f64 = 0.1;
/// Default [`ScheduleSpec::lr_final_factor`] (ultralytics' `lrf`).
pub const DEFAULT_LR_FINAL_FACTOR: f64 = 0.01;

impl ScheduleSpec {
    /// Whether the learning rate is the base one at every step (no warm-up, constant schedule):
    /// the trainer then leaves Adam's learning rate alone, exactly as before these options.
    pub fn is_constant(&self) -> bool {
        self.schedule == LrSchedule::Constant && self.warmup_epochs <= 0.0
    }

    /// Steps of warm-up for `steps_per_epoch` steps per epoch (`warmup_epochs` epochs, rounded).
    pub fn warmup_steps(&self, steps_per_epoch: u64) -> u64 {
        (self.warmup_epochs.max(0.0) * steps_per_epoch as f64).round() as u64
    }
}

/// The learning rate of 0-based `step` of a phase of `total_steps` steps (`steps_per_epoch` per
/// epoch) whose base learning rate is `base_lr`.
///
/// Warm-up (steps `0..W`, `W` = [`ScheduleSpec::warmup_steps`]) multiplies by
/// `f + (1 - f) * step / W` (`f` = `warmup_start_factor`), so it rises linearly and the factor is
/// exactly 1 from step `W` on. Cosine multiplies by
/// `1 - (1 - r) * (1 - cos(pi * step / (total_steps - 1))) / 2` (`r` = `lr_final_factor`):
/// exactly `base_lr` at step 0 and `r * base_lr` at the last step (and after it).
pub fn lr_at(
    step: u64,
    steps_per_epoch: u64,
    total_steps: u64,
    base_lr: f64,
    schedule: &ScheduleSpec,
) -> f64 {
    let decay = match schedule.schedule {
        LrSchedule::Constant => 1.0,
        LrSchedule::Cosine => {
            let r = schedule.lr_final_factor;
            if total_steps <= 1 {
                1.0
            } else if step >= total_steps - 1 {
                r
            } else {
                // Written so that step 0 gives exactly 1.
                let x = step as f64 / (total_steps - 1) as f64;
                1.0 - (1.0 - r) * 0.5 * (1.0 - (std::f64::consts::PI * x).cos())
            }
        }
    };
    let w = schedule.warmup_steps(steps_per_epoch);
    let warm = if step < w {
        let f = schedule.warmup_start_factor;
        f + (1.0 - f) * step as f64 / w as f64
    } else {
        1.0
    };
    base_lr * decay * warm
}

/// The schedule of one phase run: what the trainer asks for each step's learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseSchedule {
    /// The settings.
    pub spec: ScheduleSpec,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: u64,
    /// Epochs of the phase (its count).
    pub epochs: u64,
}

impl PhaseSchedule {
    /// Total steps of the phase.
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch * self.epochs
    }

    /// The learning rate of step `step` of the phase's `phase_epoch`-th epoch (both 0-based),
    /// from the base learning rate `base_lr`; `None` when the schedule is constant (Adam's
    /// learning rate is then left as it is).
    pub fn lr(&self, phase_epoch: u64, step: u64, base_lr: f64) -> Option<f64> {
        if self.spec.is_constant() {
            return None;
        }
        let s = phase_epoch * self.steps_per_epoch + step;
        Some(lr_at(
            s,
            self.steps_per_epoch,
            self.total_steps(),
            base_lr,
            &self.spec,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: LrSchedule, warmup_epochs: f64) -> ScheduleSpec {
        ScheduleSpec {
            schedule,
            warmup_epochs,
            warmup_start_factor: 0.1,
            lr_final_factor: 0.01,
        }
    }

    #[test]
    fn constant_is_constant() {
        let s = spec(LrSchedule::Constant, 0.0);
        assert!(s.is_constant());
        for step in [0, 1, 7, 99, 100, 1000] {
            assert_eq!(lr_at(step, 10, 100, 1e-3, &s), 1e-3);
        }
        let p = PhaseSchedule {
            spec: s,
            steps_per_epoch: 10,
            epochs: 10,
        };
        assert_eq!(p.lr(3, 2, 1e-3), None);
    }

    #[test]
    fn warmup_is_linear_and_reaches_base_exactly_at_its_end() {
        let s = spec(LrSchedule::Constant, 2.0);
        assert!(!s.is_constant());
        assert_eq!(s.warmup_steps(10), 20);
        let base = 1e-3;
        assert!((lr_at(0, 10, 100, base, &s) - 0.1 * base).abs() < 1e-18);
        // Equal increments over the warm-up.
        let d: Vec<f64> = (0..20)
            .map(|k| lr_at(k + 1, 10, 100, base, &s) - lr_at(k, 10, 100, base, &s))
            .collect();
        for x in &d {
            assert!((x - 0.9 * base / 20.0).abs() < 1e-15, "{d:?}");
        }
        assert_eq!(lr_at(20, 10, 100, base, &s), base);
        assert_eq!(lr_at(57, 10, 100, base, &s), base);
        // Fractional warm-up epochs round to steps.
        assert_eq!(spec(LrSchedule::Constant, 0.25).warmup_steps(10), 3);
    }

    #[test]
    fn cosine_runs_from_base_to_final_factor_over_the_phase() {
        let s = spec(LrSchedule::Cosine, 0.0);
        let base = 2e-3;
        assert_eq!(lr_at(0, 10, 100, base, &s), base);
        assert!((lr_at(99, 10, 100, base, &s) - 0.01 * base).abs() < 1e-18);
        assert!((lr_at(150, 10, 100, base, &s) - 0.01 * base).abs() < 1e-18);
        // Half-way: the mean of both ends; decreasing throughout.
        let mid = lr_at(0, 1, 3, base, &s);
        assert_eq!(mid, base);
        let m = lr_at(1, 1, 3, base, &s);
        assert!((m - base * (1.0 + 0.01) / 2.0).abs() < 1e-15, "{m}");
        let all: Vec<f64> = (0..100).map(|k| lr_at(k, 10, 100, base, &s)).collect();
        assert!(all.windows(2).all(|w| w[1] < w[0]));
        // A one-step phase stays at the base.
        assert_eq!(lr_at(0, 1, 1, base, &s), base);
    }

    #[test]
    fn warmup_and_cosine_multiply() {
        let s = spec(LrSchedule::Cosine, 1.0);
        let c = spec(LrSchedule::Cosine, 0.0);
        let w = spec(LrSchedule::Constant, 1.0);
        for k in [0, 3, 9, 10, 40] {
            let got = lr_at(k, 10, 50, 1.0, &s);
            let want = lr_at(k, 10, 50, 1.0, &c) * lr_at(k, 10, 50, 1.0, &w);
            assert!((got - want).abs() < 1e-15);
        }
        let p = PhaseSchedule {
            spec: s,
            steps_per_epoch: 10,
            epochs: 5,
        };
        assert_eq!(p.total_steps(), 50);
        assert_eq!(p.lr(2, 3, 0.5), Some(lr_at(23, 10, 50, 0.5, &s)));
    }
}
