//! PASCAL VOC average precision at IoU 0.5, as `voc_eval()` of the Fast/Faster R-CNN ports of the
//! VOC devkit computes it: all-point AP (VOC2010+) and 11-point AP (VOC2007).
//!
//! Conventions (see `fixtures/map/README.md`): boxes are inclusive pixel indices, so widths get
//! `+1`; a detection is judged only against the ground-truth box it overlaps most (first on ties,
//! difficult and already-matched boxes included); the match needs IoU strictly above the threshold;
//! a best match on a difficult object is ignored (neither TP nor FP); a second hit on a matched
//! object is a false positive. Detections are ranked by a stable sort on descending score.

use std::collections::HashMap;

use serde::Serialize;

use crate::dataset::{order_by_descending_score, EvalSet};

/// `numpy.finfo(float64).eps`, the guard of the precision's denominator in `voc_eval`.
const EPS: f64 = f64::EPSILON;

/// The per-class outcome of [`voc_evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VocClassResult {
    /// Class index.
    pub class_id: usize,
    /// Number of non-difficult objects.
    pub npos: usize,
    /// Number of difficult objects.
    pub num_difficult: usize,
    /// Number of detections of this class.
    pub num_detections: usize,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// Detections whose best match is a difficult object.
    pub ignored: usize,
    /// All-point AP; `None` when `npos == 0` (the class is left out of the mean).
    pub ap_all_point: Option<f64>,
    /// 11-point AP; `None` when `npos == 0`.
    pub ap_11_point: Option<f64>,
    /// Recall after each detection in ranked order; `None` when `npos == 0`.
    pub recall: Option<Vec<f64>>,
    /// Precision after each detection in ranked order; `None` when `npos == 0`.
    pub precision: Option<Vec<f64>>,
}

/// The outcome of [`voc_evaluate`] over all classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VocResult {
    /// IoU threshold used (a match needs IoU strictly greater).
    pub iou_threshold: f64,
    /// Mean all-point AP over the classes with `npos > 0` (0 when there are none).
    pub map_all_point: f64,
    /// Mean 11-point AP over the same classes.
    pub map_11_point: f64,
    /// Classes included in the means.
    pub map_class_ids: Vec<usize>,
    /// One entry per class of the set, in class order.
    pub per_class: Vec<VocClassResult>,
}

/// IoU with VOC's inclusive-pixel convention, in `voc_eval`'s order of operations.
/// Boxes are `[x_min, y_min, x_max, y_max]`.
pub fn voc_iou(det: &[f64; 4], gt: &[f64; 4]) -> f64 {
    let ixmin = gt[0].max(det[0]);
    let iymin = gt[1].max(det[1]);
    let ixmax = gt[2].min(det[2]);
    let iymax = gt[3].min(det[3]);
    let iw = (ixmax - ixmin + 1.0).max(0.0);
    let ih = (iymax - iymin + 1.0).max(0.0);
    let inters = iw * ih;
    let uni = (det[2] - det[0] + 1.0) * (det[3] - det[1] + 1.0)
        + (gt[2] - gt[0] + 1.0) * (gt[3] - gt[1] + 1.0)
        - inters;
    inters / uni
}

