//! The ultralytics-style options on tiny generated data (tiny YOLOv3, 64x64, 12 training
//! images, batch 4: 3 steps per epoch): the per-phase learning-rate schedule (warm-up, cosine,
//! with ReduceLROnPlateau on top) and the EMA of the weights, each across a stop and `--resume`,
//! and both off by default.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
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
    let mut t = Trainer::new(cfg, |_| {}).unwrap();
    let out = t.run().unwrap();
    (out, t.state().clone())
}

fn resume(dir: &Path) -> RunState {
    let mut t = Trainer::resume(dir, &[], |_| {}).unwrap();
    assert!(matches!(t.run().unwrap(), RunOutcome::Finished { .. }));
    t.state().clone()
}

fn lrs(s: &RunState) -> Vec<f64> {
    s.history.iter().map(|r| r.lr).collect()
}

fn load(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

/// Largest absolute difference between same-named tensors of `a` and `b` (which must hold the
/// same names), over the names `pick` accepts.
fn max_diff(
    a: &HashMap<String, Tensor>,
    b: &HashMap<String, Tensor>,
    pick: impl Fn(&str) -> bool,
) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut m = 0f32;
    for (k, x) in a.iter().filter(|(k, _)| pick(k)) {
        let d = (x - &b[k])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        m = m.max(d);
    }
    m
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
    assert_eq!(c.ema_decay, 0.0);

    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 16, 64, 64);
    let (_, s) = run(unfreeze_only(dir.path(), "default", 2));
    // Keras' constant Adam rate, no EMA file, and the phase's weights are the trained ones.
    assert_eq!(lrs(&s), vec![1e-3, 1e-3]);
    assert_eq!(s.ema, None);
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
            "ema_decay=0".into(),
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

#[test]
fn ema_weights_are_validated_and_saved_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 16, 64, 64);
    let ema_cfg = |name: &str, stop: usize| {
        let mut cfg = unfreeze_only(dir.path(), name, 2);
        // A short ramp so that the average lags the raw weights visibly within 6 steps.
        cfg.ema_decay = 0.9;
        cfg.ema_tau = 1.0;
        cfg.stop_after = Some(StopAfter {
            phase: PhaseKind::Unfreeze,
            epoch: stop,
        });
        cfg
    };
    let is_bn_stat = |k: &str| k.ends_with("running_mean") || k.ends_with("running_var");

    // Stopped after the first epoch: best.safetensors (written at that epoch, the first) holds
    // the average, which differs from the raw weights, BatchNorm statistics included.
    let (_, s) = run(ema_cfg("a", 0));
    let a = dir.path().join("a");
    let ema_file = s.ema.clone().expect("the average is saved for resume");
    assert_eq!(ema_file, RunState::last_ema_file(PhaseKind::Unfreeze, 0));
    let ema0 = load(&a.join(&ema_file));
    let raw0 = load(&a.join(s.weights.as_ref().unwrap()));
    let best = load(&a.join(yolo_train::BEST_WEIGHTS));
    assert_eq!(max_diff(&best, &ema0, |_| true), 0.0);
    assert!(max_diff(&raw0, &ema0, |k| !is_bn_stat(k)) > 0.0);
    assert!(max_diff(&raw0, &ema0, is_bn_stat) > 0.0);

    // Stopped after the last epoch: resuming only ends the phase, whose weights file is the
    // saved average (not the raw weights).
    let (_, s) = run(ema_cfg("b", 1));
    let b = dir.path().join("b");
    let ema1 = load(&b.join(s.ema.as_ref().unwrap()));
    let raw1 = load(&b.join(s.weights.as_ref().unwrap()));
    assert!(max_diff(&raw1, &ema1, |_| true) > 0.0);
    let done = resume(&b);
    assert_eq!(done.ema, None);
    let final_b = load(&b.join(PhaseKind::Unfreeze.weights_file()));
    assert_eq!(max_diff(&final_b, &ema1, |_| true), 0.0);

    // The run stopped after its first epoch, resumed, ends with the same average: the EMA
    // (and its update count) survives the resume.
    resume(&a);
    let final_a = load(&a.join(PhaseKind::Unfreeze.weights_file()));
    let d = max_diff(&final_a, &final_b, |_| true);
    assert!(d < 1e-4, "{d}");
}
