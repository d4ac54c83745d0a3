//! IoU-based box terms (GIoU, CIoU) for [`crate::BoxLoss::Giou`] and [`crate::BoxLoss::Ciou`],
//! written with candle tensor operations so candle's autograd differentiates them on every
//! device (no hand-written backward).
//!
//! Every division is guarded by [`EPS`], so zero-size boxes (keras-yolo3's zero-height quirk)
//! give finite values and gradients.

use candle_core::{DType, Tensor, D};

use crate::layer::Layer;
use crate::{BoxLoss, LossError};

/// Guard of every division (ultralytics' `bbox_iou` uses the same 1e-7).
const EPS: f64 = 1e-7;

/// Upper clamp of the raw size logits before `exp` in the decoded predicted box: `exp(20)` times
/// the largest anchor is still finite in squares and products, where `exp(100)` is `inf` and
/// would turn the IoU terms into NaN. Beyond it the size gets no gradient.
const MAX_LOG_WH: f64 = 20.0;

/// The four coordinates of `(..., 4)` xywh boxes, each `(...)`.
fn xywh(b: &Tensor) -> candle_core::Result<[Tensor; 4]> {
    let c = |i| b.narrow(D::Minus1, i, 1)?.squeeze(D::Minus1);
    Ok([c(0)?, c(1)?, c(2)?, c(3)?])
}

/// IoU, enclosing-box width and height, and the union, shared by GIoU and CIoU.
struct Overlap {
    iou: Tensor,
    union: Tensor,
    cw: Tensor,
    ch: Tensor,
}

fn overlap(a: &[Tensor; 4], b: &[Tensor; 4]) -> candle_core::Result<Overlap> {
    let corners = |t: &[Tensor; 4]| -> candle_core::Result<[Tensor; 4]> {
        let (hw, hh) = ((&t[2] * 0.5)?, (&t[3] * 0.5)?);
        Ok([(&t[0] - &hw)?, (&t[1] - &hh)?, (&t[0] + hw)?, (&t[1] + hh)?])
    };
    let (ca, cb) = (corners(a)?, corners(b)?);
    let iw = (ca[2].minimum(&cb[2])? - ca[0].maximum(&cb[0])?)?.relu()?;
    let ih = (ca[3].minimum(&cb[3])? - ca[1].maximum(&cb[1])?)?.relu()?;
    let inter = (iw * ih)?;
    let union = (((&a[2] * &a[3])? + (&b[2] * &b[3])?)? - &inter)?.affine(1.0, EPS)?;
    let iou = inter.div(&union)?;
    let cw = (ca[2].maximum(&cb[2])? - ca[0].minimum(&cb[0])?)?;
    let ch = (ca[3].maximum(&cb[3])? - ca[1].minimum(&cb[1])?)?;
    Ok(Overlap { iou, union, cw, ch })
}

/// Generalised IoU (Rezatofighi et al. 2019) of boxes `a` and `b`, both `(..., 4)` as
/// `(x, y, w, h)` (centre and size, any consistent unit), giving `(...)`: `IoU - (C - U) / C`
/// with `C` the area of the smallest enclosing box and `U` the union. 1 for identical boxes,
/// negative for disjoint ones, in `(-1, 1]`; differentiable with candle's autograd.
pub fn box_giou(a: &Tensor, b: &Tensor) -> Result<Tensor, LossError> {
    let o = overlap(&xywh(a)?, &xywh(b)?)?;
    let c_area = (o.cw * o.ch)?.affine(1.0, EPS)?;
    let giou = (&o.iou - (c_area.sub(&o.union)?.div(&c_area))?)?;
    Ok(giou)
}

/// `atan(w / h)` for `w, h >= 0` with candle ops only (candle has no `atan`): two half-angle
/// steps `tan(t/2) = w / (h + sqrt(w^2 + h^2))` and `tan(t/4) = u / (1 + sqrt(1 + u^2))` bring
/// the angle below pi/8, where the odd Taylor series to `u^17` is exact to f32 rounding
/// (`4 * tan(pi/8)^19 / 19 < 1e-8`). No division by `h`, so `h = 0` is finite (pi/2).
fn atan_ratio(w: &Tensor, h: &Tensor) -> candle_core::Result<Tensor> {
    let r = (w.sqr()? + h.sqr()?)?.affine(1.0, EPS * EPS)?.sqrt()?;
    let u = w.div(&(h + r)?.affine(1.0, EPS)?)?;
    let u = u.div(&u.sqr()?.affine(1.0, 1.0)?.sqrt()?.affine(1.0, 1.0)?)?;
    let s = u.sqr()?;
    let coef = |n: i32| f64::from(if n % 2 == 0 { 1 } else { -1 }) / f64::from(2 * n + 1);
    let mut p = s.affine(coef(8), coef(7))?;
    for n in (0..7).rev() {
        p = p.mul(&s)?.affine(1.0, coef(n))?;
    }
    (u.mul(&p)? * 4.0)?.contiguous()
}

