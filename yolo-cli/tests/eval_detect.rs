//! `yolo eval --detections` on fixtures/map cases written out as files, and `yolo detect` end to end
//! on a tiny randomly initialised model.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use yolo_testutil::{read_json, shared_path};

fn yolo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_yolo"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run yolo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "yolo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn close(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!((g - w).abs() < 1e-9, "{what}: got {g}, expected {w}");
}

/// Results file entries of a fixture, with `image_id` as given by `image_ref`.
fn results(fx: &Value, image_ref: impl Fn(u64) -> Value, cat_offset: i64) -> Value {
    Value::Array(
        fx["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let (x0, y0) = (d["x_min"].as_f64().unwrap(), d["y_min"].as_f64().unwrap());
                let (x1, y1) = (d["x_max"].as_f64().unwrap(), d["y_max"].as_f64().unwrap());
                json!({
                    "image_id": image_ref(d["image_id"].as_u64().unwrap()),
                    "category_id": d["class_id"].as_i64().unwrap() + cat_offset,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": d["score"],
                })
            })
            .collect(),
    )
}

fn check_report(report: &Value, fx: &Value) {
    let exp = &fx["expected"];
    close(
        &report["voc"]["map"],
        &exp["voc"]["map_all_point"],
        "voc map",
    );
    close(
        &report["voc"]["map_11"],
        &exp["voc"]["map_11_point"],
        "voc map_11",
    );
    for (i, s) in exp["coco"]["stats"].as_array().unwrap().iter().enumerate() {
        close(&report["coco"]["stats"][i], s, &format!("coco stats[{i}]"));
    }
    for c in exp["coco"]["per_class"].as_array().unwrap() {
        let k = c["class_id"].as_u64().unwrap() as usize;
        let name = fx["classes"][k]["name"].as_str().unwrap();
        close(
            &report["coco"]["ap"][name],
            &c["ap"],
            &format!("coco ap {name}"),
        );
        close(
            &report["coco"]["ap50"][name],
            &c["ap50"],
            &format!("coco ap50 {name}"),
        );
    }
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/map",
    ignore = "needs shared/fixtures/map (absent)"
)]
fn eval_detections_against_coco_instances_json_matches_the_fixture() {
    let Some(p) = shared_path("fixtures/map/random_50img_3cls.json") else {
        return;
    };
    let fx = read_json(&p);
    let dir = tempfile::tempdir().unwrap();
    // COCO instances with category ids shifted by 1 (COCO ids need not start at 0).
    let gt = json!({
        "images": fx["images"],
        "categories": fx["classes"].as_array().unwrap().iter()
            .map(|c| json!({"id": c["id"].as_i64().unwrap() + 1, "name": c["name"]})).collect::<Vec<_>>(),
        "annotations": fx["ground_truth"].as_array().unwrap().iter().enumerate().map(|(i, g)| {
            let (x0, y0) = (g["x_min"].as_f64().unwrap(), g["y_min"].as_f64().unwrap());
            let (w, h) = (g["x_max"].as_f64().unwrap() - x0, g["y_max"].as_f64().unwrap() - y0);
            json!({"id": i + 1, "image_id": g["image_id"], "category_id": g["class_id"].as_i64().unwrap() + 1,
                   "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": if g["iscrowd"].as_bool().unwrap() {1} else {0}})
        }).collect::<Vec<_>>(),
    });
    let gt_path = dir.path().join("instances.json");
    std::fs::write(&gt_path, gt.to_string()).unwrap();
    let res_path = dir.path().join("results.json");
    std::fs::write(&res_path, results(&fx, |id| json!(id), 1).to_string()).unwrap();
    let json_path = dir.path().join("report.json");
    let curves = dir.path().join("curves");
    let stdout = run_ok(yolo().args([
        "eval",
        "--detections",
        res_path.to_str().unwrap(),
        "--ground-truth",
        gt_path.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
        "--pr-curves",
        curves.to_str().unwrap(),
    ]));
    assert!(stdout.contains("mAP"), "{stdout}");
    check_report(&read_json(&json_path), &fx);
    let pngs = std::fs::read_dir(&curves).unwrap().count();
    assert_eq!(pngs, 3, "one PR curve per class");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/map",
    ignore = "needs shared/fixtures/map (absent)"
)]
fn eval_detections_against_annotation_file_with_file_name_ids() {
    let Some(p) = shared_path("fixtures/map/missed_duplicates.json") else {
        return;
    };
    let fx = read_json(&p);
    let dir = tempfile::tempdir().unwrap();
    let images = fx["images"].as_array().unwrap();
    let name_of = |id: u64| -> String {
        let im = images
            .iter()
            .find(|i| i["id"].as_u64() == Some(id))
            .unwrap();
        format!("data/{}", im["file_name"].as_str().unwrap())
    };
    // One annotation line per image, in id order (line n = image n of the fixture's order).
    let mut lines = String::new();
    for im in images {
        let id = im["id"].as_u64().unwrap();
        lines.push_str(&name_of(id));
        for g in fx["ground_truth"].as_array().unwrap() {
            if g["image_id"].as_u64() == Some(id) {
                lines.push_str(&format!(
                    " {},{},{},{},{}",
                    g["x_min"], g["y_min"], g["x_max"], g["y_max"], g["class_id"]
                ));
            }
        }
        lines.push('\n');
    }
    let ann = dir.path().join("val.txt");
    std::fs::write(&ann, lines).unwrap();
    let classes = dir.path().join("classes.txt");
    let names: Vec<&str> = fx["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    std::fs::write(&classes, names.join("\n") + "\n").unwrap();
    let res_path = dir.path().join("results.json");
    // image_id as a bare file name: matched by last path component.
    let by_name = |id: u64| {
        json!(Path::new(&name_of(id))
            .file_name()
            .unwrap()
            .to_str()
            .unwrap())
    };
    std::fs::write(&res_path, results(&fx, by_name, 0).to_string()).unwrap();
    let json_path = dir.path().join("report.json");
    let stdout = run_ok(yolo().args([
        "eval",
        "--detections",
        res_path.to_str().unwrap(),
        "--ground-truth",
        ann.to_str().unwrap(),
        "--classes",
        classes.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
        "--voc11",
    ]));
    assert!(stdout.contains("11pt"), "{stdout}");
    check_report(&read_json(&json_path), &fx);
}

#[test]
fn eval_reports_a_bad_results_file_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("val.txt");
    std::fs::write(&ann, "a.jpg 1,1,9,9,0\n").unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "thing\n").unwrap();
    let res = dir.path().join("bad_results.json");
    std::fs::write(
        &res,
        r#"[{"image_id": "zzz.jpg", "category_id": 0, "bbox": [1, 1, 8, 8], "score": 0.5}]"#,
    )
    .unwrap();
    let out = yolo()
        .args([
            "eval",
            "--detections",
            res.to_str().unwrap(),
            "--ground-truth",
            ann.to_str().unwrap(),
            "--classes",
            classes.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad_results.json") && err.contains("zzz.jpg"),
        "{err}"
    );
}

