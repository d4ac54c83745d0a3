//! One progress line for the whole run (indicatif): the phase, `epoch E/N` of that phase (1-based,
//! `N` the phase's number of epochs, as in the epoch log lines), the step within the epoch, the
//! running loss, images/s, and two ETAs: the rest of the phase and the rest of the run.
//!
//! The bar itself fills over the run's steps. It is drawn on stderr only when `progress` is on
//! and stderr is a terminal (indicatif draws nothing otherwise), and is cleared at the end of
//! every epoch so the epoch's log line prints on a clean line.
//!
//! # How the ETAs are estimated
//!
//! Work is counted in *units*, one per training image weighted by [`image_cost`]: 1 for a
//! frozen-phase image, [`TRAINABLE_IMAGE_COST`] for scratch and unfreeze (the backward pass runs
//! through the whole body) and [`BOTTLENECK_IMAGE_COST`] for the bottleneck phase (it trains the
//! output convs on cached body features, so a step is much cheaper). These weights are rough
//! guesses; only the current phase is measured. The seconds per unit are measured on the current phase in this session: wall time
//! since its first epoch here began (validation and mAP of the finished epochs included) over
//! the units trained since. The phase ETA is its remaining steps times that; the run ETA adds
//! every later phase's steps (`epochs × max(1, n_train / batch_size)`, each step `batch_size`
//! images) at the same rate. Until the current phase has a step, the previous phase's rate is
//! used, else the ETAs show `?`. Early stopping and `max_seconds` can end a phase sooner, so
//! the ETAs are upper bounds in that sense.

use std::cell::RefCell;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{PhaseConfig, PhaseKind};

/// Units of work of one bottleneck-phase image, relative to one frozen-phase image (a rough
/// estimate: cached features skip the body's forward pass).
pub const BOTTLENECK_IMAGE_COST: f64 = 0.05;

/// Units of work of one scratch- or unfreeze-phase image, relative to one frozen-phase image (a
/// rough estimate: the backward pass also runs through the body).
pub const TRAINABLE_IMAGE_COST: f64 = 2.0;

/// Units of work of one training image of phase `kind` (see the module docs).
pub fn image_cost(kind: PhaseKind) -> f64 {
    match kind {
        PhaseKind::Bottleneck => BOTTLENECK_IMAGE_COST,
        PhaseKind::Frozen => 1.0,
        PhaseKind::Scratch | PhaseKind::Unfreeze => TRAINABLE_IMAGE_COST,
    }
}

/// keras-yolo3's steps per epoch, `max(1, n / batch_size)` (0 batch size read as 1).
pub fn steps_per_epoch(n_train: usize, batch_size: usize) -> usize {
    (n_train / batch_size.max(1)).max(1)
}

/// One phase's share of the run, for the progress line and its ETAs.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSteps {
    /// The phase.
    pub kind: PhaseKind,
    /// Keras number of its first epoch.
    pub initial_epoch: usize,
    /// Its number of epochs (`N` of `epoch E/N`).
    pub epochs: usize,
    /// Training steps per epoch.
    pub steps_per_epoch: usize,
    /// Images per step.
    pub batch_size: usize,
}

impl PhaseSteps {
    /// The plan of phase `kind` configured as `pc`, on `n_train` training images.
    pub fn new(kind: PhaseKind, pc: &PhaseConfig, n_train: usize) -> Self {
        PhaseSteps {
            kind,
            initial_epoch: pc.initial_epoch,
            epochs: pc.count(),
            steps_per_epoch: steps_per_epoch(n_train, pc.batch_size),
            batch_size: pc.batch_size,
        }
    }

    /// Training steps of the whole phase.
    pub fn total_steps(&self) -> usize {
        self.epochs.saturating_mul(self.steps_per_epoch)
    }

    /// Units of work of one step (see the module docs).
    pub fn step_cost(&self) -> f64 {
        self.batch_size as f64 * image_cost(self.kind)
    }

    /// Steps of the phase done once `step` steps of Keras epoch `epoch` are.
    pub fn done_steps(&self, epoch: usize, step: usize) -> usize {
        epoch
            .saturating_sub(self.initial_epoch)
            .saturating_mul(self.steps_per_epoch)
            .saturating_add(step)
    }
}

/// Seconds per unit of work, measured as `seconds` for `steps` steps of `plan`; `None` without
/// a step or a usable time.
pub fn seconds_per_unit(plan: &PhaseSteps, steps: usize, seconds: f64) -> Option<f64> {
    let units = steps as f64 * plan.step_cost();
    (units > 0.0 && seconds.is_finite() && seconds >= 0.0).then(|| seconds / units)
}

