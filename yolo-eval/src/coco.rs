//! COCO mean average precision for boxes, as pycocotools' `COCOeval(iouType="bbox")` computes it
//! with default parameters: IoU thresholds 0.50:0.05:0.95, 101 recall points, area ranges
//! all/small/medium/large, maxDets 1/10/100, and the 12 summary statistics.
//!
//! Conventions (see `fixtures/map/README.md`): boxes are continuous (`w = x_max - x_min`, no +1);
//! a crowd region's IoU divides by the detection's own area and it can absorb any number of
//! detections; crowd and out-of-range objects are ignored and only catch detections that matched
//! nothing else; per image and class only the 100 best detections count; both sorts are stable, so
//! ties are broken by ascending image id and then by input order.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::dataset::{order_by_descending_score, EvalSet};

/// `numpy.linspace(.5, .95, 10)`, bit for bit (0.5 + 0.05 k would give 0.8500000000000001).
pub const IOU_THRESHOLDS: [f64; 10] = [
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.8999999999999999,
    0.95,
];

/// Area ranges `[all, small, medium, large]`, closed at both ends.
pub const AREA_RANGES: [[f64; 2]; 4] =
    [[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]];

/// The maxDets values of COCOeval.
pub const MAX_DETS: [usize; 3] = [1, 10, 100];

/// Names of the 12 entries of [`CocoResult::stats`].
pub const STATS_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// `numpy.linspace(0, 1, 101)`: `i * 0.01` in float64 (ten values one ulp above `i / 100`), with
/// the last one exactly 1.
pub fn recall_thresholds() -> [f64; 101] {
    let mut r = [0.0; 101];
    for (i, v) in r.iter_mut().enumerate() {
        *v = i as f64 * 0.01;
    }
    r[100] = 1.0;
    r
}

/// Per-class COCO figures. `-1` means "no ground truth" (in that size range), as in COCOeval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoClassResult {
    /// Class index.
    pub class_id: usize,
    /// Number of non-crowd objects.
    pub num_gt: usize,
    /// Number of crowd regions.
    pub num_crowd: usize,
    /// Number of detections of this class.
    pub num_detections: usize,
    /// AP averaged over the 10 IoU thresholds (area all, maxDets 100).
    pub ap: f64,
    /// AP at IoU 0.5.
    pub ap50: f64,
    /// AP at IoU 0.75.
    pub ap75: f64,
    /// AP on small objects.
    pub ap_small: f64,
    /// AP on medium objects.
    pub ap_medium: f64,
    /// AP on large objects.
    pub ap_large: f64,
    /// Recall averaged over IoU thresholds with 1 detection per image.
    pub ar1: f64,
    /// ... with 10 detections per image.
    pub ar10: f64,
    /// ... with 100 detections per image.
    pub ar100: f64,
    /// AP at each of the 10 IoU thresholds.
    pub ap_per_iou_threshold: Vec<f64>,
}

/// The outcome of [`coco_evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoResult {
    /// `COCOeval.stats`, named by [`STATS_NAMES`]; `-1` where nothing had ground truth.
    pub stats: [f64; 12],
    /// One entry per class of the set, in class order.
    pub per_class: Vec<CocoClassResult>,
}

/// COCOeval's `evaluateImg` outcome for one image, class and area range.
struct ImgEval {
    /// Scores of the kept detections (best first, at most 100).
    dt_scores: Vec<f64>,
    /// `[t][d]`: matched at IoU threshold t.
    dt_matched: Vec<Vec<bool>>,
    /// `[t][d]`: ignored at IoU threshold t.
    dt_ignore: Vec<Vec<bool>>,
    /// Ignore flag per ground-truth object.
    gt_ignore: Vec<bool>,
}

/// Precision at the 101 recall thresholds per IoU threshold; `None` is COCOeval's -1.
type Precision = Option<Vec<[f64; 101]>>;
/// Final recall per IoU threshold; `None` is COCOeval's -1.
type Recall = Option<Vec<f64>>;

/// `[x, y, w, h]` box as pycocotools keeps it.
type Xywh = [f64; 4];

