//! keras-yolo3's `preprocess_true_boxes`: boxes in input pixels to the per-layer training targets
//! `y_true`, each `(m, gh, gw, A, 5 + C)` in Keras layout (`x, y, w, h` relative to the input,
//! objectness, class bits).
//!
//! Reproduced bit for bit, quirks included (see the fixture README's conventions):
//! - the centre is `floor((min + max) / 2)` in f32; centre and size are divided by the input size
//!   in f64 and stored as f32; the cell is `floor(x_norm * gw)` with the product in f64;
//! - the best anchor is the first maximum of the IoU of centred boxes over all anchors, computed
//!   in f64 with the box area in f32; the box goes to every layer whose mask holds that anchor
//!   (tiny: anchor 0 is dropped, anchor 3 goes to both layers);
//! - a row is a box when its width is > 0 (the height is not checked);
//! - **rank quirk, reproduced**: keras-yolo3 enumerates the valid rows but reads coordinates and
//!   class from the row at that rank's *position*, so a degenerate row before a valid one shifts
//!   the following boxes. Rows produced by [`crate::get_random_data`] never trigger it on the
//!   random path (degenerate boxes are dropped); on the letterbox path only an annotation with a
//!   zero-width box before other boxes does. Kept for exact parity with the golden fixtures;
//! - later rows overwrite earlier ones on the same cell and anchor, and class bits accumulate.
//!
//! Differences: a class id `>= num_classes` is an error naming the image and class (keras-yolo3
//! asserts), and a centre outside the grid is an error (keras-yolo3 raises IndexError for large
//! indices and wraps negative ones around like Python).

use candle_core::{Device, Tensor};

use crate::anchors::Anchors;
use crate::annotation::BoxLabel;
use crate::error::DataError;
use crate::input_shape::InputShape;

/// One layer's targets, `shape = [m, gh, gw, A, 5 + C]`, row-major `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct YTrue {
    /// `[m, gh, gw, anchors per layer, 5 + num_classes]`.
    pub shape: [usize; 5],
    /// Values in row-major order of `shape`.
    pub data: Vec<f32>,
}