/// A randomly initialised tiny model with classes `cat`, `dog`: (weights, classes, anchors) files.
fn tiny_model_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    yolo_model::tiny_yolo_body(&yolo_model::YoloConfig::tiny(2), vb).unwrap();
    let weights = dir.join("w.safetensors");
    yolo_model::save_checkpoint(&varmap, &weights).unwrap();
    let classes = dir.join("classes.txt");
    std::fs::write(&classes, "cat\ndog\n").unwrap();
    let anchors = dir.join("anchors.txt");
    std::fs::write(&anchors, "10,14, 23,27, 37,58, 81,82, 135,169, 344,319\n").unwrap();
    (weights, classes, anchors)
}

#[test]
fn eval_with_a_model_on_an_annotation_file_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, classes, anchors) = tiny_model_files(dir.path());
    let img = dir.path().join("x.png");
    image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(&img)
        .unwrap();
    let ann = dir.path().join("val.txt");
    std::fs::write(
        &ann,
        format!(
            "{p} 5,5,40,30,0\n{p} 10,10,60,50,1 1,2,20,20,0\n",
            p = img.display()
        ),
    )
    .unwrap();
    let json_path = dir.path().join("r.json");
    let stdout = run_ok(yolo().args([
        "eval",
        "--weights",
        weights.to_str().unwrap(),
        "--annotations",
        ann.to_str().unwrap(),
        "--classes",
        classes.to_str().unwrap(),
        "--anchors",
        anchors.to_str().unwrap(),
        "--tiny",
        "--input-size",
        "64",
        "--json",
        json_path.to_str().unwrap(),
    ]));
    assert!(stdout.lines().any(|l| l.starts_with("cat ")), "{stdout}");
    let r = read_json(&json_path);
    for k in ["cat", "dog"] {
        let ap = r["voc"]["ap"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ap), "{k}: {ap}");
    }
    let m = r["voc"]["map"].as_f64().unwrap();
    let mean =
        (r["voc"]["ap"]["cat"].as_f64().unwrap() + r["voc"]["ap"]["dog"].as_f64().unwrap()) / 2.0;
    assert!((m - mean).abs() < 1e-12);
    assert_eq!(r["coco"]["stats"].as_array().unwrap().len(), 12);
}

