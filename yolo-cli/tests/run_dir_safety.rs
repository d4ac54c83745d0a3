//! A run's files stay where the user asked and never mix with another run's: odd characters in
//! paths, a second run into the same directory, `--overwrite`, Ctrl-C / SIGTERM, stale temporary
//! files, and a schedule with nothing to train. Tiny YOLOv3 at 64x64 on 8 synthetic images.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::synth;

const YOLO: &str = env!("CARGO_BIN_EXE_yolo");

/// A short schedule: one bottleneck epoch, one frozen, one unfreeze.
fn short() -> Vec<&'static str> {
    [
        common::TINY_CPU_RUN,
        &[
            "--quiet",
            "--set",
            "bottleneck.epochs=1",
            "--set",
            "bottleneck.batch_size=2",
            "--set",
            "frozen.epochs=1",
            "--set",
            "frozen.batch_size=2",
            "--set",
            "unfreeze.initial_epoch=1",
            "--set",
            "unfreeze.epochs=2",
            "--set",
            "unfreeze.batch_size=2",
        ],
    ]
    .concat()
}

fn train(data: &(std::path::PathBuf, std::path::PathBuf), run: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(YOLO);
    c.arg("train")
        .arg("--annotations")
        .arg(&data.0)
        .arg("--classes")
        .arg(&data.1)
        .arg("--run-dir")
        .arg(run)
        .args(short())
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("run yolo")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every file under `dir`, relative, as `a/b/c`.
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            out.extend(files(&e.path()).into_iter().map(|f| format!("{name}/{f}")));
        } else {
            out.insert(name);
        }
    }
    out
}

