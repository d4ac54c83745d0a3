//! keras-yolo3 `kmeans.py` on the raccoon boxes (fixture `kmeans/kmeans_raccoon.json`): started from
//! the fixture's `init_indices`, clusters and iteration counts must match exactly and the average
//! IoU to 1e-9; the crate's own seeded start must reach keras-yolo3's best run (79.8 % for k = 9).

use yolo_data::{kmeans_anchors, kmeans_from_indices};
use yolo_testutil::{keras_fixture, read_json};

fn wh(v: &serde_json::Value) -> Vec<[i64; 2]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_i64().unwrap(), p[1].as_i64().unwrap()])
        .collect()
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn kmeans_py_runs_reproduced_exactly_from_init_indices() {
    let Some(p) = keras_fixture("kmeans/kmeans_raccoon.json") else {
        return;
    };
    let d = read_json(&p);
    let mut checked = 0;
    for variant in ["original_pixels", "letterboxed_416x416"] {
        let v = &d["variants"][variant];
        let boxes = wh(&v["box_wh"]);
        assert_eq!(boxes.len(), 217);
        for run in v["runs"].as_array().unwrap() {
            let init: Vec<usize> = run["init_indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as usize)
                .collect();
            let r = kmeans_from_indices(&boxes, &init).unwrap();
            let what = format!("{variant} k={} seed={}", run["k"], run["seed"]);
            assert_eq!(r.clusters, wh(&run["clusters_sorted_by_width"]), "{what}");
            assert_eq!(
                r.iterations as u64,
                run["assignment_iterations"].as_u64().unwrap(),
                "{what}"
            );
            let want = run["avg_iou"].as_f64().unwrap();
            assert!(
                (r.avg_iou - want).abs() < 1e-9,
                "{what}: {} vs {want}",
                r.avg_iou
            );
            assert_eq!(
                format!("{:.2}%", r.avg_iou * 100.0),
                run["accuracy_printed"].as_str().unwrap(),
                "{what}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn own_seeded_start_reaches_keras_best_run() {
    let Some(p) = keras_fixture("kmeans/kmeans_raccoon.json") else {
        return;
    };
    let d = read_json(&p);
    let v = &d["variants"]["original_pixels"];
    let boxes = wh(&v["box_wh"]);
    let keras_best = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["k"] == 9)
        .map(|r| r["avg_iou"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(keras_best > 0.7979, "{keras_best}");
    for seed in [0u64, 1, 2] {
        let r = kmeans_anchors(&boxes, 9, seed).unwrap();
        eprintln!("seed {seed}: k=9 avg IoU {:.4}%", r.avg_iou * 100.0);
        assert!(
            r.avg_iou >= keras_best,
            "seed {seed}: {} < {keras_best}",
            r.avg_iou
        );
        assert!(r.avg_iou >= 0.798);
        assert_eq!(r, kmeans_anchors(&boxes, 9, seed).unwrap(), "deterministic");
    }
    let keras_best6 = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["k"] == 6)
        .map(|r| r["avg_iou"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let r6 = kmeans_anchors(&boxes, 6, 0).unwrap();
    eprintln!("seed 0: k=6 avg IoU {:.4}%", r6.avg_iou * 100.0);
    assert!(r6.avg_iou >= keras_best6, "{} < {keras_best6}", r6.avg_iou);
}
