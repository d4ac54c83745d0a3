//! k-means anchors, as keras-yolo3's `kmeans.py`: boxes are integer (width, height) pairs, the
//! distance is `1 - IoU` of two boxes aligned at a corner, each centre moves to the per-coordinate
//! median of its members truncated to an integer (kmeans.py's box array is integer), and the loop
//! stops when no assignment changes. Clusters are then sorted by width (stable) and the quality is
//! the mean over boxes of the best IoU with any cluster ("Accuracy" in kmeans.py).
//!
//! kmeans.py draws its initial centres from an unseeded generator. [`kmeans_from_indices`] starts
//! from given box indices and reproduces its runs exactly; [`kmeans_anchors`] is this crate's own
//! start: k-means++ seeding under the IoU distance, repeated from [`KMEANS_RESTARTS`] seeds derived
//! from one seed, keeping the best average IoU, so the result is deterministic for a seed.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{read_image_header, Anchors, Annotation, DataError};

/// Restarts of [`kmeans_anchors`]; each is a k-means++ start followed by kmeans.py's iteration.
pub const KMEANS_RESTARTS: usize = 64;

/// Safety cap on assignment steps (kmeans.py loops until stable; the raccoon runs take <= 19).
const MAX_ITERATIONS: usize = 10_000;

/// The outcome of one k-means run.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansResult {
    /// Cluster (width, height) pairs sorted by width; equal widths keep their cluster order.
    pub clusters: Vec<[i64; 2]>,
    /// Assignment steps performed, the last one being the unchanged one (as the fixture counts).
    pub iterations: usize,
    /// Mean over boxes of the best IoU with any cluster, in [0, 1].
    pub avg_iou: f64,
}

impl KMeansResult {
    /// The clusters as anchors (f32 pairs, smallest width first, kmeans.py's order).
    pub fn anchors(&self) -> Anchors {
        Anchors {
            custom_masks: None,
            wh: self
                .clusters
                .iter()
                .map(|&[w, h]| [w as f32, h as f32])
                .collect(),
        }
    }

    /// The clusters as anchors sorted by area, smallest first (equal areas: smaller width first).
    /// This is the order the trainer's anchor masks assume (anchors 0-2 to the finest grid, 6-8 to
    /// the coarsest), which sorting by width alone does not guarantee.
    pub fn anchors_by_area(&self) -> Anchors {
        let mut c = self.clusters.clone();
        c.sort_by_key(|&[w, h]| (w * h, w));
        Anchors {
            custom_masks: None,
            wh: c.iter().map(|&[w, h]| [w as f32, h as f32]).collect(),
        }
    }
}

/// IoU of two (w, h) boxes aligned at a corner; integer areas divided in f64 as numpy does.
pub fn wh_iou(b: [i64; 2], c: [i64; 2]) -> f64 {
    let inter = b[0].min(c[0]) * b[1].min(c[1]);
    let union = b[0] * b[1] + c[0] * c[1] - inter;
    inter as f64 / union as f64
}