/// Complete IoU (Zheng et al. 2020) of boxes `a` and `b`, both `(..., 4)` as `(x, y, w, h)`,
/// giving `(...)`: `IoU - rho^2 / c^2 - alpha * v`, with `rho` the distance of the centres, `c`
/// the diagonal of the smallest enclosing box, `v = 4 / pi^2 * (atan(w_b / h_b) - atan(w_a /
/// h_a))^2` and `alpha = v / (1 - IoU + v)`; as in ultralytics' `bbox_iou`, `alpha` is treated
/// as a constant (detached). 1 for identical boxes.
pub fn box_ciou(a: &Tensor, b: &Tensor) -> Result<Tensor, LossError> {
    let (ta, tb) = (xywh(a)?, xywh(b)?);
    let o = overlap(&ta, &tb)?;
    let c2 = (o.cw.sqr()? + o.ch.sqr()?)?.affine(1.0, EPS)?;
    let rho2 = ((&ta[0] - &tb[0])?.sqr()? + (&ta[1] - &tb[1])?.sqr()?)?;
    let da = (atan_ratio(&tb[2], &tb[3])? - atan_ratio(&ta[2], &ta[3])?)?;
    let v = (da.sqr()? * (4.0 / (std::f64::consts::PI * std::f64::consts::PI)))?;
    let alpha = v.div(&(&v - &o.iou)?.affine(1.0, 1.0 + EPS)?)?.detach();
    let ciou = ((&o.iou - rho2.div(&c2)?)? - v.mul(&alpha)?)?;
    Ok(ciou)
}

/// The GIoU / CIoU box term of one layer (`kind` is not [`BoxLoss::Keras`]): `sum over responsible slots of obj * (2 - w*h) * (1 -
/// IoU')`, divided by m. `feats` is the raw output as `(m, A, 5+C, gh, gw)`, `y_true` the Keras
/// layout `(m, gh, gw, A, 5+C)`, `objects` the layer's object slots per image (checked against
/// `layer`). Only the responsible slots are decoded (gathered by those slots), so the raw sizes
/// of the other slots never reach `exp`.
pub(crate) fn box_term(
    feats: &Tensor,
    y_true: &Tensor,
    objects: &[Vec<u32>],
    layer: &Layer,
    kind: BoxLoss,
) -> Result<Tensor, LossError> {
    let Layer { m, a, gh, gw, .. } = *layer;
    let k = layer.k();
    let per_image = gh * gw * a;
    let n = m * per_image;
    let device = feats.device();
    let flat_y = y_true.reshape((n, k))?;
    // Batch-wide rows `b * per_image + s`, ascending as the slots are; within u32 (checked).
    let sel: Vec<u32> = objects
        .iter()
        .enumerate()
        .flat_map(|(b, slots)| {
            let first = (b * per_image) as u32;
            slots.iter().map(move |&s| first + s)
        })
        .collect();
    if sel.is_empty() {
        return Ok(Tensor::zeros((), DType::F32, device)?);
    }
    let ns = sel.len();
    let mut grid = Vec::with_capacity(2 * ns);
    let mut anchor = Vec::with_capacity(2 * ns);
    for &s in &sel {
        // Keras order: s = ((b * gh + j) * gw + i) * A + anchor.
        let s = s as usize;
        grid.extend([((s / a) % gw) as f32, ((s / (a * gw)) % gh) as f32]);
        anchor.extend(layer.anchors[s % a]);
    }
    let idx = Tensor::from_vec(sel, ns, device)?;
    let grid = Tensor::from_vec(grid, (ns, 2), device)?;
    let anchor = Tensor::from_vec(anchor, (ns, 2), device)?;
    let grid_wh = Tensor::from_vec(vec![gw as f32, gh as f32], (1, 2), device)?;
    let input_wh = Tensor::from_vec(
        vec![layer.input_w as f32, layer.input_h as f32],
        (1, 2),
        device,
    )?;
    let t = feats
        .narrow(2, 0, 4)?
        .permute((0, 3, 4, 1, 2))?
        .reshape((n, 4))?
        .index_select(&idx, 0)?;
    let pred_xy =
        (candle_nn::ops::sigmoid(&t.narrow(1, 0, 2)?)? + grid)?.broadcast_div(&grid_wh)?;
    let pred_wh = t
        .narrow(1, 2, 2)?
        .minimum(MAX_LOG_WH)?
        .exp()?
        .mul(&anchor)?
        .broadcast_div(&input_wh)?;
    let pred = Tensor::cat(&[pred_xy, pred_wh], 1)?;
    let ys = flat_y.index_select(&idx, 0)?.detach();
    let truth = ys.narrow(1, 0, 4)?;
    let scale = ys
        .narrow(1, 2, 1)?
        .mul(&ys.narrow(1, 3, 1)?)?
        .affine(-1.0, 2.0)?
        .mul(&ys.narrow(1, 4, 1)?)?
        .squeeze(1)?;
    debug_assert!(kind != BoxLoss::Keras, "box_term is for the IoU box losses");
    let iou = if kind == BoxLoss::Ciou {
        box_ciou(&pred, &truth)?
    } else {
        box_giou(&pred, &truth)?
    };
    Ok((iou.affine(-1.0, 1.0)?.mul(&scale)?.sum_all()? / m as f64)?)
}
