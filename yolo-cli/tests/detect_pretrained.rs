//! `yolo detect` straight from darknet's COCO-pretrained `yolov3-tiny.weights` (no convert, no
//! anchors or classes file) against keras-yolo3's own detections of the public raccoon photos
//! (`shared/fixtures/pretrained-tiny`), and with darknet's `.cfg`, whose stride-16 layer decodes
//! with anchors 0,1,2 instead of keras-yolo3's 1,2,3.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use yolo_testutil::{read_json, shared_path};

/// Scores and boxes differ from keras-yolo3's by the JPEG decoder (Pillow's libjpeg against the
/// `image` crate's decoder: pixel values off by one here and there), not by the network: on the
/// fixture's exact input tensors the raw outputs agree to float rounding. Seen here: at most
/// 0.014 in score and 0.22 px in a box coordinate over the 11 detections.
const SCORE_TOL: f64 = 0.025;
const BOX_TOL: f64 = 0.5;

struct Shared {
    weights: PathBuf,
    cfg: PathBuf,
    images: Vec<PathBuf>,
    fixture: Value,
}

fn shared() -> Option<Shared> {
    let model = shared_path("models/yolov3-tiny")?;
    let raccoon = shared_path("datasets/raccoon/images")?;
    let fx = shared_path("fixtures/pretrained-tiny/detections/detections.json")?;
    let fixture = read_json(&fx);
    let images = fixture["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| raccoon.join(im["file"].as_str().unwrap()))
        .collect();
    Some(Shared {
        weights: model.join("yolov3-tiny.weights"),
        cfg: model.join("yolov3-tiny.cfg"),
        images,
        fixture,
    })
}

/// Runs `yolo detect` (with `--cfg` when given) on the fixture's images into `out`;
/// (stdout, detections.json).
fn detect(s: &Shared, cfg: Option<&Path>, out: &Path) -> (String, Vec<Value>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_yolo"));
    cmd.arg("detect").arg("--weights").arg(&s.weights);
    if let Some(cfg) = cfg {
        cmd.arg("--cfg").arg(cfg);
    }
    cmd.args(&s.images).arg("--out").arg(out);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dets = read_json(&out.join("detections.json"))
        .as_array()
        .unwrap()
        .clone();
    (String::from_utf8_lossy(&o.stdout).into_owned(), dets)
}

/// Our detections of image `file` with class `class`.
fn of<'a>(dets: &'a [Value], file: &str, class: i64) -> Vec<&'a Value> {
    dets.iter()
        .filter(|d| {
            d["image_id"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{file}"))
                && d["category_id"].as_i64() == Some(class)
        })
        .collect()
}

/// `[x, y, w, h]` of a COCO results entry.
fn bbox(d: &Value) -> [f64; 4] {
    let b = d["bbox"].as_array().unwrap();
    [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap())
}

/// Every fixture detection as (file, class, score, [x, y, w, h], layer, anchor slot in its cell).
fn keras_detections(fx: &Value) -> Vec<(String, i64, f64, [f64; 4], i64, usize)> {
    let mut out = Vec::new();
    for im in fx["images"].as_array().unwrap() {
        for d in im["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["box_yxyx"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            out.push((
                im["file"].as_str().unwrap().to_string(),
                d["class"].as_i64().unwrap(),
                d["score"].as_f64().unwrap(),
                [b[1], b[0], b[3] - b[1], b[2] - b[0]],
                d["layer"].as_i64().unwrap(),
                // Rows run layer by layer, `cell * 3 + slot` inside a layer (and a layer holds a
                // multiple of 3 rows).
                d["row"].as_u64().unwrap() as usize % 3,
            ));
        }
    }
    out
}

#[test]
#[cfg_attr(
    any(
        shared_missing = "models/yolov3-tiny",
        shared_missing = "datasets/raccoon",
        shared_missing = "fixtures/pretrained-tiny"
    ),
    ignore = "needs ../shared/models/yolov3-tiny, datasets/raccoon and fixtures/pretrained-tiny"
)]
fn detect_on_darknet_weights_gives_keras_yolo3_detections() {
    let Some(s) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (stdout, dets) = detect(&s, None, tmp.path());
    for line in [
        "model: tiny YOLOv3 (darknet .weights), 80 classes, from",
        "  variant: the size of the .weights file",
        "  classes: COCO's 80 names (built in; the model has 80 classes)",
        "  anchors: 10,14,  23,27,  37,58,  81,82,  135,169,  344,319 from keras-yolo3's \
         tiny_yolo_anchors.txt (built in)",
        "  masks: keras-yolo3's anchor_mask: [[3, 4, 5], [1, 2, 3]]",
        "  input: 416x416 from the default 416",
    ] {
        assert!(stdout.contains(line), "{line:?} not in\n{stdout}");
    }
    let want = keras_detections(&s.fixture);
    assert_eq!(want.len(), 11);
    // Exactly keras-yolo3's detections: nothing more, nothing less, same classes, close scores
    // and boxes.
    assert_eq!(dets.len(), want.len(), "{dets:#?}");
    for (file, class, score, b, _, _) in &want {
        let got = of(&dets, file, *class);
        assert_eq!(got.len(), 1, "{file} class {class}: {got:?}");
        let g = got[0];
        let gs = g["score"].as_f64().unwrap();
        assert!(
            (gs - score).abs() < SCORE_TOL,
            "{file} {class}: {gs} vs {score}"
        );
        let gb = bbox(g);
        for k in 0..4 {
            assert!(
                (gb[k] - b[k]).abs() < BOX_TOL,
                "{file} {class}: {gb:?} vs {b:?}"
            );
        }
    }
}

