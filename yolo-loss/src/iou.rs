//! keras-yolo3's `box_iou` on centre-size boxes, batched by broadcasting.

use candle_core::Tensor;

use crate::LossError;

/// IoU of every box of `b1` with every box of `b2`, boxes as (x, y, w, h) (centre and size).
///
/// Broadcasting: `b1` is `(..., N, 4)` and `b2` is `(..., K, 4)`; the leading dimensions `...`
/// must broadcast against each other (e.g. `(m, N, 4)` with `(m, K, 4)`, or with `(K, 4)` as in
/// keras-yolo3, where `b2` has no batch axis). The result is `(..., N, K)`.
///
/// Unlike keras-yolo3 the union is floored at `f32::MIN_POSITIVE`, so two empty boxes give IoU 0
/// instead of NaN; every other value is unchanged.
pub fn box_iou(b1: &Tensor, b2: &Tensor) -> Result<Tensor, LossError> {
    for (t, what) in [(b1, "box_iou b1"), (b2, "box_iou b2")] {
        if t.rank() < 2 || t.dims()[t.rank() - 1] != 4 {
            return Err(LossError::Shape {
                what: what.to_string(),
                expected: "(..., n, 4) as x, y, w, h".to_string(),
                got: t.dims().to_vec(),
            });
        }
    }
    // (..., N, 1, 4) against (..., 1, K, 4).
    let b1 = b1.unsqueeze(b1.rank() - 1)?;
    let b2 = b2.unsqueeze(b2.rank() - 2)?;
    let last = b1.rank() - 1;
    let (b1_xy, b1_wh) = (b1.narrow(last, 0, 2)?, b1.narrow(last, 2, 2)?);
    let (b2_xy, b2_wh) = (
        b2.narrow(b2.rank() - 1, 0, 2)?,
        b2.narrow(b2.rank() - 1, 2, 2)?,
    );
    let b1_half = (&b1_wh / 2.0)?;
    let b2_half = (&b2_wh / 2.0)?;
    let b1_mins = (&b1_xy - &b1_half)?;
    let b1_maxes = (&b1_xy + &b1_half)?;
    let b2_mins = (&b2_xy - &b2_half)?;
    let b2_maxes = (&b2_xy + &b2_half)?;
    let inter_mins = b1_mins.broadcast_maximum(&b2_mins)?;
    let inter_maxes = b1_maxes.broadcast_minimum(&b2_maxes)?;
    let inter_wh = (inter_maxes - inter_mins)?.relu()?;
    let area = |wh: &Tensor| -> candle_core::Result<Tensor> {
        let r = wh.rank() - 1;
        wh.narrow(r, 0, 1)?.mul(&wh.narrow(r, 1, 1)?)?.squeeze(r)
    };
    let inter_area = area(&inter_wh)?;
    let b1_area = area(&b1_wh)?;
    let b2_area = area(&b2_wh)?;
    let union = b1_area
        .broadcast_add(&b2_area)?
        .broadcast_sub(&inter_area)?
        .maximum(f32::MIN_POSITIVE as f64)?;
    Ok(inter_area.broadcast_div(&union)?)
}
