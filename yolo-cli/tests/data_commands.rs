//! `yolo synth`, `yolo voc2txt`, `yolo coco2txt`, `yolo anchors` and `yolo convert` run as the
//! built binary.

mod common;

use common::yolo;
use std::path::Path;

use yolo_testutil::{read_tensors, shared_path};

fn ok(args: &[&str]) -> String {
    let out = yolo(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "yolo {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fails(args: &[&str]) -> String {
    let out = yolo(args);
    assert!(!out.status.success(), "yolo {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The "Average IoU: 80.13%" line as a fraction.
fn printed_iou(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("average IoU: "))
        .unwrap_or_else(|| panic!("no average IoU in {stdout}"));
    line.trim_end_matches('%').parse::<f64>().unwrap() / 100.0
}

#[test]
fn help_texts() {
    for (cmd, text) in [
        ("synth", "hue range"),
        ("voc2txt", "difficult"),
        ("coco2txt", "iscrowd"),
        ("anchors", "1 - IoU"),
    ] {
        let out = ok(&[cmd, "--help"]);
        assert!(out.contains(text), "{cmd} --help lacks `{text}`:\n{out}");
    }
}

#[test]
fn synth_writes_a_deterministic_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        let out = ok(&[
            "synth",
            "--out",
            s(d),
            "--count",
            "6",
            "--size",
            "96",
            "--seed",
            "3",
        ]);
        assert!(out.starts_with("wrote 6 images, "), "{out}");
    }
    let anns_a = yolo_data::read_annotations(&a.join("annotations.txt")).unwrap();
    let anns_b = yolo_data::read_annotations(&b.join("annotations.txt")).unwrap();
    assert_eq!(anns_a.len(), 6);
    assert_eq!(
        yolo_data::read_classes(&a.join("classes.txt")).unwrap(),
        vec!["circle", "square", "triangle"]
    );
    for (x, y) in anns_a.iter().zip(&anns_b) {
        assert_eq!(x.boxes, y.boxes);
        assert!(!x.boxes.is_empty());
        assert!(x.boxes.iter().all(|b| b.x_max <= 96.0 && b.y_max <= 96.0));
        assert_eq!(
            std::fs::read(&x.path).unwrap(),
            std::fs::read(&y.path).unwrap()
        );
        let img = image::open(&x.path).unwrap();
        assert_eq!((img.width(), img.height()), (96, 96));
    }
    let e = fails(&["synth", "--out", s(&a), "--classes", "circle,hexagon"]);
    assert!(e.contains("unknown shape `hexagon`"), "{e}");
}

#[test]
#[cfg_attr(
    shared_missing = "datasets/raccoon",
    ignore = "needs shared/datasets/raccoon (absent)"
)]
fn voc2txt_then_anchors_on_raccoon() {
    let Some(root) = shared_path("datasets/raccoon") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("raccoon.txt");
    let out = ok(&["voc2txt", s(&root), "--out", s(&txt)]);
    assert!(out.starts_with("wrote 200 lines, 217 boxes to "), "{out}");
    let anns = yolo_data::read_annotations(&txt).unwrap();
    assert_eq!(anns.len(), 200);
    assert_eq!(anns.iter().map(|a| a.boxes.len()).sum::<usize>(), 217);
    assert_eq!(
        yolo_data::read_classes(&dir.path().join("classes.txt")).unwrap(),
        vec!["raccoon"]
    );

    // k = 9 on original pixels: at least keras-yolo3's best run (79.80 %).
    let anchors = dir.path().join("anchors.txt");
    let out = ok(&[
        "anchors",
        s(&txt),
        "--k",
        "9",
        "--seed",
        "0",
        "--original",
        "--out",
        s(&anchors),
    ]);
    assert!(printed_iou(&out) >= 0.798, "{out}");
    let a = yolo_data::read_anchors(&anchors).unwrap();
    assert_eq!(a.wh.len(), 9);
    assert!(
        a.wh.windows(2)
            .all(|w| w[0][0] * w[0][1] <= w[1][0] * w[1][1]),
        "sorted by area"
    );

    // k = 6 letterboxed to 416: at least keras-yolo3's best letterboxed k = 6 run (81.27 %).
    let out = ok(&[
        "anchors",
        s(&txt),
        "-k",
        "6",
        "--input-size",
        "416",
        "--out",
        s(&anchors),
    ]);
    assert!(printed_iou(&out) >= 0.8127, "{out}");
    assert_eq!(yolo_data::read_anchors(&anchors).unwrap().wh.len(), 6);
}

