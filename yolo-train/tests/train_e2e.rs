//! End to end: all three phases of train_bottleneck.py's schedule on 16 tiny generated images
//! (tiny YOLOv3, 64x64, 2 epochs per phase), then an interrupted run resumed with `resume`.

mod common;

use common::{config, synth};
use yolo_train::{PhaseKind, RunOutcome, RunState, StopAfter, TrainConfig, Trainer};

fn schedule(mut cfg: TrainConfig) -> TrainConfig {
    for (p, e0, e1, b, lr) in [
        (PhaseKind::Bottleneck, 0, 2, 4, 1e-2),
        (PhaseKind::Frozen, 0, 2, 4, 1e-2),
        (PhaseKind::Unfreeze, 2, 4, 4, 1e-3),
    ] {
        let c = cfg.phase_mut(p);
        c.initial_epoch = e0;
        c.epochs = e1;
        c.batch_size = b;
        c.lr = lr;
    }
    cfg.prefetch = 1;
    cfg
}

fn val_losses(s: &RunState, phase: PhaseKind) -> Vec<f64> {
    s.history
        .iter()
        .filter(|r| r.phase == phase.name())
        .map(|r| r.val.total)
        .collect()
}

#[test]
fn three_phases_lower_val_loss_write_files_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 16, 64, 64);

    // Uninterrupted run.
    let mut cfg = schedule(config(dir.path()));
    cfg.run_dir = dir.path().join("full");
    let mut t = Trainer::new(cfg.clone(), |_| {}).unwrap();
    let out = t.run().unwrap();
    let run = dir.path().join("full");
    assert_eq!(
        out,
        RunOutcome::Finished {
            weights: Some(run.join("trained_weights_final.safetensors"))
        }
    );
    let full = t.state().clone();
    assert_eq!(full.history.len(), 6);
    for p in [
        PhaseKind::Bottleneck,
        PhaseKind::Frozen,
        PhaseKind::Unfreeze,
    ] {
        let v = val_losses(&full, p);
        assert_eq!(v.len(), 2, "{p}");
        assert!(v[1] < v[0], "{p}: val loss {v:?} did not fall");
        assert!(run.join(p.weights_file()).exists(), "{p}");
    }
    // Epoch numbering follows Keras: stage 2 runs epochs 2 and 3 after initial_epoch 2.
    let epochs: Vec<usize> = full.history.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, vec![0, 1, 0, 1, 2, 3]);
    for f in [
        "metrics.csv",
        "loss.png",
        "state.json",
        "config.toml",
        "cache/bottleneck_train.bin",
        "cache/bottleneck_val.bin",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(csv.lines().nth(1).unwrap().starts_with("bottleneck,0,"));
    // ModelCheckpoint(period=3) fired once, at the 3rd epoch overall (frozen epoch 0 -> ep001).
    let ck: Vec<_> = std::fs::read_dir(run.join("checkpoints/frozen"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ck.len(), 1, "{ck:?}");
    assert!(
        ck[0].starts_with("ep001-loss") && ck[0].contains("-val_loss"),
        "{ck:?}"
    );
    assert_eq!(
        full.completed,
        vec![
            PhaseKind::Bottleneck,
            PhaseKind::Frozen,
            PhaseKind::Unfreeze
        ]
    );

    // Interrupted after frozen epoch 0 (the 1st epoch of phase 1), then resumed.
    let mut cfg2 = cfg.clone();
    cfg2.run_dir = dir.path().join("resumed");
    cfg2.stop_after = Some(StopAfter {
        phase: PhaseKind::Frozen,
        epoch: 0,
    });
    let mut t2 = Trainer::new(cfg2, |_| {}).unwrap();
    assert_eq!(
        t2.run().unwrap(),
        RunOutcome::Stopped {
            phase: PhaseKind::Frozen,
            epoch: 0
        }
    );
    drop(t2);
    let rdir = dir.path().join("resumed");
    let saved = RunState::load(&rdir).unwrap();
    assert_eq!(
        (saved.phase, saved.next_epoch, saved.history.len()),
        (PhaseKind::Frozen, 1, 3)
    );
    assert_eq!(saved.phase_steps, 3, "12 training images / batch 4");
    let mut t3 = Trainer::resume(&rdir, &[], |_| {}).unwrap();
    t3.run().unwrap();
    let resumed = t3.state().clone();
    assert_eq!(resumed.history.len(), 6);
    for (a, b) in full.history.iter().zip(&resumed.history) {
        assert_eq!((&a.phase, a.epoch), (&b.phase, b.epoch));
        for (x, y) in [(a.train.total, b.train.total), (a.val.total, b.val.total)] {
            assert!(
                ((x - y) / x).abs() < 1e-4,
                "{} epoch {}: {x} vs {y}",
                a.phase,
                a.epoch
            );
        }
    }
}