/// pycocotools' `bbIou` for one pair: crowd boxes divide by the detection's area only.
pub fn coco_iou(dt: &Xywh, gt: &Xywh, gt_is_crowd: bool) -> f64 {
    let w = (dt[0] + dt[2]).min(gt[0] + gt[2]) - dt[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dt[1] + dt[3]).min(gt[1] + gt[3]) - dt[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = dt[2] * dt[3];
    let u = if gt_is_crowd {
        da
    } else {
        da + gt[2] * gt[3] - i
    };
    i / u
}

struct Gt {
    bbox: Xywh,
    area: f64,
    crowd: bool,
}

struct Dt {
    bbox: Xywh,
    area: f64,
    score: f64,
}

/// Evaluates `set` the way `COCOeval(gt, dt, "bbox")` with default parameters does, for every class
/// of `set.classes` (and any larger class id in the data). Every image of `set.images` takes part;
/// detections on other images are evaluated as if those images were in the set.
pub fn coco_evaluate(set: &EvalSet) -> CocoResult {
    let num_classes = set.num_classes();
    let rec_thrs = recall_thresholds();
    // Image ids in ascending order (COCOeval sorts them).
    let mut img_ids: Vec<u64> = set.images.iter().map(|i| i.id).collect();
    img_ids.extend(set.ground_truth.iter().map(|g| g.image_id));
    img_ids.extend(set.detections.iter().map(|d| d.image_id));
    img_ids.sort_unstable();
    img_ids.dedup();

    // Group by (class, image), keeping input order.
    let mut gts: BTreeMap<(usize, u64), Vec<Gt>> = BTreeMap::new();
    for g in &set.ground_truth {
        gts.entry((g.class_id, g.image_id)).or_default().push(Gt {
            bbox: [g.x_min, g.y_min, g.x_max - g.x_min, g.y_max - g.y_min],
            area: g.coco_area(),
            crowd: g.iscrowd,
        });
    }
    let mut dts: HashMap<(usize, u64), Vec<Dt>> = HashMap::new();
    for d in &set.detections {
        let bbox = [d.x_min, d.y_min, d.x_max - d.x_min, d.y_max - d.y_min];
        dts.entry((d.class_id, d.image_id)).or_default().push(Dt {
            bbox,
            area: bbox[2] * bbox[3],
            score: d.score,
        });
    }

    let t_n = IOU_THRESHOLDS.len();
    // precision[k][a][m][t] -> Vec of 101 (or None = -1); recall[k][a][m][t].
    let mut per_class = Vec::with_capacity(num_classes);
    // For stats: precision and recall arrays indexed [k][a][m][t][r] / [k][a][m][t].
    let mut precision: Vec<Vec<Vec<Precision>>> = Vec::new();
    let mut recall: Vec<Vec<Vec<Recall>>> = Vec::new();
    let empty_g: Vec<Gt> = Vec::new();
    let empty_d: Vec<Dt> = Vec::new();
    for k in 0..num_classes {
        let mut prec_k = Vec::new();
        let mut rec_k = Vec::new();
        // evaluateImg for each image and area range.
        let mut evals: Vec<Vec<Option<ImgEval>>> = Vec::with_capacity(AREA_RANGES.len());
        for range in AREA_RANGES.iter() {
            let mut per_img = Vec::with_capacity(img_ids.len());
            for &img in &img_ids {
                let g = gts.get(&(k, img)).unwrap_or(&empty_g);
                let d = dts.get(&(k, img)).unwrap_or(&empty_d);
                per_img.push(evaluate_img(g, d, *range));
            }
            evals.push(per_img);
        }
        for per_img in &evals {
            let mut prec_a = Vec::new();
            let mut rec_a = Vec::new();
            for &max_det in MAX_DETS.iter() {
                let (p, r) = accumulate(per_img, max_det, t_n, &rec_thrs);
                prec_a.push(p);
                rec_a.push(r);
            }
            prec_k.push(prec_a);
            rec_k.push(rec_a);
        }
        let num_gt = set
            .ground_truth
            .iter()
            .filter(|g| g.class_id == k && !g.iscrowd)
            .count();
        let num_crowd = set
            .ground_truth
            .iter()
            .filter(|g| g.class_id == k && g.iscrowd)
            .count();
        let num_detections = set.detections.iter().filter(|d| d.class_id == k).count();
        let ap_at = |a: usize, t: Option<usize>| -> f64 {
            match &prec_k[a][2] {
                None => -1.0,
                Some(p) => match t {
                    Some(t) => mean(p[t].iter().copied()),
                    None => mean(p.iter().flat_map(|row| row.iter().copied())),
                },
            }
        };
        let ar_at = |m: usize| -> f64 {
            match &rec_k[0][m] {
                None => -1.0,
                Some(r) => mean(r.iter().copied()),
            }
        };
        per_class.push(CocoClassResult {
            class_id: k,
            num_gt,
            num_crowd,
            num_detections,
            ap: ap_at(0, None),
            ap50: ap_at(0, Some(0)),
            ap75: ap_at(0, Some(5)),
            ap_small: ap_at(1, None),
            ap_medium: ap_at(2, None),
            ap_large: ap_at(3, None),
            ar1: ar_at(0),
            ar10: ar_at(1),
            ar100: ar_at(2),
            ap_per_iou_threshold: (0..t_n).map(|t| ap_at(0, Some(t))).collect(),
        });
        precision.push(prec_k);
        recall.push(rec_k);
    }

    // summarize(): means over every entry > -1 (classes without ground truth are left out).
    let ap_stat = |a: usize, t: Option<usize>| -> f64 {
        let vals = precision
            .iter()
            .filter_map(|pk| pk[a][2].as_ref())
            .flat_map(|p| {
                let rows: Vec<&[f64; 101]> = match t {
                    Some(t) => vec![&p[t]],
                    None => p.iter().collect(),
                };
                rows.into_iter()
                    .flat_map(|r| r.iter().copied())
                    .collect::<Vec<_>>()
            });
        mean_or_minus_one(vals)
    };
    let ar_stat = |a: usize, m: usize| -> f64 {
        mean_or_minus_one(
            recall
                .iter()
                .filter_map(|rk| rk[a][m].as_ref())
                .flat_map(|r| r.iter().copied()),
        )
    };
    let stats = [
        ap_stat(0, None),
        ap_stat(0, Some(0)),
        ap_stat(0, Some(5)),
        ap_stat(1, None),
        ap_stat(2, None),
        ap_stat(3, None),
        ar_stat(0, 0),
        ar_stat(0, 1),
        ar_stat(0, 2),
        ar_stat(1, 2),
        ar_stat(2, 2),
        ar_stat(3, 2),
    ];
    CocoResult { stats, per_class }
}

fn mean(vals: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = vals.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        -1.0
    } else {
        s / n as f64
    }
}