#[test]
fn coco2txt_converts_a_small_file() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("instances.json");
    std::fs::write(
        &json,
        r#"{"images": [{"id": 3, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],
            "annotations": [
              {"id": 1, "image_id": 1, "category_id": 5, "bbox": [1.9, 2, 10.5, 20], "iscrowd": 0},
              {"id": 2, "image_id": 3, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},
              {"id": 3, "image_id": 3, "category_id": 2, "bbox": [7, 8, 9, 10], "iscrowd": 0}],
            "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "bird"}]}"#,
    )
    .unwrap();
    let txt = dir.path().join("coco.txt");
    let classes = dir.path().join("names.txt");
    let out = ok(&[
        "coco2txt",
        s(&json),
        "--images-dir",
        "imgs",
        "--out",
        s(&txt),
        "--classes-out",
        s(&classes),
    ]);
    assert!(out.contains("wrote 2 lines, 2 boxes"), "{out}");
    assert!(out.contains("skipped 1 crowd regions"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&txt).unwrap(),
        "imgs/a.jpg 7,8,16,18,0\nimgs/b.jpg 1,2,11,22,1\n"
    );
    assert_eq!(std::fs::read_to_string(&classes).unwrap(), "bird\ncat\n");
}

#[test]
fn errors_name_file_line_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("bad.txt");
    std::fs::write(&txt, "a.jpg 1,2,3,4,0\nb.jpg 3,4,x,9,0\n").unwrap();
    let e = fails(&["anchors", s(&txt)]);
    assert!(
        e.contains(&format!(
            "{}:2: bad box token `3,4,x,9,0`: `x` is not a number",
            txt.display()
        )),
        "{e}"
    );

    let voc = dir.path().join("voc");
    std::fs::create_dir(&voc).unwrap();
    std::fs::write(
        voc.join("1.xml"),
        "<annotation><object><name>x</name></object></annotation>",
    )
    .unwrap();
    let e = fails(&["voc2txt", s(&voc), "--out", s(&dir.path().join("o.txt"))]);
    assert!(
        e.contains(&format!(
            "{}: object 1 (`x`) has no <bndbox>",
            voc.join("1.xml").display()
        )),
        "{e}"
    );
}

/// `yolo`'s whole stderr for a failed conversion: anyhow's context line, then the cause.
fn convert_error(input: &str, output: &str, cause: &str) -> String {
    format!("Error: converting {input} -> {output}\n\nCaused by:\n    {cause}\n")
}

