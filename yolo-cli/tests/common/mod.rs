//! Helpers shared by the tests that run the built `yolo` binary.
// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `yolo args...` and captures its output; no backtrace is appended to printed errors
/// (anyhow adds one when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is set).
pub fn yolo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_yolo"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run yolo")
}

/// The settings every small CPU training run of these tests shares: tiny YOLOv3 at 64x64 on the
/// CPU, seed 7, a quarter of the lines held out, no mAP evaluation.
pub const TINY_CPU_RUN: &[&str] = &[
    "--tiny",
    "--input",
    "64",
    "--device",
    "cpu",
    "--set",
    "seed=7",
    "--set",
    "val_split=0.25",
    "--set",
    "eval_map=false",
];

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A small synthetic dataset (8 images of 64x64, two classes) as `yolo synth` writes it, made with
/// the library call behind it; returns the annotation and classes files.
pub fn synth(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = yolo_data::SynthConfig {
        image_size: 64,
        count: 8,
        classes: vec![yolo_data::SynthShape::Circle, yolo_data::SynthShape::Square],
        seed: 3,
        min_object_size: 12,
        max_object_size: 32,
        max_objects: 2,
        ..Default::default()
    };
    let d = yolo_data::write_synth(&cfg, dir).unwrap();
    (d.annotation_file, d.classes_file)
}

/// `yolo voc2txt` of the raccoon VOC folder into `dir` (`all.txt`, `classes.txt`), then its first
/// `n` lines as `dir/train.txt`; returns that file and the full annotation text.
pub fn raccoon_subset(raccoon: &Path, dir: &Path, n: usize) -> (PathBuf, String) {
    let all = dir.join("all.txt");
    let out = yolo(&["voc2txt", s(raccoon), "--out", s(&all)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&all).unwrap();
    let sub = dir.join("train.txt");
    std::fs::write(&sub, text.lines().take(n).collect::<Vec<_>>().join("\n")).unwrap();
    (sub, text)
}
