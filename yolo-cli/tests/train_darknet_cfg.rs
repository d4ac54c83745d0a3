//! `yolo train --cfg yolov3-tiny.cfg --weights yolov3-tiny.weights`: a darknet user's fine-tune.
//! The cfg's masks (stride-16 layer: anchors 0,1,2) are what the run trains with, the log says
//! so, and `yolo detect --run` decodes the trained model with the same masks and anchors.

mod common;

use common::{raccoon_subset, s, yolo};
use yolo_testutil::shared_path;

#[test]
#[cfg_attr(
    any(
        shared_missing = "models/yolov3-tiny",
        shared_missing = "datasets/raccoon"
    ),
    ignore = "needs ../shared/models/yolov3-tiny and datasets/raccoon"
)]
fn train_with_the_darknet_cfg_uses_and_keeps_its_masks() {
    let (Some(model), Some(raccoon)) = (
        shared_path("models/yolov3-tiny"),
        shared_path("datasets/raccoon"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (sub, text) = raccoon_subset(&raccoon, dir.path(), 12);
    let cfg = model.join("yolov3-tiny.cfg");
    let run = dir.path().join("run");
    let out = yolo(&[
        "train",
        "--annotations",
        s(&sub),
        "--classes",
        s(&dir.path().join("classes.txt")),
        "--weights",
        s(&model.join("yolov3-tiny.weights")),
        "--cfg",
        s(&cfg),
        "--input-size",
        "128",
        "--out",
        s(&run),
        "--quiet",
        "--skip",
        "bottleneck",
        "--skip",
        "unfreeze",
        "--epochs",
        "frozen=1",
        "--set",
        "val_split=0.25",
    ]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let masks = format!(
        "masks from {} (mask=): [[3, 4, 5], [0, 1, 2]]",
        cfg.display()
    );
    for want in [
        masks.as_str(),
        "its classes=80 is overridden by the classes file's 1",
    ] {
        assert!(log.contains(want), "{want:?} not in\n{log}");
    }
    let toml = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(toml.contains("darknet_cfg = "), "{toml}");
    assert!(toml.contains("variant = \"tiny\""), "{toml}");

    let img = text.lines().next().unwrap().split(' ').next().unwrap();
    let out = yolo(&[
        "detect",
        "--run",
        s(&run),
        img,
        "--out",
        s(&dir.path().join("det")),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        format!(
            "  masks: {} (mask=): [[3, 4, 5], [0, 1, 2]]",
            cfg.display()
        ),
        format!(
            "  anchors: 10,14,  23,27,  37,58,  81,82,  135,169,  344,319 from the run's darknet cfg {} (anchors=)",
            cfg.display()
        ),
        "  input: 128x128 from the run's config.toml".to_string(),
    ] {
        assert!(stdout.contains(&want), "{want:?} not in\n{stdout}");
    }
}