#[test]
fn detect_draws_images_and_writes_coco_results_with_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, classes, anchors) = tiny_model_files(dir.path());
    // One colour image and one grayscale image of other sizes, in a folder.
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    image::RgbImage::from_fn(80, 50, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 100]))
        .save(imgs.join("a.png"))
        .unwrap();
    image::GrayImage::from_fn(40, 70, |x, y| image::Luma([(x + y) as u8]))
        .save(imgs.join("b.png"))
        .unwrap();
    let out = dir.path().join("out");
    run_ok(yolo().args([
        "detect",
        "--weights",
        weights.to_str().unwrap(),
        "--classes",
        classes.to_str().unwrap(),
        "--anchors",
        anchors.to_str().unwrap(),
        "--tiny",
        "--input-size",
        "64",
        "--score",
        "0",
        "--max-boxes",
        "2",
        "--batch-size",
        "2",
        imgs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let a = image::open(out.join("a.png")).unwrap();
    assert_eq!((a.width(), a.height()), (80, 50));
    let b = image::open(out.join("b.png")).unwrap();
    assert_eq!((b.width(), b.height()), (40, 70));
    let res = read_json(&out.join("detections.json"));
    let res = res.as_array().unwrap();
    // Score threshold 0: every class keeps its 2 best boxes in each image.
    assert_eq!(res.len(), 2 * 2 * 2);
    for r in res {
        assert!(r["image_id"].as_str().unwrap().ends_with(".png"));
        assert!(r["category_id"].as_i64().unwrap() < 2);
        assert_eq!(r["bbox"].as_array().unwrap().len(), 4);
        assert!(r["score"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn detect_skips_an_unreadable_image_finishes_the_rest_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, classes, anchors) = tiny_model_files(dir.path());
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for name in ["a.png", "c.png"] {
        image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 9]))
            .save(imgs.join(name))
            .unwrap();
    }
    std::fs::write(imgs.join("b.jpg"), b"not a jpeg").unwrap();
    let out = dir.path().join("out");
    let common = |extra: &[&str]| {
        let mut c = yolo();
        c.args([
            "detect",
            "--weights",
            weights.to_str().unwrap(),
            "--classes",
            classes.to_str().unwrap(),
            "--anchors",
            anchors.to_str().unwrap(),
            "--tiny",
            "--input-size",
            "64",
        ])
        .args(extra)
        .args([imgs.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        c.output().unwrap()
    };
    let o = common(&["--batch-size", "3"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let bad = imgs.join("b.jpg");
    assert!(
        err.contains(&format!("skipped: {}", bad.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "1 of 3 images could not be read: {}",
            bad.display()
        )),
        "{err}"
    );
    assert!(out.join("a.png").is_file() && out.join("c.png").is_file());
    assert!(!out.join("b.png").exists());
    assert!(out.join("detections.json").is_file());

    for (flag, value, why) in [
        ("--batch-size", "0", "0 is not in 1.."),
        ("--score", "5", "5 is not in [0, 1]"),
        ("--iou", "1.5", "1.5 is not in [0, 1]"),
    ] {
        let o = common(&[flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag}")) && err.contains(why),
            "{err}"
        );
    }
}

#[test]
fn eval_run_uses_the_validation_split_and_latest_weights_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, classes, _) = tiny_model_files(dir.path());
    let img = dir.path().join("x.png");
    image::RgbImage::new(64, 64).save(&img).unwrap();
    let ann = dir.path().join("all.txt");
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&format!("{} {},5,40,30,{}\n", img.display(), i + 1, i % 2));
    }
    std::fs::write(&ann, text).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::copy(&weights, run.join("last.safetensors")).unwrap();
    let cfg = yolo_train::TrainConfig {
        annotations: ann.clone(),
        classes,
        anchors: None,
        variant: yolo_model::Variant::Tiny,
        input: [64, 64],
        val_split: 0.5,
        run_dir: run.clone(),
        ..Default::default()
    };
    let mut state = yolo_train::RunState::new(cfg, yolo_train::PhaseKind::Frozen);
    state.weights = Some("last.safetensors".into());
    state.save(&run).unwrap();
    let json_path = dir.path().join("r.json");
    let stdout = run_ok(yolo().args([
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("last.safetensors on 2 validation images"),
        "{stdout}"
    );
    let r = read_json(&json_path);
    assert_eq!(r["coco"]["stats"].as_array().unwrap().len(), 12);
    // A run without weights is refused with a clear message.
    state.weights = None;
    state.save(&run).unwrap();
    let out = yolo()
        .args(["eval", "--run", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no weights yet"));
}

#[test]
fn detect_run_takes_classes_anchors_input_and_weights_from_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, classes, _) = tiny_model_files(dir.path());
    let img = dir.path().join("x.png");
    image::RgbImage::new(80, 48).save(&img).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let cfg = yolo_train::TrainConfig {
        annotations: dir.path().join("unused.txt"),
        classes: classes.clone(),
        anchors: None,
        variant: yolo_model::Variant::Tiny,
        input: [64, 96],
        run_dir: run.clone(),
        ..Default::default()
    };
    let mut state = yolo_train::RunState::new(cfg, yolo_train::PhaseKind::Frozen);
    state.completed = vec![yolo_train::PhaseKind::Frozen];
    std::fs::copy(&weights, run.join("trained_weights_stage_1.safetensors")).unwrap();
    state.save(&run).unwrap();
    let out = dir.path().join("out");
    let detect = |out: &Path| {
        run_ok(yolo().args([
            "detect",
            "--run",
            run.to_str().unwrap(),
            img.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let stdout = detect(&out);
    for line in [
        format!(
            "model: tiny YOLOv3 (safetensors), 2 classes, from {}",
            run.join("trained_weights_stage_1.safetensors").display()
        ),
        "  variant: the run's config.toml (variant = \"tiny\")".to_string(),
        format!("  classes: the run's classes file {}", classes.display()),
        "  anchors: 10,14,  23,27,  37,58,  81,82,  135,169,  344,319 from keras-yolo3's \
         tiny_yolo_anchors.txt (built in)"
            .to_string(),
        "  input: 96x64 from the run's config.toml".to_string(),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in\n{stdout}");
    }
    assert!(out.join("detections.json").is_file());
    // A best model, when the run has one, wins over the phase's weights.
    std::fs::copy(&weights, run.join("best.safetensors")).unwrap();
    let stdout = detect(&dir.path().join("out2"));
    assert!(
        stdout.contains(&format!("from {}", run.join("best.safetensors").display())),
        "{stdout}"
    );
}
