//! The ultralytics-style options on tiny generated data (tiny YOLOv3, 64x64, 12 training
//! images, batch 4: 3 steps per epoch): the per-phase learning-rate schedule (warm-up, cosine,
//! with ReduceLROnPlateau on top) across a stop and `--resume`, and off by default.

mod common;

use std::path::Path;

use common::{config, synth};
use yolo_train::{
    lr_at, LrSchedule, PhaseKind, RunOutcome, RunState, StopAfter, TrainConfig, Trainer,
};

const STEPS: u64 = 3;

/// Only the unfreeze phase (every layer trained, BatchNorm statistics moving), epochs `0..n`.
fn unfreeze_only(dir: &Path, name: &str, n: usize) -> TrainConfig {
    let mut cfg = config(dir);
    cfg.run_dir = dir.join(name);
    cfg.bottleneck.enabled = false;
    cfg.frozen.enabled = false;
    let u = &mut cfg.unfreeze;
    u.initial_epoch = 0;
    u.epochs = n;
    u.batch_size = 4;
    u.lr = 1e-3;
    cfg.prefetch = 1;
    cfg
}

fn run(cfg: TrainConfig) -> (RunOutcome, RunState) {
    let mut t = Trainer::new(cfg).unwrap();
    t.set_log(|_| {});
    let out = t.run().unwrap();
    (out, t.state().clone())
}

fn resume(dir: &Path) -> RunState {
    let mut t = Trainer::resume(dir, &[]).unwrap();
    t.set_log(|_| {});
    assert!(matches!(t.run().unwrap(), RunOutcome::Finished { .. }));
    t.state().clone()
}

fn lrs(s: &RunState) -> Vec<f64> {
    s.history.iter().map(|r| r.lr).collect()
}

fn close(a: f64, b: f64) -> bool {
    ((a - b) / b).abs() < 1e-12
}

#[test]
fn options_are_off_by_default_and_change_nothing() {
    let c = TrainConfig::default();
    for p in PhaseKind::ALL {
        let pc = c.phase(p);
        assert_eq!(
            (pc.lr_schedule, pc.warmup_epochs),
            (LrSchedule::Constant, 0.0)
        );
        assert!(pc.schedule().is_constant());
    }

    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 16, 64, 64);
    let (_, s) = run(unfreeze_only(dir.path(), "default", 2));
    // Keras' constant Adam rate.
    assert_eq!(lrs(&s), vec![1e-3, 1e-3]);
    let run_dir = dir.path().join("default");
    let last: Vec<_> = std::fs::read_dir(run_dir.join("last"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(last.is_empty(), "{last:?}");
    // The same run with every option spelt out as off gives the very same metrics.
    let mut off = unfreeze_only(dir.path(), "off", 2);
    off = off
        .with_overrides(&[
            "unfreeze.lr_schedule=\"constant\"".into(),
            "unfreeze.warmup_epochs=0".into(),
        ])
        .unwrap();
    let (_, s2) = run(off);
    assert_eq!(s.history.len(), s2.history.len());
    for (a, b) in s.history.iter().zip(&s2.history) {
        assert_eq!(
            (a.train.total, a.val.total, a.lr),
            (b.train.total, b.val.total, b.lr)
        );
    }
}

#[test]
fn warmup_cosine_and_plateau_give_the_same_rates_after_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 16, 64, 64);
    let sched = |name: &str| {
        let mut cfg = unfreeze_only(dir.path(), name, 3)
            .with_overrides(&[
                "unfreeze.lr_schedule=\"cosine\"".into(),
                "unfreeze.warmup_epochs=1".into(),
                "unfreeze.warmup_start_factor=0.1".into(),
                "unfreeze.lr_final_factor=0.05".into(),
                // No epoch counts as an improvement after the first: the plateau cuts the
                // base rate after every later epoch.
                "plateau_patience=0".into(),
                "plateau_min_delta=1e9".into(),
                "plateau_factor=0.5".into(),
            ])
            .unwrap();
        cfg.unfreeze.plateau_and_early_stopping = true;
        cfg
    };
    let (_, full) = run(sched("full"));
    let spec = full.config.unfreeze.schedule();
    let total = 3 * STEPS;
    // The first step of each epoch: warm-up from 0.1 x lr, then cosine; the plateau halves
    // the base after epoch 1 (the first without improvement).
    let want = [
        lr_at(0, STEPS, total, 1e-3, &spec),
        lr_at(STEPS, STEPS, total, 1e-3, &spec),
        lr_at(2 * STEPS, STEPS, total, 0.5e-3, &spec),
    ];
    assert!(close(want[0], 1e-4), "{want:?}");
    assert_eq!(want[1], lr_at(STEPS, STEPS, total, 1e-3, &spec));
    let got = lrs(&full);
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(want) {
        assert!(close(*g, w), "{got:?} vs {want:?}");
    }
    // The base rate, cut twice (after epochs 1 and 2).
    assert!(close(full.lr, 0.25e-3), "{}", full.lr);

    // Stopped after epoch 1 and resumed: the same rates.
    let mut cfg = sched("resumed");
    cfg.stop_after = Some(StopAfter {
        phase: PhaseKind::Unfreeze,
        epoch: 1,
    });
    let (out, stopped) = run(cfg);
    assert!(matches!(out, RunOutcome::Stopped { .. }));
    assert_eq!(stopped.phase_steps, 2 * STEPS);
    assert!(close(stopped.lr, 0.5e-3), "{}", stopped.lr);
    let resumed = resume(&dir.path().join("resumed"));
    let again = lrs(&resumed);
    for (a, b) in got.iter().zip(&again) {
        assert!(close(*a, *b), "{got:?} vs {again:?}");
    }
}
