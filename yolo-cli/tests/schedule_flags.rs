//! `yolo train --epochs PHASE=N --batch-size PHASE=N --lr PHASE=X`: per-phase counts mapped onto
//! Keras' numbering, `--print-config` showing every setting (max_seconds included) after the run's
//! stored config, `--set` and these flags, and `--resume` of a finished run made longer training
//! exactly the added epochs. Tiny YOLOv3 at 64x64 on 8 synthetic images, 1 epoch per phase.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::synth;

const YOLO: &str = env!("CARGO_BIN_EXE_yolo");

fn yolo(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(YOLO)
        .arg("train")
        .args(args)
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run yolo")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `--print-config` output as a table (it must parse as TOML).
fn shown(out: &Output) -> toml::Table {
    assert!(out.status.success(), "{}", text(&out.stderr));
    toml::from_str(&text(&out.stdout)).expect("--print-config prints TOML")
}

fn phase<'a>(t: &'a toml::Table, p: &str) -> &'a toml::Table {
    t[p].as_table().unwrap()
}

fn int(t: &toml::Table, k: &str) -> i64 {
    t[k].as_integer()
        .unwrap_or_else(|| panic!("{k} = {:?}", t.get(k)))
}

fn float(t: &toml::Table, k: &str) -> f64 {
    t[k].as_float()
        .unwrap_or_else(|| panic!("{k} = {:?}", t.get(k)))
}

#[test]
fn print_config_applies_set_then_the_schedule_flags_and_shows_max_seconds() {
    let t = shown(&yolo(
        &[
            "--print-config",
            "--epochs",
            "frozen=3",
            "--set",
            "frozen.epochs=7",
            "--set",
            "unfreeze.max_seconds=60",
            "--set",
            "unfreeze.epochs=10",
            "--epochs",
            "unfreeze=+5",
            "--batch-size",
            "unfreeze=2",
            "--lr",
            "unfreeze=3e-5",
            "--lr",
            "bottleneck=0.002",
        ],
        &[],
    ));
    // --epochs comes after --set: 3, not 7.
    let f = phase(&t, "frozen");
    assert_eq!(
        (
            int(f, "epochs"),
            int(f, "initial_epoch"),
            int(f, "end_epoch")
        ),
        (3, 0, 3)
    );
    assert_eq!(float(f, "max_seconds"), f64::INFINITY);
    // unfreeze: 10 epochs of its own (not "before initial_epoch 50"), +5, from Keras epoch 50.
    let u = phase(&t, "unfreeze");
    assert_eq!(
        (
            int(u, "epochs"),
            int(u, "initial_epoch"),
            int(u, "end_epoch")
        ),
        (15, 50, 65)
    );
    assert_eq!(
        (
            int(u, "batch_size"),
            float(u, "lr"),
            float(u, "max_seconds")
        ),
        (2, 3e-5, 60.0)
    );
    let b = phase(&t, "bottleneck");
    assert_eq!((int(b, "epochs"), float(b, "lr")), (30, 0.002));
    // The defaults still have train_bottleneck.py's Keras numbering.
    let d = shown(&yolo(&["--print-config"], &[]));
    let u = phase(&d, "unfreeze");
    assert_eq!(
        (
            int(u, "epochs"),
            int(u, "initial_epoch"),
            int(u, "end_epoch")
        ),
        (50, 50, 100)
    );
    // Keras' end epoch can still be given.
    let k = shown(&yolo(
        &["--print-config", "--set", "unfreeze.end_epoch=80"],
        &[],
    ));
    assert_eq!(int(phase(&k, "unfreeze"), "epochs"), 30);
}