#[test]
fn a_run_dir_with_an_apostrophe_and_spaces_is_used_exactly() {
    let t = tempfile::tempdir().unwrap();
    // The annotation format separates fields by whitespace (keras-yolo3's), so image paths hold
    // no space; the run directory may.
    let data = synth(&t.path().join("it's_data"));
    let cwd = t.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let dir = t.path().join("x").join("bob's run ü");
    let mut c = train(&data, &dir, &[]);
    c.current_dir(&cwd);
    let out = run(c);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("trained_weights_final.safetensors").is_file());
    assert!(dir.join("state.json").is_file());
    assert!(
        files(&cwd).is_empty(),
        "wrote into the cwd: {:?}",
        files(&cwd)
    );
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg["run_dir"].as_str(), dir.to_str());
    assert_eq!(cfg["annotations"].as_str(), data.0.to_str());
    // And --resume of the finished run reads it back.
    let out = run({
        let mut c = Command::new(YOLO);
        c.args(["train", "--print-config", "--resume"]).arg(&dir);
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: toml::Table = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(shown["annotations"].as_str(), data.0.to_str());
}

#[test]
fn a_second_run_goes_to_a_new_directory_and_overwrite_clears_the_old_one() {
    let t = tempfile::tempdir().unwrap();
    let data = synth(&t.path().join("data"));
    let dir = t.path().join("train");
    let first = run(train(&data, &dir, &[]));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let before = files(&dir);
    assert!(
        before.contains("trained_weights_final.safetensors"),
        "{before:?}"
    );

    // The same command again: a new directory, the old run untouched.
    let second = run(train(&data, &dir, &["--skip", "unfreeze"]));
    assert!(second.status.success(), "{}", text(&second.stderr));
    let err = text(&second.stderr);
    let dir2 = t.path().join("train2");
    let want = format!(
        "{} already holds a run (continue it with `--resume {}`, or replace it with \
         `--overwrite`): this run goes to {}",
        dir.display(),
        dir.display(),
        dir2.display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(files(&dir), before, "the first run was changed");
    let in2 = files(&dir2);
    assert!(
        in2.contains("trained_weights_stage_1.safetensors"),
        "{in2:?}"
    );
    assert!(
        !in2.contains("trained_weights_final.safetensors"),
        "{in2:?}"
    );
    assert!(text(&second.stdout).contains(&format!("run directory {}", dir2.display())));

    // --overwrite: the old final weights and checkpoints are gone, not left for a user to pick.
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let third = run(train(&data, &dir, &["--skip", "unfreeze", "--overwrite"]));
    assert!(third.status.success(), "{}", text(&third.stderr));
    assert!(text(&third.stderr).contains(&format!("of the earlier run in {}", dir.display())));
    let now = files(&dir);
    let mut want_left: BTreeSet<String> = in2
        .iter()
        .filter(|f| !f.starts_with("cache/"))
        .cloned()
        .collect();
    want_left.insert("notes.txt".into());
    let now_no_cache: BTreeSet<String> = now
        .iter()
        .filter(|f| !f.starts_with("cache/"))
        .cloned()
        .collect();
    assert_eq!(now_no_cache, want_left);
    assert!(!t.path().join("train3").exists());
}

#[test]
fn sigterm_stops_between_steps_says_how_to_resume_and_leaves_no_temp_file() {
    let t = tempfile::tempdir().unwrap();
    let data = synth(&t.path().join("data"));
    let dir = t.path().join("run");
    // A longer unfreeze phase, so the signal lands while it trains.
    let mut c = train(
        &data,
        &dir,
        &[
            "--set",
            "unfreeze.epochs=400",
            "--set",
            "unfreeze.batch_size=1",
        ],
    );
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // Wait for a committed unfreeze epoch.
    loop {
        let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
        if state.contains("\"phase\": \"unfreeze\"") && state.contains("\"next_epoch\": 2") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no unfreeze epoch: {state}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the signal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("interrupt: stopping after the current step"),
        "{err}"
    );
    let saved = err
        .lines()
        .find(|l| l.starts_with("interrupted during unfreeze epoch "))
        .unwrap_or_else(|| panic!("no interrupt message: {err}"));
    let tail = format!(
        "({}/state.json); continue with `yolo train --resume {}`",
        dir.display(),
        dir.display()
    );
    assert!(saved.ends_with(&tail), "{saved}");
    assert!(
        saved.contains("the run is saved up to unfreeze epoch "),
        "{saved}"
    );
    let temps: Vec<String> = files(&dir)
        .into_iter()
        .filter(|f| f.contains(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");

    // The saved state is a valid run: the resume continues it (stopped again right away).
    let out = run({
        let mut c = Command::new(YOLO);
        c.args(["train", "--quiet", "--resume"])
            .arg(&dir)
            .args(["--set", "stop_after={ phase = 'unfreeze', epoch = 400 }"])
            .args(["--set", "unfreeze.epochs=3"]);
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn stale_temporary_files_of_dead_processes_are_removed_at_the_next_start() {
    let t = tempfile::tempdir().unwrap();
    let data = synth(&t.path().join("data"));
    let dir = t.path().join("run");
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    // No Linux pid reaches 2^31 - 2: the process that wrote this is certainly gone.
    let stale = dir.join("cache/.bottleneck_train.bin.tmp2147483646");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    let out = run(train(
        &data,
        &dir,
        &["--skip", "frozen", "--skip", "unfreeze"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!stale.exists());
    assert!(text(&out.stderr).contains(&format!(
        "removed {}: a temporary file left by an interrupted process",
        stale.display()
    )));
}

#[test]
fn a_schedule_with_no_epoch_to_run_is_refused_and_an_empty_phase_is_said() {
    let t = tempfile::tempdir().unwrap();
    let data = synth(&t.path().join("data"));
    let dir = t.path().join("run");
    let none = run(train(
        &data,
        &dir,
        &[
            "--set",
            "bottleneck.epochs=0",
            "--set",
            "frozen.epochs=0",
            "--set",
            "unfreeze.initial_epoch=0",
            "--set",
            "unfreeze.epochs=0",
        ],
    ));
    assert!(!none.status.success());
    assert!(text(&none.stderr).contains(
        "config schedule: no enabled phase has an epoch to run (each has epochs <= \
         initial_epoch): nothing would be trained"
    ));
    assert!(!dir.exists(), "a refused run wrote {:?}", files(&dir));

    let one = run(train(&data, &dir, &["--set", "unfreeze.epochs=1"]));
    assert!(one.status.success(), "{}", text(&one.stderr));
    assert!(text(&one.stderr).contains(
        "phase unfreeze: no epoch to run (epochs 1 <= initial_epoch 1): skipped, no \
         trained_weights_final.safetensors written"
    ));
    assert!(!dir.join("trained_weights_final.safetensors").exists());
    assert!(text(&one.stdout).contains(&format!(
        "final weights: {}",
        dir.join("trained_weights_stage_1.safetensors").display()
    )));
}
