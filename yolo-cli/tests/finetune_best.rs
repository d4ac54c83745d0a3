//! A short raccoon fine-tune from darknet's COCO-pretrained tiny weights through all three
//! phases: `best.safetensors` is the epoch with the run's highest validation mAP, that mAP is
//! exactly what `yolo eval --run` reports for it (one evaluation path), and the bottleneck
//! phase's checkpoints hold only the output convs it trains.

mod common;

use common::{raccoon_subset, s, yolo};
use yolo_testutil::{read_json, shared_path};

#[test]
#[cfg_attr(
    any(
        shared_missing = "models/yolov3-tiny",
        shared_missing = "datasets/raccoon"
    ),
    ignore = "needs ../shared/models/yolov3-tiny and datasets/raccoon"
)]
fn finetune_writes_the_best_map_model_that_eval_run_scores_the_same() {
    let (Some(model), Some(raccoon)) = (
        shared_path("models/yolov3-tiny"),
        shared_path("datasets/raccoon"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 32 photos: 24 to train on, 8 to validate on.
    let (sub, _) = raccoon_subset(&raccoon, dir.path(), 32);
    let run = dir.path().join("run");
    let out = yolo(&[
        "train",
        "--annotations",
        s(&sub),
        "--classes",
        s(&dir.path().join("classes.txt")),
        "--weights",
        s(&model.join("yolov3-tiny.weights")),
        "--tiny",
        "--input",
        "160",
        "--run-dir",
        s(&run),
        "--quiet",
        "--epochs",
        "bottleneck=2",
        "--epochs",
        "frozen=2",
        "--epochs",
        "unfreeze=2",
        "--batch-size",
        "unfreeze=8",
        "--set",
        "val_split=0.25",
        "--set",
        "checkpoint_period=1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // The best epoch is the highest mAP of the run, and the summary names it.
    let state = read_json(&run.join("state.json"));
    let history = state["history"].as_array().unwrap();
    let maps: Vec<(String, f64)> = history
        .iter()
        .filter_map(|r| Some((r["phase"].as_str()?.to_string(), r["map"].as_f64()?)))
        .collect();
    // mAP after every frozen and unfreeze epoch, and at the end of the bottleneck phase.
    assert_eq!(
        maps.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["bottleneck", "frozen", "frozen", "unfreeze", "unfreeze"]
    );
    let highest = maps.iter().map(|(_, m)| *m).fold(f64::MIN, f64::max);
    let best = &state["best"];
    assert_eq!(best["monitor"], "map");
    assert_eq!(best["value"].as_f64().unwrap(), highest);
    let best_file = run.join("best.safetensors");
    assert!(best_file.is_file());
    assert!(
        stdout.contains(&format!(
            "best model: {} (val mAP@0.5 {highest:.4}",
            best_file.display()
        )),
        "{stdout}"
    );

    // `yolo eval --run` evaluates best.safetensors and gets the same number, to the last bit.
    let json = dir.path().join("eval.json");
    let out = yolo(&["eval", "--run", s(&run), "--json", s(&json)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval_stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        eval_stdout.contains(&format!(
            "evaluating {} on 8 validation images",
            best_file.display()
        )),
        "{eval_stdout}"
    );
    assert_eq!(read_json(&json)["voc"]["map"].as_f64().unwrap(), highest);

    // Bottleneck checkpoints hold the two output convs only (4 tensors, a few hundred KB at
    // most), not the whole 35 MB model.
    let ck = run.join("checkpoints").join("bottleneck");
    let files: Vec<_> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        !files.is_empty(),
        "no bottleneck checkpoint in {}",
        ck.display()
    );
    for f in &files {
        let t = yolo_testutil::read_tensors(f);
        let mut names: Vec<&String> = t.keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "head.out0.bias",
                "head.out0.weight",
                "head.out1.bias",
                "head.out1.weight"
            ],
            "{}",
            f.display()
        );
        assert!(std::fs::metadata(f).unwrap().len() < 200_000);
    }
}