/// All-point interpolated AP (`voc_ap(rec, prec, use_07_metric=False)`).
pub fn voc_ap_all_point(rec: &[f64], prec: &[f64]) -> f64 {
    let mut mrec = Vec::with_capacity(rec.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(rec);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(prec.len() + 2);
    mpre.push(0.0);
    mpre.extend_from_slice(prec);
    mpre.push(0.0);
    for i in (1..mpre.len()).rev() {
        mpre[i - 1] = mpre[i - 1].max(mpre[i]);
    }
    (0..mrec.len() - 1)
        .filter(|&i| mrec[i + 1] != mrec[i])
        .map(|i| (mrec[i + 1] - mrec[i]) * mpre[i + 1])
        .sum()
}

/// VOC2007 11-point AP (`voc_ap(rec, prec, use_07_metric=True)`). The thresholds are
/// `k * 0.1` in float64 as `numpy.arange(0., 1.1, 0.1)` makes them, so a recall of exactly 0.3
/// does not reach the threshold `0.30000000000000004`.
pub fn voc_ap_11_point(rec: &[f64], prec: &[f64]) -> f64 {
    let mut ap = 0.0;
    for k in 0..11 {
        let t = k as f64 * 0.1;
        let p = rec
            .iter()
            .zip(prec)
            .filter(|(r, _)| **r >= t)
            .map(|(_, p)| *p)
            .fold(None, |acc: Option<f64>, p| {
                Some(acc.map_or(p, |a| a.max(p)))
            })
            .unwrap_or(0.0);
        ap += p / 11.0;
    }
    ap
}

/// Evaluates `set` the way `voc_eval` does, for every class of `set.classes` (and any larger
/// class id that occurs in the data), at IoU threshold `iou_threshold` (VOC uses 0.5).
pub fn voc_evaluate(set: &EvalSet, iou_threshold: f64) -> VocResult {
    let num_classes = set.num_classes();
    let mut per_class = Vec::with_capacity(num_classes);
    for class_id in 0..num_classes {
        per_class.push(voc_evaluate_class(set, class_id, iou_threshold));
    }
    let map_class_ids: Vec<usize> = per_class
        .iter()
        .filter(|c| c.npos > 0)
        .map(|c| c.class_id)
        .collect();
    let mean = |f: fn(&VocClassResult) -> Option<f64>| {
        let v: Vec<f64> = per_class.iter().filter_map(f).collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    VocResult {
        iou_threshold,
        map_all_point: mean(|c| c.ap_all_point),
        map_11_point: mean(|c| c.ap_11_point),
        map_class_ids,
        per_class,
    }
}

fn voc_evaluate_class(set: &EvalSet, class_id: usize, iou_threshold: f64) -> VocClassResult {
    // Ground truth of this class, per image, in input order.
    let mut gts: HashMap<u64, Vec<([f64; 4], bool)>> = HashMap::new();
    let (mut npos, mut num_difficult) = (0, 0);
    for g in set.ground_truth.iter().filter(|g| g.class_id == class_id) {
        gts.entry(g.image_id)
            .or_default()
            .push(([g.x_min, g.y_min, g.x_max, g.y_max], g.difficult));
        if g.difficult {
            num_difficult += 1;
        } else {
            npos += 1;
        }
    }
    let mut matched: HashMap<u64, Vec<bool>> = gts
        .iter()
        .map(|(k, v)| (*k, vec![false; v.len()]))
        .collect();

    let dets: Vec<_> = set
        .detections
        .iter()
        .filter(|d| d.class_id == class_id)
        .collect();
    let scores: Vec<f64> = dets.iter().map(|d| d.score).collect();
    let order = order_by_descending_score(&scores);

    let mut tp = vec![0.0; dets.len()];
    let mut fp = vec![0.0; dets.len()];
    let mut ignored = 0;
    for (rank, &di) in order.iter().enumerate() {
        let d = dets[di];
        let bb = [d.x_min, d.y_min, d.x_max, d.y_max];
        let mut best: Option<(usize, f64)> = None;
        if let Some(boxes) = gts.get(&d.image_id) {
            for (j, (g, _)) in boxes.iter().enumerate() {
                let o = voc_iou(&bb, g);
                // numpy's argmax: the first maximum wins.
                if best.is_none_or(|(_, b)| o > b) {
                    best = Some((j, o));
                }
            }
        }
        match best {
            Some((j, o)) if o > iou_threshold => {
                if gts[&d.image_id][j].1 {
                    ignored += 1;
                } else {
                    let m = matched
                        .get_mut(&d.image_id)
                        .expect("image has ground truth");
                    if m[j] {
                        fp[rank] = 1.0;
                    } else {
                        m[j] = true;
                        tp[rank] = 1.0;
                    }
                }
            }
            _ => fp[rank] = 1.0,
        }
    }
    let n_tp = tp.iter().filter(|v| **v > 0.0).count();
    let n_fp = fp.iter().filter(|v| **v > 0.0).count();

    let (mut rec, mut prec) = (
        Vec::with_capacity(dets.len()),
        Vec::with_capacity(dets.len()),
    );
    let (mut ctp, mut cfp) = (0.0, 0.0);
    for i in 0..dets.len() {
        ctp += tp[i];
        cfp += fp[i];
        rec.push(ctp / npos as f64);
        prec.push(ctp / (ctp + cfp).max(EPS));
    }
    let (ap_all, ap_11, rec, prec) = if npos == 0 {
        (None, None, None, None)
    } else {
        (
            Some(voc_ap_all_point(&rec, &prec)),
            Some(voc_ap_11_point(&rec, &prec)),
            Some(rec),
            Some(prec),
        )
    };
    VocClassResult {
        class_id,
        npos,
        num_difficult,
        num_detections: dets.len(),
        tp: n_tp,
        fp: n_fp,
        ignored,
        ap_all_point: ap_all,
        ap_11_point: ap_11,
        recall: rec,
        precision: prec,
    }
}