#[test]
#[cfg_attr(
    any(
        shared_missing = "models/yolov3-tiny",
        shared_missing = "datasets/raccoon",
        shared_missing = "fixtures/pretrained-tiny"
    ),
    ignore = "needs ../shared/models/yolov3-tiny, datasets/raccoon and fixtures/pretrained-tiny"
)]
fn detect_with_the_darknet_cfg_decodes_the_stride_16_layer_with_anchors_0_1_2() {
    let Some(s) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (_, keras) = detect(&s, None, &tmp.path().join("keras"));
    let (stdout, darknet) = detect(&s, Some(&s.cfg), &tmp.path().join("darknet"));
    let cfg = s.cfg.display().to_string();
    for line in [
        format!("  variant: {cfg} ([yolo] sections, classes=80)"),
        format!(
            "  anchors: 10,14,  23,27,  37,58,  81,82,  135,169,  344,319 from {cfg} (anchors=)"
        ),
        format!("  masks: {cfg} (mask=): [[3, 4, 5], [0, 1, 2]]"),
        format!("  input: 416x416 from {cfg} ([net] width, height)"),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in\n{stdout}");
    }
    let anchors = [[10.0, 14.0], [23.0, 27.0], [37.0, 58.0], [81.0, 82.0]];
    let mut moved = 0;
    for (file, class, _, _, layer, slot) in keras_detections(&s.fixture) {
        let k = of(&keras, &file, class);
        let d = of(&darknet, &file, class);
        if layer == 0 {
            // The stride-32 layer uses anchors 3,4,5 in both: identical output.
            assert_eq!(k, d, "{file} {class}");
            continue;
        }
        // The stride-16 box keeps its centre; the anchor of its slot is keras-yolo3's
        // `slot + 1` but darknet's `slot`, which scales its width and height by their ratio.
        let kb = bbox(k[0]);
        let (cx, cy) = (kb[0] + kb[2] / 2.0, kb[1] + kb[3] / 2.0);
        let (w, h) = (
            kb[2] * anchors[slot][0] / anchors[slot + 1][0],
            kb[3] * anchors[slot][1] / anchors[slot + 1][1],
        );
        let hit = d.iter().any(|d| {
            let b = bbox(d);
            (b[0] + b[2] / 2.0 - cx).abs() < 0.01
                && (b[1] + b[3] / 2.0 - cy).abs() < 0.01
                && (b[2] - w).abs() < 0.01
                && (b[3] - h).abs() < 0.01
                && d["score"] == k[0]["score"]
        });
        assert!(
            hit,
            "{file} {class}: {kb:?} should become {w}x{h} at ({cx}, {cy}): {d:?}"
        );
        moved += 1;
    }
    assert_eq!(moved, 3, "raccoon-90 elephant and bear, raccoon-180 tie");
}

#[test]
#[cfg_attr(
    shared_missing = "models/yolov3-tiny",
    ignore = "needs ../shared/models/yolov3-tiny"
)]
fn info_describes_darknet_weights_and_refuses_a_cfg_for_a_checkpoint() {
    let Some(model) = shared_path("models/yolov3-tiny") else {
        return;
    };
    let w = model.join("yolov3-tiny.weights");
    let o = Command::new(env!("CARGO_BIN_EXE_yolo"))
        .args(["info", "--weights"])
        .arg(&w)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains(&format!(
            "model: tiny YOLOv3 (darknet .weights), 80 classes, from {}",
            w.display()
        )),
        "{stdout}"
    );
    // --tiny on a file that is not tiny, and a cfg for a safetensors file, are errors.
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("m.safetensors");
    std::fs::write(&st, b"x").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_yolo"))
        .args(["info", "--weights"])
        .arg(&st)
        .arg("--cfg")
        .arg(model.join("yolov3-tiny.cfg"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("--cfg describes darknet .weights files; this is a safetensors checkpoint"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