#[test]
#[cfg_attr(
    shared_missing = "models/yolov3-tiny",
    ignore = "needs ../shared/models/yolov3-tiny"
)]
fn convert_round_trips_the_real_80_class_tiny_weights() {
    let Some(dir) = shared_path("models/yolov3-tiny") else {
        return;
    };
    let weights = dir.join("yolov3-tiny.weights");
    let w = s(&weights);
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("out.safetensors");

    // Without --num-classes the class count is read from the file's size: 80 (COCO).
    let out = yolo(&["convert", w, s(&st), "--tiny"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("wrote {}\n", st.display()));
    assert_eq!(
        stderr,
        format!(
            "{w}: 80 classes (read from the file); loaded 59 variables, skipped 0 (shape \
             mismatch), 0 missing, 0 unexpected\n"
        )
    );
    // Both output convs have 3 * (80 + 5) = 255 filters.
    let tensors = read_tensors(&st);
    assert_eq!(tensors.len(), 59);
    for (name, shape) in [
        ("head.out0.bias", vec![255]),
        ("head.out0.weight", vec![255, 512, 1, 1]),
        ("head.out1.bias", vec![255]),
        ("head.out1.weight", vec![255, 256, 1, 1]),
    ] {
        assert_eq!(tensors[name].shape, shape, "{name}");
    }

    // Back to darknet: same size, same version fields and all 8,858,734 floats byte for byte;
    // only the header's `seen` (int64 at bytes 12..20, 32,013,312 in the original) is written as
    // 0, since a safetensors checkpoint does not carry it.
    let back = tmp.path().join("back.weights");
    ok(&["convert", s(&st), s(&back), "--tiny"]);
    let (orig, round) = (
        std::fs::read(&weights).unwrap(),
        std::fs::read(&back).unwrap(),
    );
    assert_eq!(orig.len(), 35_434_956);
    assert_eq!(round.len(), orig.len());
    assert_eq!(round[..12], orig[..12], "major, minor, revision");
    assert_eq!(
        i64::from_le_bytes(orig[12..20].try_into().unwrap()),
        32_013_312
    );
    assert_eq!(i64::from_le_bytes(round[12..20].try_into().unwrap()), 0);
    assert!(
        round[20..] == orig[20..],
        "the floats differ after the round trip"
    );

    // A class count that disagrees with the file is an error, and nothing is written.
    let one = tmp.path().join("one.safetensors");
    let e = fails(&["convert", w, s(&one), "--tiny", "--num-classes", "1"]);
    assert_eq!(
        e,
        convert_error(
            w,
            s(&one),
            &format!(
                "{w}: the file holds a model with 80 classes, but --num-classes gives 1 class"
            )
        )
    );
    assert!(!one.exists());

    // Without --tiny the file's size is recognised as the other variant's.
    let e = fails(&["convert", w, s(&one)]);
    assert_eq!(
        e,
        convert_error(
            w,
            s(&one),
            &format!(
                "{w}: 8858734 floats after the header: the size of a full tiny YOLOv3 file with \
                 80 classes, not of a YOLOv3 one; pass --tiny"
            )
        )
    );
    assert!(!one.exists());
}

#[test]
fn convert_rejects_an_unsupported_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.weights"), tmp.path().join("b.onnx"));
    let e = fails(&["convert", s(&a), s(&b)]);
    assert_eq!(
        e,
        convert_error(
            s(&a),
            s(&b),
            &format!(
                "{}: unsupported extension `.onnx`: yolo convert reads and writes .weights \
                 (darknet) and .safetensors files",
                b.display()
            )
        )
    );
}

#[test]
#[cfg_attr(
    shared_missing = "models/yolov3-tiny",
    ignore = "needs ../shared/models/yolov3-tiny"
)]
fn convert_takes_the_darknet_cfg_and_a_run_folder() {
    let Some(dir) = shared_path("models/yolov3-tiny") else {
        return;
    };
    let weights = dir.join("yolov3-tiny.weights");
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("m.safetensors");
    // The cfg gives the variant (no --tiny) and the class count, checked against the file.
    let out = yolo(&[
        "convert",
        s(&weights),
        s(&st),
        "--cfg",
        s(&dir.join("yolov3-tiny.cfg")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(": 80 classes (as given); loaded 59 variables"),
        "{stderr}"
    );
    // A run folder converts its best model; the variant comes from the run.
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let cfg = yolo_train::TrainConfig {
        variant: yolo_model::Variant::Tiny,
        run_dir: run.clone(),
        ..Default::default()
    };
    yolo_train::RunState::new(cfg, yolo_train::PhaseKind::Frozen)
        .save(&run)
        .unwrap();
    std::fs::copy(&st, run.join("best.safetensors")).unwrap();
    let back = tmp.path().join("back.weights");
    let out = yolo(&["convert", s(&run), s(&back)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&back).unwrap().len(),
        std::fs::metadata(&weights).unwrap().len()
    );
}
