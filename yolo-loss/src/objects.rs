//! Which anchor slots of each image hold an object, per output layer: the gather indices of the
//! tensor-op loss (true boxes for the ignore mask, responsible slots for the IoU box terms).
//!
//! Why a value of its own: the slots follow from `y_true`'s objectness channel, but on a GPU
//! reading that channel back means waiting for the device. The targets are built on the host, so
//! whoever builds them can list the slots there for free and hand them to
//! [`crate::yolo_loss_with_objects`]; [`ObjectSlots::from_y_true`] is the fallback that reads the
//! objectness back (once for all layers).

use candle_core::Tensor;

use crate::head::ensure_f32;
use crate::layer::Layer;
use crate::LossError;

/// Per output layer (layer 0 = stride 32), per image: the anchor slots whose `y_true` objectness
/// is non-zero, in ascending order. A slot is numbered in the Keras order of one image's targets,
/// `(j * gw + i) * A + a` for row `j`, column `i` and anchor `a` of a `(gh, gw, A, 5+C)` layer.
///
/// The slots must be exactly those of the `y_true` they are passed with: the loss trusts them (it
/// checks counts, ranges and order, not the objectness itself, which would need a host read).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use yolo_loss::ObjectSlots;
///
/// // Two images of one 1x2-grid layer, 3 anchors, 1 class; image 0 has an object at column 1,
/// // anchor 2 (slot (0 * 2 + 1) * 3 + 2 = 5), image 1 none.
/// let mut y = vec![0f32; 2 * 2 * 3 * 6];
/// y[5 * 6 + 4] = 1.0;
/// let y = Tensor::from_vec(y, (2, 1, 2, 3, 6), &Device::Cpu)?;
/// let slots = ObjectSlots::from_y_true(&[y])?;
/// assert_eq!(slots.layer(0), &[vec![5], vec![]]);
/// assert_eq!(slots, ObjectSlots::new(vec![vec![vec![5], vec![]]]));
/// # Ok::<(), yolo_loss::LossError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectSlots {
    layers: Vec<Vec<Vec<u32>>>,
}

impl ObjectSlots {
    /// Slots listed by the caller: `layers[l][b]` are image `b`'s slots in layer `l`, ascending
    /// (checked against the layers' geometry when the loss runs).
    pub fn new(layers: Vec<Vec<Vec<u32>>>) -> Self {
        Self { layers }
    }

    /// The slots of Keras-layout targets `(m, gh, gw, A, 5+C)` (f32), one per layer, read from
    /// their objectness channel. For tensors off the CPU this is one device-to-host copy (all
    /// layers' objectness concatenated), which is what a caller that built the targets on the
    /// host avoids by passing its own [`ObjectSlots::new`].
    pub fn from_y_true(y_true: &[Tensor]) -> Result<Self, LossError> {
        let mut shapes = Vec::with_capacity(y_true.len());
        let mut obj = Vec::with_capacity(y_true.len());
        for (l, yt) in y_true.iter().enumerate() {
            let what = format!("y_true[{l}]");
            ensure_f32(yt, &what)?;
            let &[m, gh, gw, a, k] = yt.dims() else {
                return Err(LossError::Shape {
                    what,
                    expected: "(m, gh, gw, A, 5+C) in Keras layout".into(),
                    got: yt.dims().to_vec(),
                });
            };
            if k < 5 {
                return Err(LossError::Shape {
                    what,
                    expected: "at least 5 channels (x, y, w, h, objectness)".into(),
                    got: yt.dims().to_vec(),
                });
            }
            shapes.push((m, gh * gw * a));
            obj.push(yt.narrow(4, 4, 1)?.flatten_all()?);
        }
        if obj.is_empty() {
            return Ok(Self::default());
        }
        let flat: Vec<f32> = Tensor::cat(&obj, 0)?.to_vec1()?;
        let mut layers = Vec::with_capacity(shapes.len());
        let mut at = 0;
        for (m, n) in shapes {
            layers.push(
                (0..m)
                    .map(|b| slots_of(&flat[at + b * n..at + (b + 1) * n]))
                    .collect(),
            );
            at += m * n;
        }
        Ok(Self { layers })
    }

    /// Per layer, per image, the slots (see the type's documentation).
    pub fn layers(&self) -> &[Vec<Vec<u32>>] {
        &self.layers
    }

    /// Layer `l`'s slots, per image; empty when there is no such layer.
    pub fn layer(&self, l: usize) -> &[Vec<u32>] {
        self.layers.get(l).map_or(&[], Vec::as_slice)
    }