/// Mean over `boxes` of the best IoU with any of `clusters` (kmeans.py's `avg_iou`).
pub fn avg_iou(boxes: &[[i64; 2]], clusters: &[[i64; 2]]) -> f64 {
    if boxes.is_empty() {
        return 0.0;
    }
    let sum: f64 = boxes
        .iter()
        .map(|&b| {
            clusters
                .iter()
                .map(|&c| wh_iou(b, c))
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum();
    sum / boxes.len() as f64
}

/// The (width, height) of every box of the annotations, in file order, as kmeans.py's
/// `txt2boxes` computes them: `int(x_max) - int(x_min)`, `int(y_max) - int(y_min)`. Boxes without
/// positive width and height are left out (they would make the IoU meaningless).
pub fn box_wh(annotations: &[Annotation]) -> Vec<[i64; 2]> {
    annotations
        .iter()
        .flat_map(|a| a.boxes.iter())
        .map(|b| {
            [
                b.x_max.trunc() as i64 - b.x_min.trunc() as i64,
                b.y_max.trunc() as i64 - b.y_min.trunc() as i64,
            ]
        })
        .filter(|&[w, h]| w > 0 && h > 0)
        .collect()
}

/// The (width, height) of every box after keras-yolo3's letterbox to `input` = (w, h)
/// (`get_random_data` with `random=False`): `scale = min(w/iw, h/ih)`, new size truncated,
/// offset `(w - nw) // 2`, each coordinate `int(v * scale + offset)` in f64. `image_sizes[i]` is
/// the (width, height) of annotation `i`'s image. Boxes without positive size are left out.
pub fn letterboxed_box_wh(
    annotations: &[Annotation],
    image_sizes: &[(u32, u32)],
    input: (u32, u32),
) -> Vec<[i64; 2]> {
    let (w, h) = (f64::from(input.0), f64::from(input.1));
    let mut out = Vec::new();
    for (a, &(iw, ih)) in annotations.iter().zip(image_sizes) {
        let (iw, ih) = (f64::from(iw), f64::from(ih));
        let scale = (w / iw).min(h / ih);
        let nw = (iw * scale).trunc();
        let nh = (ih * scale).trunc();
        let dx = ((w - nw) / 2.0).floor();
        let dy = ((h - nh) / 2.0).floor();
        for b in &a.boxes {
            let map = |v: f32, d: f64| (f64::from(v) * scale + d).trunc() as i64;
            let bw = map(b.x_max, dx) - map(b.x_min, dx);
            let bh = map(b.y_max, dy) - map(b.y_min, dy);
            if bw > 0 && bh > 0 {
                out.push([bw, bh]);
            }
        }
    }
    out
}

/// The (width, height) of each annotation's image, from its header only (no pixel is decoded;
/// [`crate::read_image_header`], which also refuses a truncated JPEG or PNG); used with
/// [`letterboxed_box_wh`] to cluster boxes at the network's input size. Image paths are used as
/// written, i.e. relative ones against the working directory, as `yolo train`'s loader does.
/// Images are read in parallel; an error is that of the first failing line, as
/// [`DataError::AnnotationImage`] naming `annotation_file` and the line.
pub fn image_sizes(
    annotations: &[Annotation],
    annotation_file: &Path,
) -> Result<Vec<(u32, u32)>, DataError> {
    let sizes: Vec<Result<(u32, u32), DataError>> = annotations
        .par_iter()
        .map(|a| {
            read_image_header(&a.path).map_err(|e| DataError::AnnotationImage {
                file: annotation_file.to_path_buf(),
                line: a.line,
                source: Box::new(e),
            })
        })
        .collect();
    sizes.into_iter().collect()
}

fn check(boxes: &[[i64; 2]], k: usize) -> Result<(), DataError> {
    if k == 0 || k > boxes.len() {
        return Err(DataError::KMeans {
            k,
            boxes: boxes.len(),
        });
    }
    if let Some(&[w, h]) = boxes.iter().find(|&&[w, h]| w <= 0 || h <= 0) {
        return Err(DataError::Config(format!(
            "k-means needs positive box sizes, got {w}x{h}"
        )));
    }
    Ok(())
}

/// Median of integers, truncated to an integer as numpy's median assigned into an int array.
fn median_trunc(v: &mut [i64]) -> i64 {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        // numpy averages the two middle values in f64; for the positive values here that is
        // the integer floor of their mean.
        ((v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0).trunc() as i64
    }
}

/// kmeans.py's loop from the given centres. Returns unsorted centres and the step count.
fn lloyd(boxes: &[[i64; 2]], mut clusters: Vec<[i64; 2]>) -> (Vec<[i64; 2]>, usize) {
    let k = clusters.len();
    // kmeans.py starts with "last" assignments all zero, so a first assignment of all zeros stops.
    let mut last = vec![0usize; boxes.len()];
    let mut current = vec![0usize; boxes.len()];
    let mut iterations = 0;
    let mut ws = Vec::with_capacity(boxes.len());
    let mut hs = Vec::with_capacity(boxes.len());
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        for (a, &b) in current.iter_mut().zip(boxes) {
            // argmin of 1 - IoU, first minimum wins (numpy's argmin).
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            for (j, &c) in clusters.iter().enumerate() {
                let d = 1.0 - wh_iou(b, c);
                if d < best_d {
                    best_d = d;
                    best = j;
                }
            }
            *a = best;
        }
        if current == last {
            break;
        }
        for (j, c) in clusters.iter_mut().enumerate().take(k) {
            ws.clear();
            hs.clear();
            for (&b, &a) in boxes.iter().zip(&current) {
                if a == j {
                    ws.push(b[0]);
                    hs.push(b[1]);
                }
            }
            // kmeans.py would write NaN (then garbage) into an empty cluster; keeping the centre is
            // the sane reading. It never happens in the fixture's runs.
            if !ws.is_empty() {
                *c = [median_trunc(&mut ws), median_trunc(&mut hs)];
            }
        }
        std::mem::swap(&mut last, &mut current);
    }
    (clusters, iterations)
}

fn finish(boxes: &[[i64; 2]], clusters: Vec<[i64; 2]>, iterations: usize) -> KMeansResult {
    let mut clusters = clusters;
    // np.lexsort on the widths: a stable sort by width.
    clusters.sort_by_key(|c| c[0]);
    let avg_iou = avg_iou(boxes, &clusters);
    KMeansResult {
        clusters,
        iterations,
        avg_iou,
    }
}

/// kmeans.py started from the boxes at `init_indices` (its `np.random.choice(n, k, replace=False)`).
/// Reproduces keras-yolo3's clusters and iteration counts exactly.
pub fn kmeans_from_indices(
    boxes: &[[i64; 2]],
    init_indices: &[usize],
) -> Result<KMeansResult, DataError> {
    check(boxes, init_indices.len())?;
    let mut init = Vec::with_capacity(init_indices.len());
    for &i in init_indices {
        let b = boxes.get(i).ok_or_else(|| {
            DataError::Config(format!(
                "k-means initial index {i} is out of range for {} boxes",
                boxes.len()
            ))
        })?;
        init.push(*b);
    }
    let (clusters, iterations) = lloyd(boxes, init);
    Ok(finish(boxes, clusters, iterations))
}

/// k-means++ seeding with the `1 - IoU` distance: the first centre uniformly, each next one with
/// probability proportional to the squared distance to the nearest chosen centre.
fn kmeans_pp_init(boxes: &[[i64; 2]], k: usize, rng: &mut ChaCha8Rng) -> Vec<[i64; 2]> {
    let mut centres = vec![boxes[rng.random_range(0..boxes.len())]];
    let mut d2: Vec<f64> = boxes
        .iter()
        .map(|&b| (1.0 - wh_iou(b, centres[0])).powi(2))
        .collect();
    while centres.len() < k {
        let total: f64 = d2.iter().sum();
        let next = if total > 0.0 {
            let mut r = rng.random::<f64>() * total;
            let mut pick = boxes.len() - 1;
            for (i, &d) in d2.iter().enumerate() {
                if r < d {
                    pick = i;
                    break;
                }
                r -= d;
            }
            pick
        } else {
            // Every box coincides with a centre: any box will do.
            rng.random_range(0..boxes.len())
        };
        let c = boxes[next];
        centres.push(c);
        for (d, &b) in d2.iter_mut().zip(boxes) {
            *d = d.min((1.0 - wh_iou(b, c)).powi(2));
        }
    }
    centres
}

/// This crate's own k-means start: [`KMEANS_RESTARTS`] k-means++ starts, each followed by
/// kmeans.py's iteration, keeping the run with the best average IoU (the first on ties).
/// Deterministic for `seed`. `iterations` is the winning run's.
pub fn kmeans_anchors(boxes: &[[i64; 2]], k: usize, seed: u64) -> Result<KMeansResult, DataError> {
    check(boxes, k)?;
    let mut best: Option<KMeansResult> = None;
    for restart in 0..KMEANS_RESTARTS as u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(restart);
        let init = kmeans_pp_init(boxes, k, &mut rng);
        let (clusters, iterations) = lloyd(boxes, init);
        let r = finish(boxes, clusters, iterations);
        if best.as_ref().is_none_or(|b| r.avg_iou > b.avg_iou) {
            best = Some(r);
        }
    }
    best.ok_or(DataError::KMeans {
        k,
        boxes: boxes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn iou_of_corner_aligned_boxes() {
        assert_eq!(wh_iou([10, 10], [10, 10]), 1.0);
        assert_eq!(wh_iou([10, 10], [5, 5]), 0.25);
        assert_eq!(wh_iou([10, 2], [2, 10]), 4.0 / 36.0);
    }

    #[test]
    fn median_truncates_like_numpy_into_int() {
        assert_eq!(median_trunc(&mut [3, 1, 2]), 2);
        assert_eq!(median_trunc(&mut [4, 1, 2, 9]), 3); // 3.0
        assert_eq!(median_trunc(&mut [1, 2]), 1); // 1.5 -> 1
    }

    #[test]
    fn two_obvious_groups() {
        let boxes = [[10, 10], [11, 10], [10, 12], [100, 50], [98, 52], [101, 49]];
        let r = kmeans_from_indices(&boxes, &[3, 0]).unwrap();
        assert_eq!(r.clusters, vec![[10, 10], [100, 50]]);
        // Step 1 assigns, step 2 (after the medians) is unchanged.
        assert_eq!(r.iterations, 2);
        let own = kmeans_anchors(&boxes, 2, 7).unwrap();
        assert_eq!(own.clusters, vec![[10, 10], [100, 50]]);
    }

    #[test]
    fn image_sizes_names_annotation_line_and_missing_image() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        image::RgbImage::new(80, 30).save(&png).unwrap();
        let ann = |path: PathBuf, line| Annotation {
            path,
            boxes: vec![],
            line,
        };
        let file = Path::new("train.txt");
        let ok = [ann(png.clone(), 1), ann(png.clone(), 2)];
        assert_eq!(image_sizes(&ok, file).unwrap(), vec![(80, 30), (80, 30)]);

        let bad = [
            ann(png.clone(), 1),
            ann("/nonexistent/x.jpg".into(), 3),
            ann("/nonexistent/y.jpg".into(), 4),
        ];
        let e = image_sizes(&bad, file).unwrap_err().to_string();
        assert!(e.starts_with("train.txt:3: /nonexistent/x.jpg: "), "{e}");

        // A text file named as an image: the codec's complaint, still with file and line.
        let txt = dir.path().join("b.jpg");
        std::fs::write(&txt, "not an image").unwrap();
        let e = image_sizes(&[ann(txt.clone(), 7)], file)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("train.txt:7: {}: ", txt.display())),
            "{e}"
        );
    }

    #[test]
    fn anchors_by_area_orders_by_area_then_width() {
        let r = KMeansResult {
            // Areas 1000, 400, 300, 300: the two of 300 go smaller width first.
            clusters: vec![[10, 100], [20, 20], [30, 10], [15, 20]],
            iterations: 1,
            avg_iou: 1.0,
        };
        assert_eq!(
            r.anchors_by_area().wh,
            vec![[15.0, 20.0], [30.0, 10.0], [20.0, 20.0], [10.0, 100.0]]
        );
        // `anchors` keeps the clusters' (width) order.
        assert_eq!(r.anchors().wh[0], [10.0, 100.0]);
    }

    #[test]
    fn letterbox_of_a_wide_image_halves_and_centres() {
        // 800x400 into 416x416: scale 0.52, 416x208 pasted at y offset 104.
        let a = Annotation {
            path: "a.png".into(),
            boxes: vec![crate::BoxLabel {
                x_min: 0.0,
                y_min: 0.0,
                x_max: 400.0,
                y_max: 200.0,
                class: 0,
            }],
            line: 1,
        };
        assert_eq!(
            letterboxed_box_wh(std::slice::from_ref(&a), &[(800, 400)], (416, 416)),
            vec![[208, 104]]
        );
        assert_eq!(box_wh(&[a]), vec![[400, 200]]);
    }

    #[test]
    fn errors_for_bad_k_and_indices() {
        let boxes = [[10, 10], [20, 20]];
        assert_eq!(
            kmeans_anchors(&boxes, 3, 0).unwrap_err().to_string(),
            "k-means: cannot make 3 clusters from 2 boxes"
        );
        assert_eq!(
            kmeans_anchors(&boxes, 0, 0).unwrap_err().to_string(),
            "k-means: cannot make 0 clusters from 2 boxes"
        );
        assert_eq!(
            kmeans_from_indices(&boxes, &[0, 5])
                .unwrap_err()
                .to_string(),
            "invalid configuration: k-means initial index 5 is out of range for 2 boxes"
        );
        assert_eq!(
            kmeans_anchors(&[[1, 1], [0, 3]], 1, 0)
                .unwrap_err()
                .to_string(),
            "invalid configuration: k-means needs positive box sizes, got 0x3"
        );
    }

    #[test]
    fn own_start_is_deterministic_for_a_seed() {
        let boxes: Vec<[i64; 2]> = (1..60).map(|i| [i * 7 % 97 + 3, i * 13 % 89 + 5]).collect();
        let a = kmeans_anchors(&boxes, 5, 42).unwrap();
        let b = kmeans_anchors(&boxes, 5, 42).unwrap();
        assert_eq!(a, b);
        assert!(a.avg_iou > 0.5 && a.avg_iou <= 1.0, "{}", a.avg_iou);
    }
}
