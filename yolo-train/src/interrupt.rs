//! A stop request from outside the training loop (the binary's Ctrl-C / SIGTERM handler). The
//! loop looks at it between steps, so a stop never lands in the middle of a checkpoint write: the
//! run ends with its last completed epoch committed and `--resume` continues from there.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks the running training loop (and a bottleneck cache build) to stop at the next step.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Withdraws a stop request (tests run several trainers in one process).
pub fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
}