/// Estimated seconds left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eta {
    /// The rest of the current phase.
    pub phase: Option<f64>,
    /// The rest of the run: the current phase and every later one.
    pub run: Option<f64>,
}

/// The ETAs once `done` steps of `plans[current]` are done, at `secs_per_unit` seconds per unit
/// of work (both `None` without a rate; nothing is left past the last plan).
pub fn estimate(
    plans: &[PhaseSteps],
    current: usize,
    done: usize,
    secs_per_unit: Option<f64>,
) -> Eta {
    let Some(rate) = secs_per_unit.filter(|r| r.is_finite() && *r >= 0.0) else {
        return Eta {
            phase: None,
            run: None,
        };
    };
    let left = |p: &PhaseSteps, done: usize| p.total_steps().saturating_sub(done) as f64;
    let phase = plans
        .get(current)
        .map_or(0.0, |p| left(p, done) * p.step_cost() * rate);
    let later: f64 = plans
        .iter()
        .skip(current + 1)
        .map(|p| left(p, 0) * p.step_cost() * rate)
        .sum();
    Eta {
        phase: Some(phase),
        run: Some(phase + later),
    }
}

/// A duration for the progress line: `42s`, `3m05s`, `2h07m`; `?` when unknown.
pub fn format_duration(secs: Option<f64>) -> String {
    let Some(s) = secs.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "?".into();
    };
    let s = s.round().min(u64::MAX as f64) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The position part of the progress line: `frozen epoch 2/5 step 13/40` (`epoch` 1-based).
pub fn position_label(
    phase: PhaseKind,
    epoch: usize,
    epochs: usize,
    step: usize,
    steps: usize,
) -> String {
    format!("{phase} epoch {epoch}/{epochs} step {step}/{steps}")
}

/// The rest of the progress line: loss, throughput and the two ETAs.
pub fn status_message(mean_loss: f64, images_per_sec: f64, eta: Eta) -> String {
    format!(
        "loss {mean_loss:.3} {images_per_sec:.1} img/s eta phase {} run {}",
        format_duration(eta.phase),
        format_duration(eta.run)
    )
}

/// What the run has measured of the current phase.
struct Timing {
    /// Index into the plans of the phase measured.
    phase: usize,
    /// When its first epoch of this session began.
    start: Instant,
    /// Steps trained since.
    steps: usize,
    /// The previous phase's seconds per unit, used until this phase has a step.
    carried: Option<f64>,
}

/// The run-level progress: the plans of the phases still to run, and the timing of the current
/// one. Make one per [`crate::Trainer::run`] and an [`EpochProgress`] per epoch.
pub struct RunProgress {
    visible: bool,
    plans: Vec<PhaseSteps>,
    timing: RefCell<Option<Timing>>,
}

impl RunProgress {
    /// Progress over `plans` (the phases still to run, in order); nothing is drawn unless
    /// `visible` and stderr is a terminal.
    pub fn new(visible: bool, plans: Vec<PhaseSteps>) -> Self {
        RunProgress {
            visible,
            plans,
            timing: RefCell::new(None),
        }
    }

    /// The plans.
    #[cfg(test)]
    fn plans(&self) -> &[PhaseSteps] {
        &self.plans
    }

    fn rate(&self, t: &Timing) -> Option<f64> {
        let plan = self.plans.get(t.phase)?;
        seconds_per_unit(plan, t.steps, t.start.elapsed().as_secs_f64()).or(t.carried)
    }

    /// Starts Keras epoch `epoch` of `phase`, of `steps` steps.
    pub fn epoch(&self, phase: PhaseKind, epoch: usize, steps: usize) -> EpochProgress<'_> {
        let index = self.plans.iter().position(|p| p.kind == phase);
        if let Some(i) = index {
            let mut timing = self.timing.borrow_mut();
            if timing.as_ref().is_none_or(|t| t.phase != i) {
                let carried = timing.as_ref().and_then(|t| self.rate(t));
                *timing = Some(Timing {
                    phase: i,
                    start: Instant::now(),
                    steps: 0,
                    carried,
                });
            }
        }
        let bar = ProgressBar::hidden();
        let run_steps: usize = self.plans.iter().map(PhaseSteps::total_steps).sum();
        let before: usize = index.map_or(0, |i| {
            let plan = &self.plans[i];
            let earlier: usize = self.plans[..i].iter().map(PhaseSteps::total_steps).sum();
            earlier + plan.done_steps(epoch, 0)
        });
        if self.visible {
            bar.set_length(run_steps.max(1) as u64);
            bar.set_position(before.min(run_steps) as u64);
            let style = ProgressStyle::with_template("{prefix} {msg} [{wide_bar}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        let p = EpochProgress {
            run: self,
            bar,
            index,
            phase,
            epoch,
            steps,
            step: 0,
            before,
        };
        p.draw(None);
        p
    }
}

