//! Validation mAP during training: `map_every = 1` fills metrics.csv's `map`
//! column on every epoch, `checkpoint_monitor = "map"` makes Keras' `ModelCheckpoint(period,
//! save_best_only=True)` compare mAP in mode max (files `ep..-loss..-val_loss..-map..`), and
//! `resume` continues with the stored best.
//!
//! Small on purpose: tiny YOLOv3 at 64x64, 16 images of yolo-data's synthetic shapes, only the
//! cheap bottleneck phase (6 epochs, checkpoint period 2).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use yolo_data::{write_synth, SynthConfig, SynthShape};
use yolo_train::{
    CheckpointMonitor, EpochRecord, ModelCheckpoint, MonitorMode, PhaseKind, RunOutcome, RunState,
    StopAfter, TrainConfig, Trainer,
};

const EPOCHS: usize = 6;
const PERIOD: usize = 2;

/// 16 synthetic 64x64 images (2 classes) and a small-anchors file; returns (annotations, classes,
/// anchors).
fn dataset(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let cfg = SynthConfig {
        image_size: 64,
        count: 16,
        classes: vec![SynthShape::Circle, SynthShape::Square],
        seed: 11,
        min_object_size: 14,
        max_object_size: 32,
        max_objects: 2,
        ..Default::default()
    };
    let d = write_synth(&cfg, &dir.join("data")).unwrap();
    let anchors = dir.join("anchors.txt");
    std::fs::write(&anchors, "8,8, 12,12, 16,16, 20,20, 26,26, 32,32\n").unwrap();
    (d.annotation_file, d.classes_file, anchors)
}

fn config(data: &(PathBuf, PathBuf, PathBuf), run: &Path) -> TrainConfig {
    let q = |p: &Path| format!("'{}'", p.display());
    TrainConfig::load(
        None,
        &[
            format!("annotations = {}", q(&data.0)),
            format!("classes = {}", q(&data.1)),
            format!("anchors = {}", q(&data.2)),
            format!("run_dir = {}", q(run)),
            "tiny = true".into(),
            "input = [64, 64]".into(),
            "val_split = 0.25".into(),
            "progress = false".into(),
            "prefetch = 1".into(),
            "eval_map = true".into(),
            "map_every = 1".into(),
            "checkpoint_monitor = 'map'".into(),
            format!("checkpoint_period = {PERIOD}"),
            "frozen.enabled = false".into(),
            "unfreeze.enabled = false".into(),
            format!("bottleneck.epochs = {EPOCHS}"),
            "bottleneck.batch_size = 4".into(),
            "bottleneck.lr = 0.01".into(),
        ],
    )
    .unwrap()
}

/// A log sink, and the lines it collects.
fn collector() -> (Rc<RefCell<Vec<String>>>, impl FnMut(&str) + 'static) {
    let lines = Rc::new(RefCell::new(Vec::new()));
    let sink = lines.clone();
    (lines, move |m: &str| sink.borrow_mut().push(m.to_string()))
}

/// Runs a trainer to its outcome.
fn run(t: &mut Trainer) -> RunOutcome {
    t.run().unwrap()
}

/// Keras ModelCheckpoint(mode='max', period) replayed over a history: the file names it must have
/// written, and its best, starting from `best`.
fn expected_checkpoints(history: &[EpochRecord], best: f64) -> (Vec<String>, f64) {
    let mut best = best;
    let mut files = Vec::new();
    for (i, r) in history.iter().enumerate() {
        if (i + 1) % PERIOD == 0 {
            let m = r.map.expect("mAP on a checked epoch");
            if m > best {
                best = m;
                files.push(ModelCheckpoint::file_name(
                    r.epoch,
                    r.train.total,
                    r.val.total,
                    r.map,
                ));
            }
        }
    }
    files.sort();
    (files, best)
}

