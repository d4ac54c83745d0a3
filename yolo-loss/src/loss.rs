//! keras-yolo3's `yolo_loss` over all output layers, and its result types.

use candle_core::Tensor;

use crate::layer::{layers, Layer};
use crate::{cpu, tensor_loss, BoxLoss, LossConfig, LossError, ObjectSlots};

/// The loss and its parts, as tensors (differentiable with respect to the raw outputs).
#[derive(Debug, Clone)]
pub struct LossParts {
    /// The total, a scalar: the sum of every component of every layer (what keras-yolo3 returns).
    pub total: Tensor,
    /// Per layer (layer 0 = stride 32), scalars already divided by the batch size: the centre
    /// term (sigmoid cross-entropy of tx, ty against the cell offsets, weighted by `2 - w*h`).
    /// With [`BoxLoss::Giou`] / [`BoxLoss::Ciou`]: the whole box term, `(2 - w*h) * (1 - IoU')`.
    pub xy: Vec<Tensor>,
    /// Per layer: the size term (half squared error of tw, th against the log-size targets,
    /// weighted by `2 - w*h`). Zero with [`BoxLoss::Giou`] / [`BoxLoss::Ciou`] (their box term
    /// is in `xy`).
    pub wh: Vec<Tensor>,
    /// Per layer: the objectness term (target 1 at assigned slots, 0 elsewhere times the ignore
    /// mask).
    pub confidence: Vec<Tensor>,
    /// Per layer: the class term (independent sigmoid cross-entropies at assigned slots).
    pub class: Vec<Tensor>,
    /// Per layer `(m, gh, gw, A)`, detached: 1 where the no-object confidence term is kept.
    pub ignore_mask: Vec<Tensor>,
    /// Per layer `(m, gh, gw, A)`, detached: each prediction's best IoU with the true boxes of its
    /// image in that layer, `-inf` when there is none.
    pub best_iou: Vec<Tensor>,
}

/// [`LossParts`] as plain numbers, for logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LossValues {
    /// The total loss.
    pub total: f32,
    /// Per-layer centre terms.
    pub xy: Vec<f32>,
    /// Per-layer size terms.
    pub wh: Vec<f32>,
    /// Per-layer objectness terms.
    pub confidence: Vec<f32>,
    /// Per-layer class terms.
    pub class: Vec<f32>,
}

impl LossParts {
    /// Copies the total and the components to the host in one transfer (stack, then `to_vec1`).
    pub fn values(&self) -> Result<LossValues, LossError> {
        Ok(self.values_and(&[])?.0)
    }

    /// [`LossParts::values`] together with `extra` f32 scalars on the loss's device (say the L2
    /// penalty a trainer adds), all in the same single transfer: on a GPU every copy to the host
    /// waits for the queued kernels, so a training step should make one.
    pub fn values_and(&self, extra: &[Tensor]) -> Result<(LossValues, Vec<f32>), LossError> {
        let mut all = vec![self.total.clone()];
        for part in [&self.xy, &self.wh, &self.confidence, &self.class] {
            all.extend(part.iter().cloned());
        }
        all.extend(extra.iter().cloned());
        let v: Vec<f32> = Tensor::stack(&all, 0)?.detach().to_vec1()?;
        let n = self.xy.len();
        let take = |i: usize| v[1 + i * n..1 + (i + 1) * n].to_vec();
        let values = LossValues {
            total: v[0],
            xy: take(0),
            wh: take(1),
            confidence: take(2),
            class: take(3),
        };
        Ok((values, v[1 + 4 * n..].to_vec()))
    }
}

/// 0: not decided yet (read `YOLO_GENERIC_OPS` on first use), 1: fused CPU kernel, 2: tensor ops.
static GENERIC: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether [`yolo_loss`] runs its tensor-op version (what CUDA and Metal run) on the CPU too:
/// `YOLO_GENERIC_OPS=1` in the environment or [`set_generic_ops`]. Off by default.
pub fn generic_ops() -> bool {
    use std::sync::atomic::Ordering;
    match GENERIC.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("YOLO_GENERIC_OPS").is_ok_and(|v| !v.is_empty() && v != "0");
            set_generic_ops(on);
            on
        }
    }
}

