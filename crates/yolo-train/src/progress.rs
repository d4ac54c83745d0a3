//! A progress bar per epoch (indicatif): step count, running loss, images/s and ETA.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One epoch's progress bar; hidden when progress is off (tests, non-interactive runs).
pub struct EpochProgress {
    bar: ProgressBar,
}

impl EpochProgress {
    /// A bar of `steps` steps labelled `phase epoch`.
    pub fn new(visible: bool, phase: &str, epoch: usize, steps: usize) -> Self {
        let bar = ProgressBar::new(steps as u64);
        if visible {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{phase} ep{:03}", epoch + 1));
        EpochProgress { bar }
    }

    /// Advances one step and shows the running mean loss and throughput.
    pub fn step(&self, mean_loss: f64, images_per_sec: f64) {
        self.bar.inc(1);
        self.bar
            .set_message(format!("loss {mean_loss:.3} {images_per_sec:.1} img/s"));
    }

    /// Removes the bar (the trainer then logs the epoch summary).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