#[test]
fn bad_schedule_flags_name_the_flag_and_the_value() {
    for (args, want) in [
        (
            ["--epochs", "froze=3"],
            "--epochs `froze=3`: unknown phase `froze` (phases: scratch, bottleneck, frozen, unfreeze)",
        ),
        (
            ["--epochs", "frozen=three"],
            "--epochs `frozen=three`: `three` is not a number of epochs",
        ),
        (
            ["--epochs", "frozen=-2"],
            "--epochs `frozen=-2`: `-2` is not a number of epochs",
        ),
        (["--epochs", "frozen"], "--epochs `frozen` is not PHASE=VALUE"),
        (
            ["--batch-size", "unfreeze=0"],
            "--batch-size `unfreeze=0`: `0` is not a batch size (an integer >= 1)",
        ),
        (
            ["--lr", "frozen=-1e-3"],
            "--lr `frozen=-1e-3`: `-1e-3` is not a learning rate (a number > 0)",
        ),
        (
            ["--lr", "frozen=fast"],
            "--lr `frozen=fast`: `fast` is not a learning rate",
        ),
    ] {
        let mut a = vec!["--print-config"];
        a.extend(args);
        let out = yolo(&a, &[]);
        assert!(!out.status.success(), "{args:?}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Data rows of the run's metrics.csv.
fn metric_rows(run: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    csv.lines().skip(1).map(|l| l.to_string()).collect()
}

/// `(phase, epoch)` of every epoch in state.json's history.
fn history(run: &Path) -> Vec<(String, u64)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["phase"].as_str().unwrap().to_string(),
                r["epoch"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn resuming_a_finished_run_with_more_epochs_trains_exactly_those() {
    let t = tempfile::tempdir().unwrap();
    let (ann, classes) = synth(&t.path().join("data"));
    let run = t.path().join("run");
    let out = yolo(
        &[
            common::TINY_CPU_RUN,
            &[
                "--quiet",
                "--set",
                "unfreeze.initial_epoch=1",
                "--epochs",
                "bottleneck=1",
                "--epochs",
                "frozen=1",
                "--epochs",
                "unfreeze=1",
                "--batch-size",
                "bottleneck=2",
                "--batch-size",
                "frozen=2",
                "--batch-size",
                "unfreeze=2",
                "--annotations",
            ],
        ]
        .concat(),
        &[
            &ann,
            Path::new("--classes"),
            &classes,
            Path::new("--run-dir"),
            &run,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(metric_rows(&run).len(), 3);
    let h = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(p, e)| (p.to_string(), *e)).collect()
    };
    assert_eq!(
        history(&run),
        h(&[("bottleneck", 0), ("frozen", 0), ("unfreeze", 1)])
    );

    // --print-config with --resume: the stored config, then --set, then --epochs.
    let s = shown(&yolo(
        &[
            "--print-config",
            "--set",
            "eval_map=true",
            "--set",
            "unfreeze.max_seconds=120",
            "--epochs",
            "unfreeze=+2",
            "--resume",
        ],
        &[&run],
    ));
    assert_eq!(s["eval_map"].as_bool(), Some(true));
    assert_eq!(s["variant"].as_str(), Some("tiny"));
    assert_eq!(s["input"].as_array().unwrap().len(), 2);
    assert_eq!(int(&s, "seed"), 7);
    let u = phase(&s, "unfreeze");
    assert_eq!(
        (
            int(u, "epochs"),
            int(u, "initial_epoch"),
            int(u, "end_epoch"),
            float(u, "max_seconds")
        ),
        (3, 1, 4, 120.0)
    );
    assert_eq!(int(phase(&s, "frozen"), "batch_size"), 2);

    // Nothing longer: the run is complete, said so, exit 0, nothing trained.
    let out = yolo(&["--quiet", "--resume"], &[&run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("run {} is complete", run.display()))
            && said.contains("nothing left to train")
            && said.contains(&format!(
                "`yolo train --resume {} --epochs unfreeze=+10`",
                run.display()
            )),
        "{said}"
    );
    assert_eq!(metric_rows(&run).len(), 3);

    // Two more unfreeze epochs: exactly Keras epochs 2 and 3 are added.
    let out = yolo(&["--quiet", "--epochs", "unfreeze=+2", "--resume"], &[&run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("phase unfreeze had finished; its schedule now ends at epoch 4"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("training finished"));
    assert_eq!(metric_rows(&run).len(), 5);
    assert_eq!(
        history(&run),
        h(&[
            ("bottleneck", 0),
            ("frozen", 0),
            ("unfreeze", 1),
            ("unfreeze", 2),
            ("unfreeze", 3)
        ])
    );
    assert!(run.join("trained_weights_final.safetensors").is_file());

    // And it is complete again.
    let out = yolo(&["--quiet", "--resume"], &[&run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("is complete"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(metric_rows(&run).len(), 5);
}