fn mean_or_minus_one(vals: impl Iterator<Item = f64>) -> f64 {
    mean(vals.filter(|v| *v > -1.0))
}

/// COCOeval.evaluateImg for one image, one class and one area range; `None` when the image has
/// neither ground truth nor detections of the class.
fn evaluate_img(gts: &[Gt], dts: &[Dt], range: [f64; 2]) -> Option<ImgEval> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let out_of_range = |area: f64| area < range[0] || area > range[1];
    // Ignored objects (crowd or out of range) go last, keeping their relative order.
    let ignore: Vec<bool> = gts
        .iter()
        .map(|g| g.crowd || out_of_range(g.area))
        .collect();
    let mut gt_order: Vec<usize> = (0..gts.len()).collect();
    gt_order.sort_by_key(|&i| ignore[i]);
    let gt_ignore: Vec<bool> = gt_order.iter().map(|&i| ignore[i]).collect();
    let crowd: Vec<bool> = gt_order.iter().map(|&i| gts[i].crowd).collect();

    let scores: Vec<f64> = dts.iter().map(|d| d.score).collect();
    let mut dt_order = order_by_descending_score(&scores);
    dt_order.truncate(*MAX_DETS.last().expect("non-empty"));

    let ious: Vec<Vec<f64>> = dt_order
        .iter()
        .map(|&di| {
            gt_order
                .iter()
                .map(|&gi| coco_iou(&dts[di].bbox, &gts[gi].bbox, gts[gi].crowd))
                .collect()
        })
        .collect();

    let t_n = IOU_THRESHOLDS.len();
    let d_n = dt_order.len();
    let mut dt_matched = vec![vec![false; d_n]; t_n];
    let mut dt_ignore = vec![vec![false; d_n]; t_n];
    for (t, &thr) in IOU_THRESHOLDS.iter().enumerate() {
        let mut gt_matched = vec![false; gts.len()];
        for d in 0..d_n {
            let mut best = thr.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for g in 0..gt_order.len() {
                if gt_matched[g] && !crowd[g] {
                    continue;
                }
                if let Some(mi) = m {
                    if !gt_ignore[mi] && gt_ignore[g] {
                        break;
                    }
                }
                if ious[d][g] < best {
                    continue;
                }
                best = ious[d][g];
                m = Some(g);
            }
            if let Some(mi) = m {
                dt_ignore[t][d] = gt_ignore[mi];
                dt_matched[t][d] = true;
                gt_matched[mi] = true;
            }
        }
        for d in 0..d_n {
            if !dt_matched[t][d] && out_of_range(dts[dt_order[d]].area) {
                dt_ignore[t][d] = true;
            }
        }
    }
    Some(ImgEval {
        dt_scores: dt_order.iter().map(|&i| dts[i].score).collect(),
        dt_matched,
        dt_ignore,
        gt_ignore,
    })
}

