//! The README's "Typical use" commands, run as written on the raccoon photos (a VOC folder) and
//! darknet's COCO-pretrained tiny weights. Only the placeholders are replaced by real paths, and
//! `yolo train` gets flags that make the run small (input 128, one epoch per phase).

use std::path::{Path, PathBuf};
use std::process::Command;

use yolo_testutil::shared_path;

/// The README's commands after the "Typical use" line: continuation lines joined, comments cut.
fn typical_use(readme: &str) -> Vec<Vec<String>> {
    let start = readme
        .find("Typical use on your own data")
        .expect("README has a Typical use section");
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("an sh block follows") + 6;
    let close = open + block[open..].find("```").expect("the block ends");
    let mut cmds = Vec::new();
    let mut pending = String::new();
    for line in block[open..close].lines() {
        let code = line.split(" #").next().unwrap_or("").trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let words: Vec<String> = pending.split_whitespace().map(String::from).collect();
        if !words.is_empty() {
            cmds.push(words);
        }
        pending.clear();
    }
    cmds
}

#[test]
fn readme_lists_the_typical_commands_in_order() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let cmds = typical_use(&readme);
    let names: Vec<&str> = cmds.iter().map(|c| c[1].as_str()).collect();
    assert_eq!(
        names,
        [
            "voc2txt",
            "check-data",
            "anchors",
            "train",
            "eval",
            "detect",
            "detect"
        ]
    );
    assert!(cmds.iter().all(|c| c[0] == "yolo"));
}

#[test]
#[cfg_attr(
    any(
        shared_missing = "models/yolov3-tiny",
        shared_missing = "datasets/raccoon"
    ),
    ignore = "needs ../shared/models/yolov3-tiny and datasets/raccoon"
)]
fn readme_typical_use_runs_as_written_on_raccoon() {
    let (Some(model), Some(raccoon)) = (
        shared_path("models/yolov3-tiny"),
        shared_path("datasets/raccoon"),
    ) else {
        return;
    };
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for n in [10, 90] {
        let f = format!("raccoon-{n}.jpg");
        std::fs::copy(raccoon.join("images").join(&f), images.join(&f)).unwrap();
    }
    let weights: PathBuf = model.join("yolov3-tiny.weights");
    let replace = |w: &str| -> String {
        match w {
            "path/to/VOCdevkit/VOC2007" => raccoon.display().to_string(),
            "yolov3-tiny.weights" => weights.display().to_string(),
            _ => w.to_string(),
        }
    };
    for cmd in typical_use(&readme) {
        let mut args: Vec<String> = cmd[1..].iter().map(|w| replace(w)).collect();
        if args[0] == "train" {
            args.extend(
                [
                    "--input-size",
                    "128",
                    "--epochs",
                    "bottleneck=1",
                    "--epochs",
                    "frozen=1",
                    "--epochs",
                    "unfreeze=1",
                    "--quiet",
                ]
                .map(String::from),
            );
        }
        let out = Command::new(env!("CARGO_BIN_EXE_yolo"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "yolo {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What the commands said they would write is there.
    for f in [
        "train.txt",
        "classes.txt",
        "anchors.txt",
        "runs/x/best.safetensors",
        "runs/x/trained_weights_final.safetensors",
        "runs/x/loss.png",
        "map.json",
        "detections/detections.json",
        "detections/raccoon-90.png",
        "coco/detections.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let map = yolo_testutil::read_json(&dir.path().join("map.json"));
    let m = map["voc"]["map"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&m), "{m}");
    // The COCO model as it is finds keras-yolo3's bear in raccoon-90 (class 21).
    let coco = yolo_testutil::read_json(&dir.path().join("coco/detections.json"));
    assert!(
        coco.as_array()
            .unwrap()
            .iter()
            .any(|d| d["category_id"] == 21
                && d["image_id"].as_str().unwrap().ends_with("raccoon-90.jpg")),
        "{coco:#}"
    );
}