/// One epoch's progress on the run-level line.
pub struct EpochProgress<'a> {
    run: &'a RunProgress,
    bar: ProgressBar,
    index: Option<usize>,
    phase: PhaseKind,
    epoch: usize,
    steps: usize,
    step: usize,
    before: usize,
}

impl EpochProgress<'_> {
    /// The `E/N` of the epoch, 1-based within its phase (`N` 0 for a phase not planned).
    fn epoch_of(&self) -> (usize, usize) {
        match self.index.map(|i| &self.run.plans[i]) {
            Some(p) => (self.epoch.saturating_sub(p.initial_epoch) + 1, p.epochs),
            None => (self.epoch + 1, 0),
        }
    }

    fn draw(&self, loss_and_speed: Option<(f64, f64)>) {
        if !self.run.visible {
            return;
        }
        let (e, n) = self.epoch_of();
        self.bar
            .set_prefix(position_label(self.phase, e, n, self.step, self.steps));
        let eta = match (self.index, self.run.timing.borrow().as_ref()) {
            (Some(i), Some(t)) => {
                let done = self.run.plans[i].done_steps(self.epoch, self.step);
                estimate(&self.run.plans, i, done, self.run.rate(t))
            }
            _ => estimate(&[], 0, 0, None),
        };
        let msg = match loss_and_speed {
            Some((loss, ips)) => status_message(loss, ips, eta),
            None => format!(
                "eta phase {} run {}",
                format_duration(eta.phase),
                format_duration(eta.run)
            ),
        };
        self.bar.set_message(msg);
        self.bar.set_position((self.before + self.step) as u64);
    }

    /// Advances one step and shows the running mean loss, throughput and ETAs.
    pub fn step(&mut self, mean_loss: f64, images_per_sec: f64) {
        self.step += 1;
        if let Some(t) = self.run.timing.borrow_mut().as_mut() {
            t.steps += 1;
        }
        self.draw(Some((mean_loss, images_per_sec)));
    }

    /// Runs `f` (e.g. printing a warning) with the line cleared, then redraws it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Clears the line (the trainer then logs the epoch summary).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for EpochProgress<'_> {
    /// Clears the line also when the epoch ends early (an error, an interruption).
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(kind: PhaseKind, epochs: usize, steps: usize, batch: usize) -> PhaseSteps {
        PhaseSteps {
            kind,
            initial_epoch: 0,
            epochs,
            steps_per_epoch: steps,
            batch_size: batch,
        }
    }

    #[test]
    fn steps_per_epoch_is_keras_and_never_zero() {
        assert_eq!(steps_per_epoch(10, 4), 2);
        assert_eq!(steps_per_epoch(3, 8), 1);
        assert_eq!(steps_per_epoch(0, 8), 1);
        assert_eq!(steps_per_epoch(10, 0), 10);
    }

    #[test]
    fn phase_and_run_eta_from_the_measured_rate() {
        // frozen: 2 epochs x 10 steps of 4 images; unfreeze: 3 x 20 steps of 2 images.
        let plans = [
            plan(PhaseKind::Frozen, 2, 10, 4),
            plan(PhaseKind::Unfreeze, 3, 20, 2),
        ];
        // 5 frozen steps in 10 s: 0.5 s per image.
        let rate = seconds_per_unit(&plans[0], 5, 10.0);
        assert_eq!(rate, Some(0.5));
        let eta = estimate(&plans, 0, 5, rate);
        // 15 steps left x 4 images x 0.5 s; unfreeze: 60 steps x 2 images, each twice a frozen
        // image's work, x 0.5 s.
        assert_eq!(eta.phase, Some(30.0));
        assert_eq!(
            eta.run,
            Some(30.0 + 60.0 * 2.0 * TRAINABLE_IMAGE_COST * 0.5)
        );
        // In the last phase both ETAs agree: 10 steps left.
        let eta = estimate(&plans, 1, 50, Some(0.5));
        let left = 10.0 * 2.0 * TRAINABLE_IMAGE_COST * 0.5;
        assert_eq!((eta.phase, eta.run), (Some(left), Some(left)));
    }

    #[test]
    fn later_phases_scale_with_their_batch_size() {
        // Same epochs and images per epoch; batch 8 has half the steps of batch 4, each twice
        // the work: the same estimate.
        let a = [
            plan(PhaseKind::Frozen, 1, 1, 1),
            plan(PhaseKind::Frozen, 2, 10, 4),
        ];
        let b = [
            plan(PhaseKind::Frozen, 1, 1, 1),
            plan(PhaseKind::Frozen, 2, 5, 8),
        ];
        let run = |p: &[PhaseSteps]| estimate(p, 0, 1, Some(0.25)).run.unwrap();
        assert_eq!(run(&a), 20.0);
        assert_eq!(run(&b), 20.0);
    }

    #[test]
    fn bottleneck_steps_are_cheaper_than_image_steps() {
        let plans = [
            plan(PhaseKind::Bottleneck, 1, 10, 4),
            plan(PhaseKind::Frozen, 1, 10, 4),
        ];
        // 10 bottleneck steps took 1 s: the frozen phase is estimated 1 / 0.05 = 20 times longer.
        let rate = seconds_per_unit(&plans[0], 10, 1.0);
        let eta = estimate(&plans, 0, 10, rate);
        assert_eq!(eta.phase, Some(0.0));
        let run = eta.run.unwrap();
        assert!((run - 1.0 / BOTTLENECK_IMAGE_COST).abs() < 1e-9, "{run}");
    }

    #[test]
    fn no_rate_no_steps_and_overruns_do_not_panic() {
        let plans = [plan(PhaseKind::Frozen, 2, 10, 4)];
        assert_eq!(seconds_per_unit(&plans[0], 0, 3.0), None);
        assert_eq!(seconds_per_unit(&plans[0], 1, f64::NAN), None);
        assert_eq!(
            seconds_per_unit(&plan(PhaseKind::Frozen, 1, 1, 0), 5, 1.0),
            None
        );
        let none = estimate(&plans, 0, 0, None);
        assert_eq!((none.phase, none.run), (None, None));
        // More steps done than planned, an index past the plans, an empty plan list.
        assert_eq!(estimate(&plans, 0, 99, Some(1.0)).phase, Some(0.0));
        assert_eq!(estimate(&plans, 5, 0, Some(1.0)).run, Some(0.0));
        assert_eq!(estimate(&[], 0, 0, Some(1.0)).run, Some(0.0));
        assert_eq!(plan(PhaseKind::Frozen, 0, 0, 1).total_steps(), 0);
    }

    #[test]
    fn done_steps_count_from_the_phase_initial_epoch() {
        let mut p = plan(PhaseKind::Unfreeze, 10, 20, 2);
        p.initial_epoch = 50;
        assert_eq!(p.done_steps(50, 0), 0);
        assert_eq!(p.done_steps(52, 3), 43);
        assert_eq!(p.done_steps(10, 3), 3);
    }

    #[test]
    fn plan_from_config_counts_the_phase_epochs() {
        let mut pc = crate::config::TrainConfig::default().unfreeze;
        pc.initial_epoch = 50;
        pc.epochs = 60;
        pc.batch_size = 4;
        let p = PhaseSteps::new(PhaseKind::Unfreeze, &pc, 18);
        assert_eq!((p.epochs, p.steps_per_epoch, p.total_steps()), (10, 4, 40));
    }

    #[test]
    fn durations_and_line_format() {
        assert_eq!(format_duration(None), "?");
        assert_eq!(format_duration(Some(f64::INFINITY)), "?");
        assert_eq!(format_duration(Some(-1.0)), "?");
        assert_eq!(format_duration(Some(0.4)), "0s");
        assert_eq!(format_duration(Some(42.0)), "42s");
        assert_eq!(format_duration(Some(185.0)), "3m05s");
        assert_eq!(format_duration(Some(7620.0)), "2h07m");
        assert_eq!(
            position_label(PhaseKind::Frozen, 2, 5, 13, 40),
            "frozen epoch 2/5 step 13/40"
        );
        let eta = Eta {
            phase: Some(65.0),
            run: Some(750.0),
        };
        assert_eq!(
            status_message(12.3456, 30.04, eta),
            "loss 12.346 30.0 img/s eta phase 1m05s run 12m30s"
        );
    }

    #[test]
    fn progress_runs_through_epochs_and_phases_without_panicking() {
        let plans = vec![
            plan(PhaseKind::Bottleneck, 1, 2, 4),
            plan(PhaseKind::Frozen, 2, 0, 4),
        ];
        // Visible or not (stderr is no terminal under the test harness, so nothing is drawn).
        for visible in [false, true] {
            let run = RunProgress::new(visible, plans.clone());
            for (kind, epoch, steps) in [
                (PhaseKind::Bottleneck, 0, 2),
                (PhaseKind::Frozen, 0, 0),
                (PhaseKind::Unfreeze, 7, 1),
            ] {
                let mut e = run.epoch(kind, epoch, steps);
                for _ in 0..steps {
                    e.step(1.0, 2.0);
                }
                assert_eq!(e.suspend(|| 7), 7);
                e.finish();
            }
            assert_eq!(run.plans().len(), 2);
        }
    }
}