/// Forces (or stops forcing) the tensor-op loss on the CPU for the whole process.
pub fn set_generic_ops(on: bool) {
    GENERIC.store(if on { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
}

/// keras-yolo3's `yolo_loss`.
///
/// `outputs` are the raw NCHW outputs `(m, 3*(5+C), gh, gw)`, layer 0 the coarsest (stride 32);
/// `y_true` the matching targets in Keras layout `(m, gh, gw, 3, 5+C)` (f32) as
/// `preprocess_true_boxes` writes them; `anchors` all 9 (YOLOv3, 3 outputs) or 6 (tiny, 2
/// outputs) anchors as (w, h) pixels, assigned to layers by `cfg.masks`. The input size is 32 x the first output's grid, as in
/// keras-yolo3. Every component is summed over cells, anchors and channels and divided by m.
///
/// On the CPU a fused kernel with its own backward computes each layer
/// ([`yolo_loss_tensor_ops`] gives the same numbers with plain candle ops); on other devices the
/// tensor-op version runs on the inputs' device. The fused kernel covers keras-yolo3's terms
/// (and label smoothing) only: with a GIoU / CIoU `cfg.box_loss` the tensor-op version runs on
/// the CPU too.
///
/// The tensor-op version reads the object slots back from `y_true` (one device-to-host copy off
/// the CPU, see [`ObjectSlots::from_y_true`]); a caller that has them on the host passes them to
/// [`yolo_loss_with_objects`] instead.
pub fn yolo_loss(
    outputs: &[Tensor],
    y_true: &[Tensor],
    anchors: &[[f32; 2]],
    num_classes: usize,
    cfg: &LossConfig,
) -> Result<LossParts, LossError> {
    loss_impl(outputs, y_true, None, anchors, num_classes, cfg)
}

/// [`yolo_loss`] with `y_true`'s object slots listed by the caller (built on the host next to
/// the targets), so the tensor-op version needs nothing back from the device: the whole loss is
/// queued without a wait. `objects` must be the slots of `y_true`'s non-zero objectness; their
/// counts, ranges and order are checked ([`LossError::Objects`]). The fused CPU kernel reads the
/// objectness itself and only checks them.
pub fn yolo_loss_with_objects(
    outputs: &[Tensor],
    y_true: &[Tensor],
    objects: &ObjectSlots,
    anchors: &[[f32; 2]],
    num_classes: usize,
    cfg: &LossConfig,
) -> Result<LossParts, LossError> {
    loss_impl(outputs, y_true, Some(objects), anchors, num_classes, cfg)
}

/// [`yolo_loss`] and [`yolo_loss_with_objects`]: the fused CPU kernel or the tensor-op version.
fn loss_impl(
    outputs: &[Tensor],
    y_true: &[Tensor],
    objects: Option<&ObjectSlots>,
    anchors: &[[f32; 2]],
    num_classes: usize,
    cfg: &LossConfig,
) -> Result<LossParts, LossError> {
    let all_cpu = outputs.iter().chain(y_true).all(|t| t.device().is_cpu())
        && !generic_ops()
        && cfg.box_loss == BoxLoss::Keras;
    let layers = layers(outputs, y_true, anchors, num_classes, cfg.masks.as_deref())?;
    if !all_cpu {
        return tensor_ops_impl(outputs, y_true, objects, &layers, cfg);
    }
    if let Some(o) = objects {
        o.check(&layers)?;
    }
    let mut parts = empty(layers.len())?;
    let mut comps = Vec::with_capacity(layers.len());
    for ((raw, yt), layer) in outputs.iter().zip(y_true).zip(&layers) {
        let (c, mask, best) =
            cpu::layer_loss(raw, yt, layer, cfg.ignore_thresh, cfg.label_smoothing)?;
        parts.xy.push(c.get(0)?);
        parts.wh.push(c.get(1)?);
        parts.confidence.push(c.get(2)?);
        parts.class.push(c.get(3)?);
        parts.ignore_mask.push(mask);
        parts.best_iou.push(best);
        comps.push(c);
    }
    parts.total = Tensor::cat(&comps, 0)?.sum_all()?;
    Ok(parts)
}

/// [`yolo_loss`] written with candle tensor operations only: runs on any device and is
/// differentiated by candle's autograd. The ignore mask is batched (one broadcast IoU per layer
/// against the padded true boxes of each image). The gather indices come from `y_true`'s object
/// mask, read to the host once for all layers ([`ObjectSlots::from_y_true`]);
/// [`yolo_loss_tensor_ops_with_objects`] takes them from the caller instead.
pub fn yolo_loss_tensor_ops(
    outputs: &[Tensor],
    y_true: &[Tensor],
    anchors: &[[f32; 2]],
    num_classes: usize,
    cfg: &LossConfig,
) -> Result<LossParts, LossError> {
    let layers = layers(outputs, y_true, anchors, num_classes, cfg.masks.as_deref())?;
    tensor_ops_impl(outputs, y_true, None, &layers, cfg)
}

/// [`yolo_loss_tensor_ops`] with the object slots given (see [`yolo_loss_with_objects`]): no
/// device-to-host copy at all.
pub fn yolo_loss_tensor_ops_with_objects(
    outputs: &[Tensor],
    y_true: &[Tensor],
    objects: &ObjectSlots,
    anchors: &[[f32; 2]],
    num_classes: usize,
    cfg: &LossConfig,
) -> Result<LossParts, LossError> {
    let layers = layers(outputs, y_true, anchors, num_classes, cfg.masks.as_deref())?;
    tensor_ops_impl(outputs, y_true, Some(objects), &layers, cfg)
}

/// The tensor-op loss over checked `layers`; without `objects` they are read from `y_true`.
fn tensor_ops_impl(
    outputs: &[Tensor],
    y_true: &[Tensor],
    objects: Option<&ObjectSlots>,
    layers: &[Layer],
    cfg: &LossConfig,
) -> Result<LossParts, LossError> {
    let read;
    let objects = match objects {
        Some(o) => o,
        None => {
            read = ObjectSlots::from_y_true(y_true)?;
            &read
        }
    };
    objects.check(layers)?;
    let mut parts = empty(layers.len())?;
    let mut terms = Vec::with_capacity(4 * layers.len());
    for (l, ((raw, yt), layer)) in outputs.iter().zip(y_true).zip(layers).enumerate() {
        let p = tensor_loss::layer_loss(raw, yt, objects.layer(l), layer, cfg)?;
        terms.extend([
            p.xy.clone(),
            p.wh.clone(),
            p.confidence.clone(),
            p.class.clone(),
        ]);
        parts.xy.push(p.xy);
        parts.wh.push(p.wh);
        parts.confidence.push(p.confidence);
        parts.class.push(p.class);
        parts.ignore_mask.push(p.ignore_mask);
        parts.best_iou.push(p.best_iou);
    }
    parts.total = Tensor::stack(&terms, 0)?.sum_all()?;
    Ok(parts)
}

/// A `LossParts` with room for `n` layers; `total` is set by the caller.
fn empty(n: usize) -> Result<LossParts, LossError> {
    Ok(LossParts {
        total: Tensor::new(0f32, &candle_core::Device::Cpu)?,
        xy: Vec::with_capacity(n),
        wh: Vec::with_capacity(n),
        confidence: Vec::with_capacity(n),
        class: Vec::with_capacity(n),
        ignore_mask: Vec::with_capacity(n),
        best_iou: Vec::with_capacity(n),
    })
}
