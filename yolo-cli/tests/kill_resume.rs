//! `kill -9` of a real `yolo train` process at several moments, each followed by
//! `yolo train --resume RUN_DIR`, ends with exactly the weights and the metrics (every loss of
//! every epoch) of an uninterrupted run with the same seed on the CPU; no kill loses more than the
//! epoch in progress.
//!
//! Small on purpose: tiny YOLOv3 at 64x64, 8 synthetic images (`yolo synth`'s generator), the three phases of
//! train_bottleneck.py with 2 epochs each and batch 2-3.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::synth;

const YOLO: &str = env!("CARGO_BIN_EXE_yolo");

/// Settings of the run: everything but the paths.
fn settings() -> Vec<&'static str> {
    [
        common::TINY_CPU_RUN,
        &[
            "--quiet",
            "--set",
            "bottleneck.epochs=2",
            "--set",
            "bottleneck.batch_size=2",
            "--set",
            "frozen.epochs=2",
            "--set",
            "frozen.batch_size=2",
            "--set",
            "unfreeze.initial_epoch=2",
            "--set",
            "unfreeze.epochs=4",
            "--set",
            "unfreeze.batch_size=3",
        ],
    ]
    .concat()
}

fn output(cmd: &mut Command) -> Output {
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run yolo")
}

fn train_fresh(data: &(PathBuf, PathBuf), run: &Path) -> Command {
    let mut c = Command::new(YOLO);
    c.arg("train")
        .arg("--annotations")
        .arg(&data.0)
        .arg("--classes")
        .arg(&data.1)
        .arg("--run-dir")
        .arg(run)
        .args(settings());
    c
}

fn train_resume(run: &Path) -> Command {
    let mut c = Command::new(YOLO);
    c.arg("train").arg("--resume").arg(run);
    c
}

/// What `state.json` says: `(phase, next_epoch, completed phases, epochs recorded)`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Progress {
    phase: String,
    next_epoch: u64,
    completed: Vec<String>,
    epochs_done: usize,
}

/// Reads the committed progress (`None` before the first epoch is committed). `state.json` is
/// replaced by rename, so a read sees either the old or the new file, never a half-written one.
fn progress(run: &Path) -> Option<Progress> {
    let text = std::fs::read_to_string(run.join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("state.json is not valid JSON ({e}): {text}"));
    Some(Progress {
        phase: v["phase"].as_str()?.to_string(),
        next_epoch: v["next_epoch"].as_u64()?,
        completed: v["completed"]
            .as_array()?
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect(),
        epochs_done: v["history"].as_array()?.len(),
    })
}

/// When to kill: once the committed progress satisfies `when`, after `delay`.
struct Moment {
    name: &'static str,
    when: fn(&Option<Progress>) -> bool,
    delay: Duration,
}

/// Runs `cmd` and kills it with `kill -9` at `moment`. Returns whether it was killed (false when
/// it finished first) and the last progress seen before the kill.
fn run_and_kill(mut cmd: Command, run: &Path, moment: &Moment) -> (bool, Option<Progress>) {
    let mut child: Child = cmd
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn yolo train");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(
                status.success(),
                "{}: yolo train failed: {err}",
                moment.name
            );
            return (false, progress(run));
        }
        let seen = progress(run);
        if (moment.when)(&seen) {
            std::thread::sleep(moment.delay);
            let seen = progress(run);
            if child.try_wait().unwrap().is_some() {
                return (false, seen);
            }
            let killed = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(killed.success());
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(9), "{}: {status:?}", moment.name);
            return (true, seen);
        }
        assert!(
            Instant::now() < deadline,
            "{}: no progress in 300 s",
            moment.name
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every tensor of a safetensors file, as raw bytes with dtype and shape.
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<_> = map
        .into_iter()
        .map(|(name, t)| {
            let bytes: Vec<u8> = t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            (name, format!("{:?}", t.dtype()), t.dims().to_vec(), bytes)
        })
        .collect();
    v.sort();
    v
}

