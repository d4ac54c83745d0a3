//! One epoch numbering for users: the `PHASE epoch E/N` log lines count 1-based within the phase
//! over the phase's own number of epochs (not Keras' absolute end epoch), `metrics.csv` keeps
//! Keras' 0-based `epoch` and adds the same 1-based `phase_epoch`, and the progress line is not
//! printed when stderr is not a terminal. Tiny YOLOv3 at 64x64 on 8 synthetic images.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{s, synth};

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_yolo"))
        .arg("train")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run yolo")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The flags of a tiny run: bottleneck 1 epoch, frozen 2, unfreeze 2 from Keras epoch 50
/// (keras-yolo3's default `initial_epoch`).
fn tiny_args<'a>(ann: &'a Path, classes: &'a Path, run: &'a Path) -> Vec<&'a str> {
    let mut v = common::TINY_CPU_RUN.to_vec();
    v.extend([
        "--set",
        "unfreeze.initial_epoch=50",
        "--epochs",
        "bottleneck=1",
        "--epochs",
        "frozen=2",
        "--epochs",
        "unfreeze=2",
        "--batch-size",
        "bottleneck=2",
        "--batch-size",
        "frozen=2",
        "--batch-size",
        "unfreeze=2",
        "--annotations",
        s(ann),
        "--classes",
        s(classes),
        "--run-dir",
        s(run),
    ]);
    v
}

/// The `PHASE epoch E/N` prefixes of the epoch log lines, in order.
fn epoch_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(": loss ")?;
            head.contains(" epoch ").then(|| head.to_string())
        })
        .collect()
}

/// `(phase, epoch, phase_epoch)` of every metrics.csv row, read by header name.
fn csv_epochs(run: &Path) -> Vec<(String, usize, usize)> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column: {header:?}"))
    };
    let (p, e, pe) = (col("phase"), col("epoch"), col("phase_epoch"));
    assert_eq!(e + 1, pe, "phase_epoch sits next to epoch: {header:?}");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[p].to_string(),
                f[e].parse().unwrap(),
                f[pe].parse().unwrap(),
            )
        })
        .collect()
}

fn rows(v: &[(&str, usize, usize)]) -> Vec<(String, usize, usize)> {
    v.iter()
        .map(|(p, e, pe)| (p.to_string(), *e, *pe))
        .collect()
}

#[test]
fn log_lines_and_metrics_csv_number_epochs_within_the_phase() {
    let t = tempfile::tempdir().unwrap();
    let (ann, classes) = synth(&t.path().join("data"));
    let run = t.path().join("run");
    // Progress on (no --quiet), but stderr is a pipe: no progress line may appear in it.
    let out = train(&tiny_args(&ann, &classes, &run));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        epoch_lines(&err),
        [
            "bottleneck epoch 1/1",
            "frozen epoch 1/2",
            "frozen epoch 2/2",
            "unfreeze epoch 1/2",
            "unfreeze epoch 2/2",
        ],
        "{err}"
    );
    assert!(!err.contains(" step "), "progress line on a pipe: {err}");
    assert!(!err.contains("eta phase"), "progress line on a pipe: {err}");
    assert!(
        err.contains("phase unfreeze: 2 epochs (Keras epochs 50..52)"),
        "{err}"
    );
    assert_eq!(
        csv_epochs(&run),
        rows(&[
            ("bottleneck", 0, 1),
            ("frozen", 0, 1),
            ("frozen", 1, 2),
            ("unfreeze", 50, 1),
            ("unfreeze", 51, 2),
        ])
    );
}

#[test]
fn a_stopped_then_resumed_run_keeps_the_phase_numbering() {
    let t = tempfile::tempdir().unwrap();
    let (ann, classes) = synth(&t.path().join("data"));
    let run = t.path().join("run");
    // --stop-after numbers epochs as the log does: unfreeze:1 is its first epoch (Keras' 50).
    let mut a = tiny_args(&ann, &classes, &run);
    a.extend(["--quiet", "--stop-after", "unfreeze:1"]);
    let out = train(&a);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        epoch_lines(&err).last().map(String::as_str),
        Some("unfreeze epoch 1/2"),
        "{err}"
    );
    let out = train(&["--quiet", "--resume", s(&run)]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(epoch_lines(&err), ["unfreeze epoch 2/2"], "{err}");
    assert!(
        err.contains("phase unfreeze: 2 epochs (Keras epochs 50..52), from epoch 2/2"),
        "{err}"
    );
    assert_eq!(
        csv_epochs(&run).last().unwrap(),
        &("unfreeze".to_string(), 51, 2)
    );
    assert_eq!(csv_epochs(&run).len(), 5);
}
