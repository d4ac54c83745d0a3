//! `yolo train --map-every N --checkpoint-monitor val_loss|map`: the flags override the
//! configuration (file and `--set`) and `--print-config` shows the result; a wrong monitor is refused
//! before anything runs.

use std::process::Command;

const YOLO: &str = env!("CARGO_BIN_EXE_yolo");

fn print_config(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(YOLO)
        .arg("train")
        .arg("--print-config")
        .args(args)
        .output()
        .expect("run yolo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn print_config_shows_map_every_and_checkpoint_monitor_defaults_and_flags() {
    let (ok, out, err) = print_config(&[]);
    assert!(ok, "{err}");
    assert!(out.contains("map_every = 0\n"), "{out}");
    assert!(out.contains("checkpoint_monitor = \"val_loss\"\n"), "{out}");

    let (ok, out, err) = print_config(&["--map-every", "5", "--checkpoint-monitor", "map"]);
    assert!(ok, "{err}");
    assert!(out.contains("map_every = 5\n"), "{out}");
    assert!(out.contains("checkpoint_monitor = \"map\"\n"), "{out}");
}

#[test]
fn flags_override_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "map_every = 3\ncheckpoint_monitor = \"map\"\n").unwrap();
    let f = f.display().to_string();
    let (ok, out, err) = print_config(&["--config", &f]);
    assert!(ok, "{err}");
    assert!(out.contains("map_every = 3\n") && out.contains("checkpoint_monitor = \"map\""));
    let (ok, out, err) = print_config(&[
        "--config",
        &f,
        "--map-every",
        "0",
        "--checkpoint-monitor",
        "val_loss",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("map_every = 0\n"), "{out}");
    assert!(out.contains("checkpoint_monitor = \"val_loss\""), "{out}");
}

#[test]
fn unknown_monitor_and_bad_map_every_are_refused() {
    let (ok, out, err) = print_config(&["--checkpoint-monitor", "loss"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("loss") && err.contains("val_loss") && err.contains("map"),
        "{err}"
    );
    for bad in ["--map-every=-1", "--map-every=two"] {
        let (ok, out, err) = print_config(&[bad]);
        assert!(!ok, "{bad}: {out}");
        assert!(
            err.contains("invalid value") && err.contains("--map-every"),
            "{bad}: {err}"
        );
    }
}