    /// The slots of the first `m` images only (a batch cut short keeps its first samples).
    pub fn first_images(&self, m: usize) -> Self {
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| l[..m.min(l.len())].to_vec())
                .collect(),
        }
    }

    /// Checks the slots against the loss's layers: one list per layer and image, every slot
    /// inside the layer, strictly ascending, and every batch-wide index `b * n + s` within `u32`
    /// (the gather indices' type).
    pub(crate) fn check(&self, layers: &[Layer]) -> Result<(), LossError> {
        let bad = |msg: String| Err(LossError::Objects(msg));
        if self.layers.len() != layers.len() {
            return bad(format!(
                "object slots for {} layers, the loss has {}",
                self.layers.len(),
                layers.len()
            ));
        }
        for (l, (images, layer)) in self.layers.iter().zip(layers).enumerate() {
            let n = layer.gh * layer.gw * layer.a;
            if images.len() != layer.m {
                return bad(format!(
                    "layer {l}: object slots for {} images, the batch has {}",
                    images.len(),
                    layer.m
                ));
            }
            if u32::try_from(layer.m * n).is_err() {
                return bad(format!(
                    "layer {l}: {} slots in the batch do not fit u32 gather indices",
                    layer.m * n
                ));
            }
            for (b, slots) in images.iter().enumerate() {
                if let Some(&s) = slots.iter().find(|&&s| s as usize >= n) {
                    return bad(format!(
                        "layer {l}, image {b}: slot {s} is outside the layer's {n} slots \
                         ({}x{} cells x {} anchors)",
                        layer.gh, layer.gw, layer.a
                    ));
                }
                if slots.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(format!(
                        "layer {l}, image {b}: object slots are not strictly ascending"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The slots of one image's objectness values (`!= 0`, as the loss's object mask counts them).
fn slots_of(obj: &[f32]) -> Vec<u32> {
    (0..obj.len())
        .filter(|&s| obj[s] != 0.0)
        .map(|s| s as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn layer(m: usize, gh: usize, gw: usize) -> Layer {
        Layer {
            m,
            a: 3,
            c: 1,
            gh,
            gw,
            anchors: vec![[1.0, 1.0]; 3],
            input_w: 32 * gw,
            input_h: 32 * gh,
        }
    }

    /// Objects at (image, row, column, anchor) of a `(m, gh, gw, 3, 6)` target.
    fn y_true(m: usize, gh: usize, gw: usize, objs: &[(usize, usize, usize, usize)]) -> Tensor {
        let mut v = vec![0f32; m * gh * gw * 3 * 6];
        for &(b, j, i, a) in objs {
            let at = (((b * gh + j) * gw + i) * 3 + a) * 6;
            v[at..at + 4].copy_from_slice(&[0.5, 0.5, 0.1, 0.1]);
            v[at + 4] = 1.0;
        }
        Tensor::from_vec(v, (m, gh, gw, 3, 6), &Device::Cpu).unwrap()
    }

    #[test]
    fn slots_are_the_object_cells_in_keras_order_per_image() {
        // Layer 0 (2x3 grid): image 0 has objects at (row 1, col 2, anchor 0) and
        // (row 0, col 1, anchor 2), image 1 none, image 2 one at (row 1, col 0, anchor 1).
        // Layer 1 (4x6): only image 1 has an object, at the last slot.
        let y0 = y_true(3, 2, 3, &[(0, 1, 2, 0), (0, 0, 1, 2), (2, 1, 0, 1)]);
        let y1 = y_true(3, 4, 6, &[(1, 3, 5, 2)]);
        let s = ObjectSlots::from_y_true(&[y0, y1]).unwrap();
        assert_eq!(s.layers().len(), 2);
        // (0 * 3 + 1) * 3 + 2 = 5, (1 * 3 + 2) * 3 + 0 = 15, (1 * 3 + 0) * 3 + 1 = 10.
        assert_eq!(s.layer(0), &[vec![5, 15], vec![], vec![10]]);
        assert_eq!(s.layer(1), &[vec![], vec![4 * 6 * 3 - 1], vec![]]);
        assert!(s.layer(2).is_empty());
        s.check(&[layer(3, 2, 3), layer(3, 4, 6)]).unwrap();
        // A batch cut to its first two images.
        assert_eq!(s.first_images(2).layer(1), &[vec![], vec![4 * 6 * 3 - 1]]);
    }

    #[test]
    fn a_batch_without_objects_has_empty_slot_lists() {
        let s = ObjectSlots::from_y_true(&[y_true(2, 1, 1, &[])]).unwrap();
        assert_eq!(s.layers(), &[vec![Vec::<u32>::new(), vec![]]]);
        assert_eq!(
            ObjectSlots::from_y_true(&[]).unwrap(),
            ObjectSlots::default()
        );
    }

    #[test]
    fn fractional_objectness_counts_as_an_object_like_the_mask() {
        let mut v = vec![0f32; 3 * 6];
        v[6 + 4] = 0.25;
        let y = Tensor::from_vec(v, (1, 1, 1, 3, 6), &Device::Cpu).unwrap();
        assert_eq!(ObjectSlots::from_y_true(&[y]).unwrap().layer(0), &[vec![1]]);
    }

    #[test]
    fn bad_targets_and_slots_are_errors_not_panics() {
        let e = ObjectSlots::from_y_true(&[Tensor::zeros(
            (2, 3),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap()])
        .unwrap_err()
        .to_string();
        assert!(e.contains("y_true[0]") && e.contains("Keras layout"), "{e}");
        let e = ObjectSlots::from_y_true(&[Tensor::zeros(
            (1, 1, 1, 3, 6),
            candle_core::DType::F64,
            &Device::Cpu,
        )
        .unwrap()])
        .unwrap_err()
        .to_string();
        assert!(e.contains("f32"), "{e}");

        let l = [layer(2, 1, 2)]; // 6 slots per image
        let check = |v: Vec<Vec<Vec<u32>>>| ObjectSlots::new(v).check(&l).unwrap_err().to_string();
        assert!(check(vec![]).contains("for 0 layers, the loss has 1"));
        assert!(check(vec![vec![vec![]]]).contains("for 1 images, the batch has 2"));
        let e = check(vec![vec![vec![6], vec![]]]);
        assert!(
            e.contains("image 0: slot 6 is outside the layer's 6 slots"),
            "{e}"
        );
        let e = check(vec![vec![vec![], vec![3, 1]]]);
        assert!(e.contains("image 1") && e.contains("ascending"), "{e}");
        assert!(check(vec![vec![vec![], vec![2, 2]]]).contains("ascending"));
        ObjectSlots::new(vec![vec![vec![0, 5], vec![]]])
            .check(&l)
            .unwrap();
    }
}