/// metrics.csv without the timing columns (images_per_sec, seconds), which differ run to run.
fn metrics(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != "images_per_sec" && header[i] != "seconds")
        .collect();
    std::iter::once(lines.clone().count().to_string())
        .chain(text.lines().map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            keep.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",")
        }))
        .collect()
}

#[test]
fn kill_9_at_several_moments_then_resume_gives_the_uninterrupted_run_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(&dir.path().join("data"));

    // The reference: one uninterrupted run.
    let reference = dir.path().join("reference");
    let out = output(&mut train_fresh(&data, &reference));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let final_ref = reference.join("trained_weights_final.safetensors");
    let want_weights = tensors(&final_ref);
    let want_metrics = metrics(&reference);
    assert_eq!(
        want_metrics[0], "6",
        "2 epochs x 3 phases: {want_metrics:?}"
    );

    // The same run, killed again and again.
    let run = dir.path().join("killed");
    let moments = [
        Moment {
            name: "during start-up or the first epoch",
            when: |_| true,
            delay: Duration::from_millis(150),
        },
        Moment {
            name: "right after bottleneck epoch 0 was committed",
            when: |p| p.as_ref().is_some_and(|p| p.epochs_done >= 1),
            delay: Duration::ZERO,
        },
        Moment {
            name: "inside the first frozen epoch",
            when: |p| {
                p.as_ref()
                    .is_some_and(|p| p.completed.iter().any(|c| c == "bottleneck"))
            },
            delay: Duration::from_millis(60),
        },
        Moment {
            name: "inside the second frozen epoch",
            when: |p| p.as_ref().is_some_and(|p| p.epochs_done >= 3),
            delay: Duration::from_millis(40),
        },
        Moment {
            name: "inside the first unfreeze epoch",
            when: |p| {
                p.as_ref()
                    .is_some_and(|p| p.completed.iter().any(|c| c == "frozen"))
            },
            delay: Duration::from_millis(700),
        },
        Moment {
            name: "inside the last unfreeze epoch",
            when: |p| p.as_ref().is_some_and(|p| p.epochs_done >= 5),
            delay: Duration::from_millis(700),
        },
    ];
    let mut kills = Vec::new();
    let mut finished = false;
    for m in &moments {
        let cmd = if progress(&run).is_some() {
            train_resume(&run)
        } else {
            if run.exists() {
                // Killed before the first commit: nothing to resume; `--resume` says so.
                let out = output(&mut train_resume(&run));
                assert!(!out.status.success());
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("state.json"), "{err}");
            }
            train_fresh(&data, &run)
        };
        let (killed, seen) = run_and_kill(cmd, &run, m);
        if !killed {
            finished = true;
            break;
        }
        // At most the epoch in progress is lost: every committed epoch is still committed.
        let after = progress(&run);
        let before_n = seen.as_ref().map_or(0, |p| p.epochs_done);
        let after_n = after.as_ref().map_or(0, |p| p.epochs_done);
        assert!(
            after_n >= before_n,
            "{}: {before_n} epochs committed before the kill, {after_n} after",
            m.name
        );
        kills.push((m.name, after));
    }
    if !finished {
        let out = output(&mut train_resume(&run));
        assert!(
            out.status.success(),
            "final resume: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (name, after) in &kills {
        eprintln!("killed {name}; committed then: {after:?}");
    }
    assert!(
        kills.len() >= 4,
        "the run finished before most kill moments: {kills:?}"
    );

    assert_eq!(metrics(&run), want_metrics, "kills: {kills:?}");
    let got = tensors(&run.join("trained_weights_final.safetensors"));
    assert_eq!(got.len(), want_weights.len());
    for (g, w) in got.iter().zip(&want_weights) {
        assert_eq!((&g.0, &g.1, &g.2), (&w.0, &w.1, &w.2));
        assert!(g.3 == w.3, "{} differs from the uninterrupted run", g.0);
    }
}