/// COCOeval.accumulate for one class, area range and maxDets: precision at the 101 recall
/// thresholds per IoU threshold, and the final recall per IoU threshold; `None` (-1) when there is
/// no non-ignored object.
fn accumulate(
    evals: &[Option<ImgEval>],
    max_det: usize,
    t_n: usize,
    rec_thrs: &[f64; 101],
) -> (Precision, Recall) {
    let evals: Vec<&ImgEval> = evals.iter().flatten().collect();
    let npig = evals
        .iter()
        .map(|e| e.gt_ignore.iter().filter(|i| !**i).count())
        .sum::<usize>();
    if npig == 0 {
        return (None, None);
    }
    // Concatenate the first max_det detections of each image (ascending image id), then sort
    // stably by descending score.
    let mut scores = Vec::new();
    let mut src: Vec<(usize, usize)> = Vec::new();
    for (e_i, e) in evals.iter().enumerate() {
        for d in 0..e.dt_scores.len().min(max_det) {
            scores.push(e.dt_scores[d]);
            src.push((e_i, d));
        }
    }
    let order = order_by_descending_score(&scores);
    let mut precision = Vec::with_capacity(t_n);
    let mut recall = Vec::with_capacity(t_n);
    for t in 0..t_n {
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        let mut rc = Vec::with_capacity(order.len());
        let mut pr = Vec::with_capacity(order.len());
        for &o in &order {
            let (e_i, d) = src[o];
            let e = evals[e_i];
            if !e.dt_ignore[t][d] {
                if e.dt_matched[t][d] {
                    tp += 1.0;
                } else {
                    fp += 1.0;
                }
            }
            rc.push(tp / npig as f64);
            pr.push(tp / (fp + tp + f64::EPSILON));
        }
        recall.push(rc.last().copied().unwrap_or(0.0));
        for i in (1..pr.len()).rev() {
            if pr[i] > pr[i - 1] {
                pr[i - 1] = pr[i];
            }
        }
        let mut q = [0.0; 101];
        for (ri, r) in rec_thrs.iter().enumerate() {
            // searchsorted(rc, r, side="left"): first index with rc[i] >= r.
            let pi = rc.partition_point(|v| v < r);
            if pi >= pr.len() {
                break;
            }
            q[ri] = pr[pi];
        }
        precision.push(q);
    }
    (Some(precision), Some(recall))
}
