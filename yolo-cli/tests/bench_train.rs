//! `yolo bench-train`: one fresh run per seed into `OUT/seed-K`, each scored on the same
//! validation split, with per-seed values and their mean in `OUT/bench_train.json`. Tiny YOLOv3
//! at 64x64 on 8 synthetic images, 1 epoch per phase, 2 seeds.

mod common;
use common::{s, synth, yolo};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn two_seeds_give_two_runs_on_one_split_and_their_mean() {
    let tmp = tempfile::tempdir().unwrap();
    let (ann, classes) = synth(&tmp.path().join("data"));
    let out = tmp.path().join("study");
    let o = yolo(&[
        "bench-train",
        "--seeds",
        "2",
        "--first-seed",
        "3",
        "--out",
        s(&out),
        "--",
        "--tiny",
        "--input-size",
        "64",
        "--quiet",
        "--device",
        "cpu",
        "--set",
        "val_split=0.25",
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
        s(&ann),
        "--classes",
        s(&classes),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", text(&o.stderr));
    for k in [3, 4] {
        let d = out.join(format!("seed-{k}"));
        assert!(d.join("config.toml").is_file(), "{}", d.display());
        let cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(d.join("config.toml")).unwrap()).unwrap();
        assert_eq!(cfg["seed"].as_integer(), Some(k));
        assert_eq!(cfg["split_seed"].as_integer(), Some(10101));
        assert!(
            stdout.contains(&format!("seed {k}: VOC mAP@0.5 ")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("over 2 seeds (mean ± sample SD):"),
        "{stdout}"
    );
    assert!(out.join("bench_train.csv").is_file());
    let csv = std::fs::read_to_string(out.join("bench_train.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");

    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench_train.json")).unwrap())
            .unwrap();
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let f = |v: &serde_json::Value, k: &str| {
        v[k].as_f64().unwrap_or_else(|| panic!("{k} = {:?}", v[k]))
    };
    for r in runs {
        for k in ["voc_map50", "coco_map"] {
            assert!((0.0..=1.0).contains(&f(r, k)), "{k} {r}");
        }
        assert!(f(r, "cpu_seconds") > 0.0, "{r}");
        assert!(f(r, "wall_seconds") > 0.0, "{r}");
    }
    assert_eq!(runs[0]["seed"], 3);
    assert_eq!(runs[1]["seed"], 4);
    let summary = &j["summary"];
    for k in ["voc_map50", "coco_map", "cpu_seconds", "wall_seconds"] {
        let mean = f(&summary[k], "mean");
        let want = (f(&runs[0], k) + f(&runs[1], k)) / 2.0;
        assert!((mean - want).abs() < 1e-12, "{k}: {mean} vs {want}");
        assert_eq!(summary[k]["n"], 2);
        assert!(f(&summary[k], "sd") >= 0.0);
    }
    // The split is fixed: both seeds are scored on the same validation images.
    let val = |r: &serde_json::Value| r["val_images"].as_array().unwrap().clone();
    assert_eq!(val(&runs[0]), val(&runs[1]));
    assert_eq!(val(&runs[0]).len(), 2);
}

#[test]
fn resume_among_the_train_options_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = yolo(&[
        "bench-train",
        "--seeds",
        "2",
        "--out",
        s(&tmp.path().join("study")),
        "--",
        "--resume",
        "runs/x",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--resume is not allowed"),
        "{}",
        text(&o.stderr)
    );
    assert!(!tmp.path().join("study").exists());
}
