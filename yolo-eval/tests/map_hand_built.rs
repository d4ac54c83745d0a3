//! Hand-built mAP cases whose answers can be worked out on paper.

use yolo_eval::{
    coco_evaluate, voc_evaluate, EvalImage, EvalSet, GroundTruth, MapReport, ScoredBox,
};

fn img(id: u64) -> EvalImage {
    EvalImage {
        id,
        file_name: format!("{id}.jpg"),
        width: 640,
        height: 480,
    }
}

fn det(image_id: u64, class_id: usize, b: [f64; 4], score: f64) -> ScoredBox {
    ScoredBox {
        image_id,
        class_id,
        x_min: b[0],
        y_min: b[1],
        x_max: b[2],
        y_max: b[3],
        score,
    }
}

fn gt(image_id: u64, class_id: usize, b: [f64; 4]) -> GroundTruth {
    GroundTruth::new(image_id, class_id, b[0], b[1], b[2], b[3])
}

const A: [f64; 4] = [10.0, 10.0, 110.0, 210.0];
const B: [f64; 4] = [300.0, 100.0, 400.0, 180.0];

#[test]
fn perfect_detections_give_ap_one() {
    let set = EvalSet {
        classes: vec!["a".into(), "b".into()],
        images: vec![img(1), img(2)],
        ground_truth: vec![gt(1, 0, A), gt(2, 0, B), gt(2, 1, A)],
        detections: vec![det(1, 0, A, 0.9), det(2, 0, B, 0.8), det(2, 1, A, 0.7)],
    };
    let r = MapReport::evaluate(&set);
    assert_eq!(r.voc.map_all_point, 1.0);
    // voc_eval sums p / 11 eleven times: 1.0000000000000002.
    assert!((r.voc.map_11_point - 1.0).abs() < 1e-12);
    // COCO's precision carries eps: 1 / (1 + 2.2e-16) = 0.9999999999999998.
    assert!((r.coco.stats[0] - 1.0).abs() < 1e-12);
    assert_eq!(r.coco.per_class[1].ar100, 1.0);
}

#[test]
fn a_missed_object_halves_recall_and_ap() {
    // Two objects, one found: recall 0.5, precision 1 -> all-point AP 0.5; 11-point: 6/11.
    let set = EvalSet {
        classes: vec!["a".into()],
        images: vec![img(1)],
        ground_truth: vec![gt(1, 0, A), gt(1, 0, B)],
        detections: vec![det(1, 0, A, 0.9)],
    };
    let v = voc_evaluate(&set, 0.5);
    assert_eq!(v.per_class[0].recall.as_deref(), Some(&[0.5][..]));
    assert_eq!(v.map_all_point, 0.5);
    assert!((v.map_11_point - 6.0 / 11.0).abs() < 1e-12);
    let c = coco_evaluate(&set);
    // 51 of the 101 recall points (0.00 .. 0.50) reach precision ~1.
    assert!((c.per_class[0].ap50 - 51.0 / 101.0).abs() < 1e-12);
    assert!((c.per_class[0].ar100 - 0.5).abs() < 1e-12);
}

#[test]
fn a_duplicate_counts_as_false_positive() {
    // Same object detected twice: TP then FP. rec [1, 1], prec [1, 0.5] -> AP 1, but 1 FP.
    let mut dup = A;
    dup[0] += 2.0;
    let set = EvalSet {
        classes: vec!["a".into()],
        images: vec![img(1)],
        ground_truth: vec![gt(1, 0, A)],
        detections: vec![det(1, 0, A, 0.9), det(1, 0, dup, 0.8)],
    };
    let v = voc_evaluate(&set, 0.5);
    let c = &v.per_class[0];
    assert_eq!((c.tp, c.fp), (1, 1));
    assert_eq!(c.precision.as_deref(), Some(&[1.0, 0.5][..]));
    assert_eq!(v.map_all_point, 1.0);
    // Ranked the other way round the duplicate comes first: still TP then FP -> AP 1.
    // With the duplicate scored higher than a second, missed object's box the AP drops.
    let set2 = EvalSet {
        ground_truth: vec![gt(1, 0, A), gt(1, 0, B)],
        detections: vec![det(1, 0, A, 0.9), det(1, 0, dup, 0.8), det(1, 0, B, 0.7)],
        ..set
    };
    let v2 = voc_evaluate(&set2, 0.5);
    // rec [.5, .5, 1], prec [1, .5, 2/3] -> AP = .5 * 1 + .5 * 2/3.
    assert!((v2.map_all_point - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-12);
}

#[test]
fn several_classes_are_averaged_and_empty_classes_left_out() {
    // class 0 perfect, class 1 all wrong (AP 0), class 2 no ground truth and no detections.
    let set = EvalSet {
        classes: vec!["a".into(), "b".into(), "c".into()],
        images: vec![img(1), img(2)],
        ground_truth: vec![gt(1, 0, A), gt(2, 1, B)],
        detections: vec![det(1, 0, A, 0.9), det(2, 1, A, 0.95)],
    };
    let r = MapReport::evaluate(&set);
    assert_eq!(r.voc.map_class_ids, vec![0, 1]);
    assert_eq!(r.voc.per_class[1].ap_all_point, Some(0.0));
    assert_eq!(r.voc.per_class[2].ap_all_point, None);
    assert_eq!(r.voc.map_all_point, 0.5);
    assert_eq!(r.coco.per_class[2].ap, -1.0);
    assert!((r.coco.stats[1] - 0.5).abs() < 1e-12);
    let j = r.to_json();
    assert_eq!(j["voc"]["map"], 0.5);
    assert!(j["voc"]["ap"]["c"].is_null());
    assert_eq!(j["coco"]["ap"]["c"], -1.0);
    assert_eq!(j["coco"]["stats"].as_array().unwrap().len(), 12);
    let table = r.table(false);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("1.0000")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("mAP") && l.contains("0.5000")),
        "{table}"
    );
}

#[test]
fn voc_uses_plus_one_pixel_iou_and_coco_continuous() {
    // GT 0..9 (10 px incl.), detection 5..14: VOC IoU = 5*10 / (100+100-50) = 1/3 (x only overlap)
    let g = [0.0, 0.0, 9.0, 9.0];
    let d = [0.0, 0.0, 9.0, 4.0];
    // VOC: inter = 10*5 = 50, union = 100 + 50 - 50 = 100 -> 0.5, not > 0.5 -> FP.
    assert_eq!(yolo_eval::voc::voc_iou(&d, &g), 0.5);
    // COCO: [0,0,9,9] vs [0,0,9,4] -> 36 / 81 < 0.5.
    let c = yolo_eval::coco::coco_iou(&[0.0, 0.0, 9.0, 4.0], &[0.0, 0.0, 9.0, 9.0], false);
    assert!((c - 36.0 / 81.0).abs() < 1e-15);
}