fn checkpoint_files(run: &Path) -> Vec<String> {
    let dir = run.join("checkpoints").join("bottleneck");
    let mut v: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// metrics.csv's `map` column, one entry per epoch (None when empty).
fn csv_maps(run: &Path) -> Vec<Option<f64>> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "map").expect("map column");
    lines
        .map(|l| {
            let f = l.split(',').nth(col).unwrap();
            (!f.is_empty()).then(|| f.parse::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn map_every_epoch_best_map_checkpoints_and_resume_keeps_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());

    // 1. Uninterrupted: mAP after every epoch, the checkpoint compares it every 2nd epoch.
    let full_dir = dir.path().join("full");
    let (lines, sink) = collector();
    let mut t = Trainer::new(config(&data, &full_dir), sink).unwrap();
    let out = run(&mut t);
    let log = lines.borrow().clone();
    assert!(matches!(out, RunOutcome::Finished { .. }), "{out:?}");
    let full = t.state().clone();
    drop(t);
    assert_eq!(full.history.len(), EPOCHS);
    let maps = csv_maps(&full_dir);
    assert_eq!(maps.len(), EPOCHS);
    for (r, m) in full.history.iter().zip(&maps) {
        let m = m.unwrap_or_else(|| panic!("epoch {}: empty map column", r.epoch));
        assert!((0.0..=1.0).contains(&m), "epoch {}: mAP {m}", r.epoch);
        // The CSV shows 6 decimals of the recorded value.
        assert!((r.map.unwrap() - m).abs() <= 5e-7, "{:?} vs {m}", r.map);
    }
    // The epoch lines carry the mAP; the end of the phase reuses the last epoch's instead of
    // evaluating the same weights again.
    let epoch_lines = log
        .iter()
        .filter(|l| l.starts_with("bottleneck epoch") && l.contains(" mAP@0.5 "))
        .count();
    assert_eq!(epoch_lines, EPOCHS, "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("validation mAP@0.5") && l.contains("computed after epoch 6")),
        "{log:#?}"
    );

    let (expected, best) = expected_checkpoints(&full.history, f64::NEG_INFINITY);
    assert!(!expected.is_empty());
    assert!(expected
        .iter()
        .all(|f| f.contains("-val_loss") && f.contains("-map")));
    assert_eq!(checkpoint_files(&full_dir), expected);
    assert_eq!(
        (full.checkpoint.monitor, full.checkpoint.mode),
        (CheckpointMonitor::Map, MonitorMode::Max)
    );
    assert_eq!(full.checkpoint.best, best);

    // 2. Stopped after epoch 2 (one check done, at epoch 1), then resumed: the stored best is the
    // epoch-1 mAP, and the resumed run ends exactly as the uninterrupted one.
    let part_dir = dir.path().join("part");
    let mut cfg = config(&data, &part_dir);
    cfg.stop_after = Some(StopAfter {
        phase: PhaseKind::Bottleneck,
        epoch: 2,
    });
    let mut t = Trainer::new(cfg, |_| {}).unwrap();
    run(&mut t);
    drop(t);
    let saved = RunState::load(&part_dir).unwrap();
    assert_eq!(saved.checkpoint.mode, MonitorMode::Max);
    assert_eq!(saved.checkpoint.best, full.history[1].map.unwrap());
    assert_eq!(saved.checkpoint.epochs_since_last_save, 1);
    let mut t = Trainer::resume(&part_dir, &[], |_| {}).unwrap();
    run(&mut t);
    let resumed = t.state().clone();
    drop(t);
    let got: Vec<_> = resumed.history.iter().map(|r| r.map).collect();
    let want: Vec<_> = full.history.iter().map(|r| r.map).collect();
    assert_eq!(got, want);
    assert_eq!(resumed.checkpoint.best, full.checkpoint.best);
    assert_eq!(checkpoint_files(&part_dir), expected);

    // 3. Resume really reads the best from state.json: with a stored best of 1.0 (no mAP exceeds
    // it) the resumed epochs save nothing. With map_every = 0 the checkpoint still gets its mAP on
    // the epochs it checks (3 and 5), and only there.
    let keep_dir = dir.path().join("keep");
    let mut cfg = config(&data, &keep_dir);
    cfg.stop_after = Some(StopAfter {
        phase: PhaseKind::Bottleneck,
        epoch: 2,
    });
    let mut t = Trainer::new(cfg, |_| {}).unwrap();
    run(&mut t);
    drop(t);
    let before = checkpoint_files(&keep_dir);
    assert_eq!(
        before,
        expected_checkpoints(&full.history[..3], f64::NEG_INFINITY).0
    );
    let state_path = RunState::path(&keep_dir);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    v["checkpoint"]["best"] = serde_json::json!(1.0);
    std::fs::write(&state_path, v.to_string()).unwrap();
    let mut t = Trainer::resume(&keep_dir, &["map_every=0".to_string()], |_| {}).unwrap();
    run(&mut t);
    let kept = t.state().clone();
    drop(t);
    assert_eq!(kept.config.map_every, 0);
    assert_eq!(kept.checkpoint.best, 1.0);
    assert_eq!(checkpoint_files(&keep_dir), before);
    let maps: Vec<bool> = csv_maps(&keep_dir).iter().map(Option::is_some).collect();
    assert_eq!(maps, vec![true, true, true, true, false, true]);
    for e in [3, 5] {
        assert_eq!(kept.history[e].map, full.history[e].map, "epoch {e}");
    }
}
