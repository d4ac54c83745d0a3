//! The fused CPU `yolo_loss` of one layer: one pass over the raw output computes all four terms,
//! and a `CustomOp1` with its own backward writes the gradient in one pass too.
//!
//! Why: only the objectness channel of every slot and the channels of the few assigned slots
//! contribute (every other term is multiplied by `object_mask = 0`), so the loss touches a small
//! part of the raw output; a composition of candle ops would run ~20 full-size elementwise
//! passes over it instead. Same formulas as [`crate::tensor_loss`], accumulated in f64.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::layer::{Layer, WH_RATIO_FLOOR};
use crate::LossError;

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("yolo-loss cpu path: tensor is not on the CPU")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("yolo-loss cpu path: tensor is not contiguous")
    };
    f(&cpu.as_slice::<f32>()?[start..end])
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + e)` for `e` in `[0, 1]`, as accurate as `ln_1p` (a few ulp, Kahan's trick) at the
/// cost of one `ln`: glibc's `log1pf` costs about four `expf` and dominated the forward pass.
#[inline]
fn ln_1p(e: f32) -> f32 {
    let u = 1.0 + e;
    if u == 1.0 {
        e
    } else {
        u.ln() * (e / (u - 1.0))
    }
}

/// `max(x, 0) - x*z + log(1 + exp(-|x|))`.
#[inline]
fn bce(x: f32, z: f32) -> f32 {
    x.max(0.0) - x * z + ln_1p((-x.abs()).exp())
}

/// Per-slot targets of an assigned slot, as keras-yolo3 computes them in float32.
struct Targets {
    scale: f32,
    xy: [f32; 2],
    wh: [f32; 2],
}

impl Layer {
    #[inline]
    fn targets(&self, y: &[f32], j: usize, i: usize, a: usize) -> Targets {
        let [aw, ah] = self.anchors[a];
        let ratio = |v: f32, anchor: f32, input: usize| {
            (v / anchor * input as f32).max(WH_RATIO_FLOOR).ln()
        };
        Targets {
            scale: 2.0 - y[2] * y[3],
            xy: [
                y[0] * self.gw as f32 - i as f32,
                y[1] * self.gh as f32 - j as f32,
            ],
            wh: [ratio(y[2], aw, self.input_w), ratio(y[3], ah, self.input_h)],
        }
    }
}

/// Best IoU of every decoded prediction with the true boxes of the same image and layer, and the
/// ignore mask (`best < thresh`), both `(m, gh, gw, A)`. `-inf` where the image has no box.
pub(crate) fn ignore_mask(
    raw: &[f32],
    y: &[f32],
    layer: &Layer,
    thresh: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (a_n, k, gh, gw) = (layer.a, layer.k(), layer.gh, layer.gw);
    let hw = gh * gw;
    let per_image = hw * a_n;
    let mut best = vec![f32::NEG_INFINITY; layer.m * per_image];
    best.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(b, best)| {
            let yb = &y[b * per_image * k..(b + 1) * per_image * k];
            // True boxes as (min x, min y, max x, max y, area).
            let boxes: Vec<[f32; 5]> = yb
                .chunks_exact(k)
                .filter(|s| s[4] != 0.0)
                .map(|s| {
                    let (hw_, hh) = (s[2] / 2.0, s[3] / 2.0);
                    [s[0] - hw_, s[1] - hh, s[0] + hw_, s[1] + hh, s[2] * s[3]]
                })
                .collect();
            if boxes.is_empty() {
                return;
            }
            let rb = &raw[b * a_n * k * hw..(b + 1) * a_n * k * hw];
            for a in 0..a_n {
                let [aw, ah] = layer.anchors[a];
                let ch = |f: usize| &rb[(a * k + f) * hw..(a * k + f + 1) * hw];
                let (tx, ty, tw, th) = (ch(0), ch(1), ch(2), ch(3));
                for p in 0..hw {
                    let (j, i) = (p / gw, p % gw);
                    let px = (sigmoid(tx[p]) + i as f32) / gw as f32;
                    let py = (sigmoid(ty[p]) + j as f32) / gh as f32;
                    let pw = tw[p].exp() * aw / layer.input_w as f32;
                    let ph = th[p].exp() * ah / layer.input_h as f32;
                    let (x0, y0, x1, y1) =
                        (px - pw / 2.0, py - ph / 2.0, px + pw / 2.0, py + ph / 2.0);
                    let area = pw * ph;
                    let mut m = f32::NEG_INFINITY;
                    for bx in &boxes {
                        let iw = (x1.min(bx[2]) - x0.max(bx[0])).max(0.0);
                        let ih = (y1.min(bx[3]) - y0.max(bx[1])).max(0.0);
                        let inter = iw * ih;
                        let union = (area + bx[4] - inter).max(f32::MIN_POSITIVE);
                        let iou = inter / union;
                        // NaN (inf - inf from |logit| ~ 100) counts as no overlap.
                        m = m.max(if iou.is_nan() { 0.0 } else { iou });
                    }
                    best[p * a_n + a] = m;
                }
            }
        });
    let mask = best.iter().map(|&v| f32::from(v < thresh)).collect();
    (mask, best)
}

/// The fused loss of one layer: input the contiguous raw output `(m, A*(5+C), gh, gw)`, output
/// `[xy, wh, confidence, class]`, each summed and divided by m.
pub(crate) struct LayerLossOp {
    pub layer: Layer,
    /// `y_true` of the layer, contiguous Keras layout, CPU, f32.
    pub y_true: Tensor,
    /// The detached ignore mask, `(m, gh, gw, A)`.
    pub ignore: Arc<Vec<f32>>,
    /// Label smoothing of the class targets (0: keras-yolo3).
    pub label_smoothing: f32,
}

impl LayerLossOp {
    /// The class target of a `y_true` class value: `y * (1 - eps) + eps / 2`, or `y` itself when
    /// `eps` is 0 (so the default loss is bit-identical to keras-yolo3's).
    #[inline]
    fn class_target(&self, y: f32) -> f32 {
        let eps = self.label_smoothing;
        if eps == 0.0 {
            y
        } else {
            y * (1.0 - eps) + 0.5 * eps
        }
    }

    /// The four sums over all images, each divided by m.
    fn sums(&self, raw: &[f32], y: &[f32]) -> [f64; 4] {
        let l = &self.layer;
        let (a_n, k, hw) = (l.a, l.k(), l.gh * l.gw);
        let per_image = a_n * k * hw;
        let parts = (0..l.m)
            .into_par_iter()
            .map(|b| {
                let rb = &raw[b * per_image..(b + 1) * per_image];
                let mut s = [0f64; 4];
                for p in 0..hw {
                    let (j, i) = (p / l.gw, p % l.gw);
                    for a in 0..a_n {
                        let slot = (b * hw + p) * a_n + a;
                        let ys = &y[slot * k..(slot + 1) * k];
                        let ign = self.ignore[slot];
                        let x = |f: usize| rb[(a * k + f) * hw + p];
                        let obj = ys[4];
                        let b4 = bce(x(4), obj);
                        s[2] += (obj * b4 + (1.0 - obj) * b4 * ign) as f64;
                        if obj == 0.0 {
                            continue;
                        }
                        let t = l.targets(ys, j, i, a);
                        let os = obj * t.scale;
                        s[0] += (os * (bce(x(0), t.xy[0]) + bce(x(1), t.xy[1]))) as f64;
                        let (dw, dh) = (t.wh[0] - x(2), t.wh[1] - x(3));
                        s[1] += (os * 0.5 * (dw * dw + dh * dh)) as f64;
                        let mut cls = 0f32;
                        for c in 0..l.c {
                            cls += bce(x(5 + c), self.class_target(ys[5 + c]));
                        }
                        s[3] += (obj * cls) as f64;
                    }
                }
                s
            })
            .reduce(
                || [0f64; 4],
                |x, y| [x[0] + y[0], x[1] + y[1], x[2] + y[2], x[3] + y[3]],
            );
        let m = l.m as f64;
        parts.map(|v| v / m)
    }

    /// d(sum of g[t] * term t)/d(raw), `g` already divided by m.
    fn grad(&self, raw: &[f32], y: &[f32], g: [f32; 4]) -> Vec<f32> {
        let l = &self.layer;
        let (a_n, k, hw) = (l.a, l.k(), l.gh * l.gw);
        let per_image = a_n * k * hw;
        let mut out = vec![0f32; raw.len()];
        out.par_chunks_mut(per_image)
            .enumerate()
            .for_each(|(b, ob)| {
                let rb = &raw[b * per_image..(b + 1) * per_image];
                for p in 0..hw {
                    let (j, i) = (p / l.gw, p % l.gw);
                    for a in 0..a_n {
                        let slot = (b * hw + p) * a_n + a;
                        let ys = &y[slot * k..(slot + 1) * k];
                        let ign = self.ignore[slot];
                        let at = |f: usize| (a * k + f) * hw + p;
                        let obj = ys[4];
                        let x4 = rb[at(4)];
                        ob[at(4)] = (sigmoid(x4) - obj) * (obj + (1.0 - obj) * ign) * g[2];
                        if obj == 0.0 {
                            continue;
                        }
                        let t = l.targets(ys, j, i, a);
                        let os = obj * t.scale;
                        for f in 0..2 {
                            ob[at(f)] = os * (sigmoid(rb[at(f)]) - t.xy[f]) * g[0];
                            ob[at(2 + f)] = os * (rb[at(2 + f)] - t.wh[f]) * g[1];
                        }
                        for c in 0..l.c {
                            let f = 5 + c;
                            let z = self.class_target(ys[f]);
                            ob[at(f)] = obj * (sigmoid(rb[at(f)]) - z) * g[3];
                        }
                    }
                }
            });
        out
    }
}

impl CustomOp1 for LayerLossOp {
    fn name(&self) -> &'static str {
        "yolo-layer-loss"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("yolo-layer-loss: raw output must be contiguous")
        };
        let raw = &storage.as_slice::<f32>()?[start..end];
        let sums = with_f32(&self.y_true, |y| Ok(self.sums(raw, y)))?;
        let v: Vec<f32> = sums.iter().map(|&s| s as f32).collect();
        Ok((CpuStorage::F32(v), Shape::from(4)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g: Vec<f32> = grad_res.to_vec1()?;
        let inv_m = 1.0 / self.layer.m as f32;
        let g = [g[0] * inv_m, g[1] * inv_m, g[2] * inv_m, g[3] * inv_m];
        let grad = with_f32(arg, |raw| {
            with_f32(&self.y_true, |y| Ok(self.grad(raw, y, g)))
        })?;
        Ok(Some(Tensor::from_vec(grad, arg.shape(), arg.device())?))
    }
}

/// Per-layer results of the fused path: components `(4,)`, ignore mask and best IoU
/// `(m, gh, gw, A)`.
pub(crate) fn layer_loss(
    raw: &Tensor,
    y_true: &Tensor,
    layer: &Layer,
    ignore_thresh: f32,
    label_smoothing: f32,
) -> Result<(Tensor, Tensor, Tensor), LossError> {
    let raw = raw.contiguous()?;
    let y_true = y_true.detach().contiguous()?;
    let (mask, best) = with_f32(&raw, |r| {
        with_f32(&y_true, |y| Ok(ignore_mask(r, y, layer, ignore_thresh)))
    })?;
    let shape = (layer.m, layer.gh, layer.gw, layer.a);
    let device = raw.device();
    let mask_t = Tensor::from_slice(&mask, shape, device)?;
    let best_t = Tensor::from_vec(best, shape, device)?;
    let op = LayerLossOp {
        layer: layer.clone(),
        y_true,
        ignore: Arc::new(mask),
        label_smoothing,
    };
    let comps = raw.apply_op1(op)?;
    Ok((comps, mask_t, best_t))
}

#[cfg(test)]
mod tests {
    use super::{bce, ln_1p};

    /// The one-`ln` log1p agrees with f64's `ln_1p` to a few ulp over [0, 1], tiny values included.
    #[test]
    fn fast_ln_1p_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=100_000 {
            let e = if i < 1000 {
                1e-12f32 * (i as f32 + 1.0).powi(3)
            } else {
                i as f32 / 100_000.0
            };
            let want = (e as f64).ln_1p();
            let rel = ((ln_1p(e) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "worst relative error {worst}"
        );
    }

    /// Stable form: finite and exact limits for saturated logits, where a naive
    /// `log(sigmoid(x))` gives infinities and NaNs.
    #[test]
    fn bce_is_stable_for_large_logits() {
        // log(1 + e^-100) = 3.7e-44, a denormal: right, and no overflow.
        assert!((0.0..1e-40).contains(&bce(100.0, 1.0)));
        assert!((0.0..1e-40).contains(&bce(-100.0, 0.0)));
        assert_eq!(bce(100.0, 0.0), 100.0);
        assert_eq!(bce(-100.0, 1.0), 100.0);
        assert!((bce(0.0, 0.3) - std::f32::consts::LN_2).abs() < 1e-7);
    }
}
