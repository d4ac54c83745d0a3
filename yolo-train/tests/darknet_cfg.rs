//! Training with a darknet `.cfg`: its `mask=` lines decide which layer and anchor slot each box
//! is assigned to, which anchors the loss compares each layer with, and how `detect --run`
//! decodes the trained model afterwards.

mod common;

use common::{config, synth};
use yolo_data::Anchors;
use yolo_model::{darknet_cfg::darknet_cfg, Variant, YoloConfig};
use yolo_train::{Dataset, ModelRequest, ModelSource, Trainer};

/// darknet's `yolov3-tiny.cfg` layout with `classes` classes: the stride-16 layer uses anchors
/// 0,1,2 where keras-yolo3 uses 1,2,3.
fn tiny_cfg(dir: &std::path::Path, classes: usize) -> std::path::PathBuf {
    let text = darknet_cfg(&YoloConfig::new(Variant::Tiny, classes));
    assert!(
        text.contains("mask=1,2,3"),
        "the generated cfg has keras-yolo3's mask"
    );
    let p = dir.join("yolov3-tiny.cfg");
    std::fs::write(&p, text.replace("mask=1,2,3", "mask=0,1,2")).unwrap();
    p
}

#[test]
fn the_cfg_masks_reach_the_boxes_and_the_loss_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8, 64, 64);
    let mut cfg = config(dir.path());
    cfg.darknet_cfg = Some(tiny_cfg(dir.path(), 80));
    let darknet = vec![vec![3, 4, 5], vec![0, 1, 2]];

    let data = Dataset::load(&cfg).unwrap();
    assert_eq!(data.anchors.masks(), darknet);
    // The anchors file still wins over the cfg's anchors=.
    assert_eq!(data.anchors.wh[0], [4.0, 5.0]);
    let loss = data.loss_config(&cfg);
    assert_eq!(loss.masks, Some(vec![[3, 4, 5], [0, 1, 2]]));
    let summary = data.summary();
    for want in [
        "anchors from",
        "anchors.txt",
        "masks from",
        "yolov3-tiny.cfg (mask=): [[3, 4, 5], [0, 1, 2]]",
        "its classes=80 is overridden by the classes file's 2",
    ] {
        assert!(summary.contains(want), "{want:?} in {summary}");
    }

    // Without an anchors file the cfg's anchors (keras-yolo3's tiny defaults in this file).
    cfg.anchors = None;
    let data = Dataset::load(&cfg).unwrap();
    assert_eq!(data.anchors.wh, Anchors::tiny_default().wh);
    assert!(data.summary().contains("yolov3-tiny.cfg (anchors=)"));

    // Without a cfg: keras-yolo3's masks, and the loss gets no masks of its own.
    cfg.darknet_cfg = None;
    let data = Dataset::load(&cfg).unwrap();
    assert_eq!(data.anchors.masks(), vec![vec![3, 4, 5], vec![1, 2, 3]]);
    assert_eq!(data.loss_config(&cfg).masks, None);
    assert!(data.summary().contains("masks: keras-yolo3's anchor_mask"));
}

#[test]
fn a_cfg_of_the_other_variant_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8, 64, 64);
    let mut cfg = config(dir.path());
    cfg.darknet_cfg = Some(tiny_cfg(dir.path(), 2));
    cfg.variant = yolo_model::Variant::YoloV3;
    cfg.anchors = None;
    let e = Dataset::load(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("yolov3-tiny.cfg")
            && e.contains("its 2 [yolo] sections describe tiny YOLOv3, but the run trains YOLOv3"),
        "{e}"
    );
}

#[test]
fn a_run_trained_with_a_cfg_decodes_with_its_masks() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8, 64, 64);
    let mut cfg = config(dir.path());
    cfg.darknet_cfg = Some(tiny_cfg(dir.path(), 2));
    cfg.bottleneck.enabled = false;
    cfg.unfreeze.enabled = false;
    cfg.frozen.epochs = 1;
    cfg.frozen.batch_size = 2;
    let run = cfg.run_dir.clone();
    let lines = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let sink = lines.clone();
    let mut trainer =
        Trainer::new(cfg, move |m: &str| sink.borrow_mut().push(m.to_string())).unwrap();
    trainer.run().unwrap();
    let log = lines.borrow();
    assert!(
        log.iter()
            .any(|l| l.contains("masks from") && l.contains("[[3, 4, 5], [0, 1, 2]]")),
        "{log:?}"
    );

    let src = ModelSource::resolve(&ModelRequest {
        run: Some(run),
        ..ModelRequest::default()
    })
    .unwrap();
    assert_eq!(src.masks, vec![vec![3, 4, 5], vec![0, 1, 2]]);
    assert!(
        src.origins.masks.contains("yolov3-tiny.cfg (mask=)"),
        "{}",
        src.origins.masks
    );
    // The run's anchors file, not the cfg's anchors=.
    assert_eq!(src.anchors.wh[0], [4.0, 5.0]);
}
