//! Greedy non-max suppression with the semantics of `tf.image.non_max_suppression`, which
//! keras-yolo3's `yolo_eval` runs once per class.
//!
//! Candidates are visited by descending score (equal scores: lower index first); a candidate is
//! dropped when its IoU with an already kept box is strictly greater than the threshold (IoU exactly
//! equal keeps both); at most `max_output` boxes are kept. IoU is continuous (no +1), on
//! `(y_min, x_min, y_max, x_max)` boxes, computed in `f32` like TensorFlow.

/// IoU of two `(y_min, x_min, y_max, x_max)` boxes as TensorFlow's NMS computes it: corners are
/// normalised (min/max), and a box with non-positive area has IoU 0 with everything.
pub fn box_iou_yxyx(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let (ay0, ay1) = (a[0].min(a[2]), a[0].max(a[2]));
    let (ax0, ax1) = (a[1].min(a[3]), a[1].max(a[3]));
    let (by0, by1) = (b[0].min(b[2]), b[0].max(b[2]));
    let (bx0, bx1) = (b[1].min(b[3]), b[1].max(b[3]));
    let area_a = (ay1 - ay0) * (ax1 - ax0);
    let area_b = (by1 - by0) * (bx1 - bx0);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let iy0 = ay0.max(by0);
    let ix0 = ax0.max(bx0);
    let iy1 = ay1.min(by1);
    let ix1 = ax1.min(bx1);
    let inter = (iy1 - iy0).max(0.0) * (ix1 - ix0).max(0.0);
    inter / (area_a + area_b - inter)
}

/// Indices of the boxes kept by non-max suppression, best score first.
///
/// `boxes[i]` is `(y_min, x_min, y_max, x_max)` and `scores[i]` its score.
pub fn non_max_suppression(
    boxes: &[[f32; 4]],
    scores: &[f32],
    max_output: usize,
    iou_threshold: f32,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len().min(scores.len())).collect();
    // Stable sort: equal scores keep ascending index, as TF's priority queue does.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.len() >= max_output {
            break;
        }
        if kept
            .iter()
            .all(|&k| box_iou_yxyx(&boxes[k], &boxes[i]) <= iou_threshold)
        {
            kept.push(i);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_half_overlapping_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [0.0, 5.0, 10.0, 15.0];
        assert!((box_iou_yxyx(&a, &b) - 50.0 / 150.0).abs() < 1e-7);
        assert_eq!(box_iou_yxyx(&a, &[0.0, 0.0, 0.0, 10.0]), 0.0);
    }

    #[test]
    fn suppresses_only_strictly_above_threshold() {
        // IoU exactly 1/3 with threshold 1/3 in f32: both kept (tf keeps IoU == threshold).
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 5.0, 10.0, 15.0],
            [0.0, 1.0, 10.0, 11.0],
        ];
        let scores = [0.9, 0.8, 0.7];
        let iou = box_iou_yxyx(&boxes[0], &boxes[1]);
        assert_eq!(non_max_suppression(&boxes, &scores, 10, iou), vec![0, 1]);
        assert_eq!(
            non_max_suppression(&boxes, &scores, 10, 0.95),
            vec![0, 1, 2]
        );
        assert_eq!(non_max_suppression(&boxes, &scores, 2, 0.95), vec![0, 1]);
    }

    #[test]
    fn equal_scores_lower_index_wins() {
        let boxes = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]];
        assert_eq!(non_max_suppression(&boxes, &[0.5, 0.5], 10, 0.5), vec![0]);
    }
}
