//! Multi-scale training and mixup end to end on tiny generated data (tiny YOLOv3, 64x64 base
//! input): the augmenting phases train on batches of the drawn sizes, validation stays at the
//! base input, a stop and `--resume` replays the same sizes; mixup reaches the training batches.

mod common;

use std::path::Path;

use common::{config, synth};
use yolo_train::{PhaseKind, RunOutcome, RunState, StopAfter, TrainConfig, Trainer};

fn frozen_and_unfreeze(dir: &Path, name: &str, sizes: &[usize]) -> TrainConfig {
    let mut cfg = config(dir);
    cfg.run_dir = dir.join(name);
    cfg.bottleneck.enabled = false;
    cfg.frozen.epochs = 2;
    cfg.frozen.batch_size = 2;
    cfg.unfreeze.initial_epoch = 2;
    cfg.unfreeze.epochs = 4;
    cfg.unfreeze.batch_size = 2;
    cfg.multi_scale = sizes.to_vec();
    cfg.multi_scale_every = 1;
    cfg.prefetch = 1;
    cfg
}

fn losses(s: &RunState) -> Vec<(f64, f64)> {
    s.history
        .iter()
        .map(|r| (r.train.total, r.val.total))
        .collect()
}

fn run(cfg: TrainConfig) -> RunState {
    let mut t = Trainer::new(cfg, |_| {}).unwrap();
    assert!(matches!(t.run().unwrap(), RunOutcome::Finished { .. }));
    t.state().clone()
}

#[test]
fn multi_scale_trains_on_the_drawn_sizes_and_resumes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8, 64, 64);
    let single = run(frozen_and_unfreeze(dir.path(), "single", &[]));
    let multi = run(frozen_and_unfreeze(dir.path(), "multi", &[64, 96, 128]));
    assert_eq!(single.history.len(), 4);
    assert_eq!(multi.history.len(), 4);
    for (l, v) in losses(&multi) {
        assert!(l.is_finite() && v.is_finite(), "{l} {v}");
    }
    // The frozen phase's first epoch already ran steps at other input sizes.
    assert_ne!(losses(&single)[0].0, losses(&multi)[0].0);
    // A single allowed size equal to the base input is the same run as no multi-scale.
    let same = run(frozen_and_unfreeze(dir.path(), "same", &[64]));
    assert_eq!(losses(&same), losses(&single));

    // Stopped after frozen epoch 1 and resumed: the same sizes at the same steps.
    let mut cfg = frozen_and_unfreeze(dir.path(), "stopped", &[64, 96, 128]);
    cfg.stop_after = Some(StopAfter {
        phase: PhaseKind::Frozen,
        epoch: 0,
    });
    let mut t = Trainer::new(cfg, |_| {}).unwrap();
    assert!(matches!(t.run().unwrap(), RunOutcome::Stopped { .. }));
    drop(t);
    let mut t = Trainer::resume(&dir.path().join("stopped"), &[], |_| {}).unwrap();
    assert!(matches!(t.run().unwrap(), RunOutcome::Finished { .. }));
    assert_eq!(losses(t.state()), losses(&multi));
}

#[test]
fn mixup_reaches_the_training_batches() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8, 64, 64);
    let mut plain = frozen_and_unfreeze(dir.path(), "plain", &[]);
    plain.unfreeze.enabled = false;
    let mut mixed = plain.clone();
    mixed.run_dir = dir.path().join("mixed");
    mixed.mixup = 1.0;
    let (a, b) = (run(plain), run(mixed));
    let (la, lb) = (losses(&a), losses(&b));
    assert_ne!(
        la[0].0, lb[0].0,
        "the first epoch trained on blended images"
    );
    for ((_, va), (_, vb)) in la.iter().zip(&lb) {
        assert!(va.is_finite() && vb.is_finite());
    }
}