impl YTrue {
    fn zeros(shape: [usize; 5]) -> Self {
        Self {
            shape,
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Offset of `[b, j, i, k, 0]` in `data`.
    pub fn offset(&self, b: usize, j: usize, i: usize, k: usize) -> usize {
        let [_, gh, gw, a, f] = self.shape;
        (((b * gh + j) * gw + i) * a + k) * f
    }

    /// Per image, the anchor slots `(j * gw + i) * A + k` whose objectness is non-zero, ascending:
    /// the gather indices the tensor-op loss needs (`yolo_loss::ObjectSlots`), listed here on the
    /// host where the targets are built so a GPU step does not copy the objectness back.
    pub fn object_slots(&self) -> Vec<Vec<u32>> {
        let [m, gh, gw, a, f] = self.shape;
        let n = gh * gw * a;
        (0..m)
            .map(|b| {
                (0..n)
                    .filter(|&s| self.data[(b * n + s) * f + 4] != 0.0)
                    .map(|s| s as u32)
                    .collect()
            })
            .collect()
    }

    /// The targets as a candle tensor of shape `shape` (Keras layout) on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor, DataError> {
        Ok(Tensor::from_slice(&self.data, self.shape.to_vec(), device)?)
    }
}

/// keras-yolo3's `preprocess_true_boxes` for a batch: `boxes[b]` are image `b`'s rows
/// (`x_min, y_min, x_max, y_max, class` in input pixels; missing rows count as zero padding).
///
/// ```
/// use yolo_data::{preprocess_true_boxes, Anchors, BoxLabel, InputShape};
///
/// // A 116x90 box (anchor 6: layer 0, slot 0) centred at (69, 65) on a 416x416 input.
/// let b = BoxLabel { x_min: 11.0, y_min: 20.0, x_max: 127.0, y_max: 110.0, class: 1 };
/// let y = preprocess_true_boxes(&[vec![b]], InputShape::new(416, 416).unwrap(), &Anchors::yolo_default(), 2).unwrap();
/// assert_eq!(y[0].shape, [1, 13, 13, 3, 7]);
/// let at = y[0].offset(0, 2, 2, 0); // row floor(65 / 32), column floor(69 / 32)
/// assert_eq!(&y[0].data[at + 4..at + 7], &[1.0, 0.0, 1.0]);
/// ```
pub fn preprocess_true_boxes(
    boxes: &[Vec<BoxLabel>],
    input: InputShape,
    anchors: &Anchors,
    num_classes: usize,
) -> Result<Vec<YTrue>, DataError> {
    let masks = anchors.masks();
    let num_layers = masks.len();
    if let Some(&bad) = masks.iter().flatten().find(|&&a| a >= anchors.wh.len()) {
        return Err(DataError::Config(format!(
            "{} anchors given, the {num_layers}-layer mask uses anchor {bad}",
            anchors.wh.len()
        )));
    }
    for (b, rows) in boxes.iter().enumerate() {
        if let Some((row, bl)) = rows
            .iter()
            .enumerate()
            .find(|(_, bl)| bl.class >= num_classes)
        {
            return Err(DataError::BoxClassOutOfRange {
                image: b,
                row,
                class: bl.class,
                num_classes,
            });
        }
    }
    let m = boxes.len();
    let (h, w) = (input.h, input.w);
    let mut y_true: Vec<YTrue> = (0..num_layers)
        .map(|l| {
            let (gh, gw) = input.grid(l);
            YTrue::zeros([m, gh, gw, masks[l].len(), 5 + num_classes])
        })
        .collect();
    let anchors_f64: Vec<[f64; 2]> = anchors
        .wh
        .iter()
        .map(|&[aw, ah]| [aw as f64, ah as f64])
        .collect();

    for (b, rows) in boxes.iter().enumerate() {
        // Normalised (x, y, w, h) of every row, as keras-yolo3 overwrites true_boxes[..., 0:4].
        let norm: Vec<[f32; 4]> = rows
            .iter()
            .map(|bl| {
                let cx = ((bl.x_min + bl.x_max) / 2.0).floor();
                let cy = ((bl.y_min + bl.y_max) / 2.0).floor();
                [
                    (cx as f64 / w as f64) as f32,
                    (cy as f64 / h as f64) as f32,
                    (bl.width() as f64 / w as f64) as f32,
                    (bl.height() as f64 / h as f64) as f32,
                ]
            })
            .collect();
        let valid = rows.iter().filter(|bl| bl.width() > 0.0);
        for (t, bl) in valid.enumerate() {
            let n = best_anchor(bl.width(), bl.height(), &anchors_f64);
            // Quirk: row `t` (the rank among valid rows) supplies coordinates and class.
            let (xywh, class) = (norm[t], rows[t].class);
            for (l, mask) in masks.iter().enumerate() {
                let Some(k) = mask.iter().position(|&a| a == n) else {
                    continue;
                };
                let yt = &mut y_true[l];
                let [_, gh, gw, _, _] = yt.shape;
                let i = cell_index(xywh[0], gw);
                let j = cell_index(xywh[1], gh);
                let (Some(i), Some(j)) = (i, j) else {
                    return Err(DataError::BoxOutsideGrid {
                        image: b,
                        row: t,
                        layer: l,
                        centre: [xywh[0] * w as f32, xywh[1] * h as f32],
                        input_hw: [h, w],
                    });
                };
                let at = yt.offset(b, j, i, k);
                yt.data[at..at + 4].copy_from_slice(&xywh);
                yt.data[at + 4] = 1.0;
                yt.data[at + 5 + class] = 1.0;
            }
        }
    }
    Ok(y_true)
}

/// `floor(v * g)` with the product in f64; negative indices wrap once like Python's; anything
/// else out of range is `None`.
fn cell_index(v: f32, g: usize) -> Option<usize> {
    let idx = (v as f64 * g as f64).floor();
    let g = g as f64;
    if (0.0..g).contains(&idx) {
        Some(idx as usize)
    } else if (-g..0.0).contains(&idx) {
        Some((idx + g) as usize)
    } else {
        None
    }
}

/// Index of the anchor with the highest IoU against a `bw x bh` box, both centred at the origin;
/// the first maximum wins (numpy `argmax`).
fn best_anchor(bw: f32, bh: f32, anchors: &[[f64; 2]]) -> usize {
    // keras-yolo3: box halves in f32, anchors in f64, box area as an f32 product.
    let (hw, hh) = ((bw / 2.0) as f64, (bh / 2.0) as f64);
    let box_area = (bw * bh) as f64;
    let mut best = 0;
    let mut best_iou = f64::NEG_INFINITY;
    for (a, &[aw, ah]) in anchors.iter().enumerate() {
        let (ahw, ahh) = (aw / 2.0, ah / 2.0);
        let iw = (hw.min(ahw) - (-hw).max(-ahw)).max(0.0);
        let ih = (hh.min(ahh) - (-hh).max(-ahh)).max(0.0);
        let inter = iw * ih;
        let iou = inter / (box_area + aw * ah - inter);
        if iou > best_iou {
            best_iou = iou;
            best = a;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(x0: f32, y0: f32, x1: f32, y1: f32, class: usize) -> BoxLabel {
        BoxLabel {
            x_min: x0,
            y_min: y0,
            x_max: x1,
            y_max: y1,
            class,
        }
    }

    #[test]
    fn single_box_lands_in_its_cell_and_anchor() {
        // A 116x90 box (anchor 6, layer 0, slot 0) from 11 to 127 has centre floor(69) = 69.
        let input = InputShape::square416();
        let y = preprocess_true_boxes(
            &[vec![bx(11.0, 20.0, 127.0, 110.0, 1)]],
            input,
            &Anchors::yolo_default(),
            2,
        )
        .unwrap();
        assert_eq!(y.len(), 3);
        assert_eq!(y[0].shape, [1, 13, 13, 3, 7]);
        assert_eq!(y[2].shape, [1, 52, 52, 3, 7]);
        // i = floor(69/416*13) = 2, j = floor(65/416*13) = 2
        let at = y[0].offset(0, 2, 2, 0);
        assert_eq!(
            &y[0].data[at..at + 7],
            &[
                (69.0f64 / 416.0) as f32,
                (65.0f64 / 416.0) as f32,
                (116.0f64 / 416.0) as f32,
                (90.0f64 / 416.0) as f32,
                1.0,
                0.0,
                1.0
            ]
        );
        assert_eq!(y[0].data.iter().filter(|&&v| v != 0.0).count(), 6);
        assert!(y[1].data.iter().chain(&y[2].data).all(|&v| v == 0.0));
    }

    #[test]
    fn object_slots_list_each_images_object_cells_and_nothing_for_an_empty_image() {
        // Image 0: the 116x90 box of the test above (layer 0, row 2, column 2, anchor 0) and a
        // 10x13 box (anchor 0: layer 2, slot 0) centred at (100, 196): row 24, column 12 of 52.
        // Image 1: no box.
        let boxes = [
            vec![
                bx(11.0, 20.0, 127.0, 110.0, 1),
                bx(95.0, 190.0, 105.0, 203.0, 0),
            ],
            vec![],
        ];
        let y = preprocess_true_boxes(&boxes, InputShape::square416(), &Anchors::yolo_default(), 2)
            .unwrap();
        let slots: Vec<_> = y.iter().map(YTrue::object_slots).collect();
        assert_eq!(slots[0], vec![vec![(2 * 13 + 2) * 3], vec![]]);
        assert_eq!(slots[1], vec![Vec::<u32>::new(), vec![]]);
        assert_eq!(slots[2], vec![vec![(24 * 52 + 12) * 3], vec![]]);
        // Exactly the slots whose objectness is set.
        for (t, s) in y.iter().zip(&slots) {
            let [_, _, gw, a, _] = t.shape;
            for (b, image) in s.iter().enumerate() {
                for &slot in image {
                    let slot = slot as usize;
                    let (j, i, k) = (slot / (gw * a), (slot / a) % gw, slot % a);
                    assert_eq!(t.data[t.offset(b, j, i, k) + 4], 1.0);
                }
            }
            let set = t
                .data
                .iter()
                .skip(4)
                .step_by(t.shape[4])
                .filter(|&&v| v != 0.0);
            assert_eq!(set.count(), s.iter().map(Vec::len).sum::<usize>());
        }
    }

    #[test]
    fn class_out_of_range_is_an_error_naming_it() {
        let e = preprocess_true_boxes(
            &[vec![], vec![bx(0.0, 0.0, 10.0, 10.0, 5)]],
            InputShape::square416(),
            &Anchors::yolo_default(),
            3,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("class 5") && e.contains("image 1"), "{e}");
    }

    #[test]
    fn ties_pick_the_first_anchor() {
        let anchors = [[10.0, 10.0], [10.0, 10.0], [20.0, 20.0]];
        assert_eq!(best_anchor(10.0, 10.0, &anchors), 0);
        assert_eq!(best_anchor(19.0, 21.0, &anchors), 2);
        // Zero height: IoU 0 everywhere, anchor 0.
        assert_eq!(best_anchor(19.0, 0.0, &anchors), 0);
    }

    #[test]
    fn darknet_masks_give_anchor_0_a_layer_and_move_anchor_3s_boxes() {
        // tiny anchors 10x14 (0) and 81x82 (3); keras-yolo3's masks [[3,4,5],[1,2,3]] never use
        // anchor 0 and put anchor 3 in both layers, darknet's [[3,4,5],[0,1,2]] use it once each.
        let boxes = [vec![
            bx(100.0, 100.0, 110.0, 114.0, 0),
            bx(200.0, 200.0, 281.0, 282.0, 1),
        ]];
        let input = InputShape::square416();
        let slots = |y: &[YTrue]| -> Vec<(usize, usize)> {
            let mut v = Vec::new();
            for (l, t) in y.iter().enumerate() {
                let [_, gh, gw, a, k] = t.shape;
                for cell in 0..gh * gw * a {
                    if t.data[cell * k + 4] == 1.0 {
                        v.push((l, cell % a));
                    }
                }
            }
            v
        };
        let keras = preprocess_true_boxes(&boxes, input, &Anchors::tiny_default(), 2).unwrap();
        assert_eq!(slots(&keras), vec![(0, 0), (1, 2)]);
        let darknet = Anchors::tiny_default()
            .with_masks(vec![vec![3, 4, 5], vec![0, 1, 2]])
            .unwrap();
        let y = preprocess_true_boxes(&boxes, input, &darknet, 2).unwrap();
        assert_eq!(slots(&y), vec![(0, 0), (1, 0)]);
    }

    #[test]
    fn masks_that_do_not_fit_the_anchors_are_errors() {
        let t = Anchors::tiny_default;
        for (m, want) in [
            (
                vec![vec![3, 4, 5]],
                "6 anchors mean 2 output layers, the masks give 1",
            ),
            (
                vec![vec![3, 4, 6], vec![0, 1, 2]],
                "anchor 6 does not exist (6 anchors)",
            ),
            (
                vec![vec![3, 4], vec![0, 1, 2]],
                "[3, 4] does not name 3 anchors",
            ),
        ] {
            let e = t().with_masks(m).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
