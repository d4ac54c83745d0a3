//! Tiny YOLOv3's 2x2 stride-2 max pool as one CPU pass, with a backward that sends each window's
//! gradient to its first maximum.
//!
//! candle 0.11's `max_pool2d` backward builds the gradient from six full-size temporaries
//! (upsample, compare, cast, average pool, divide, multiply) and splits a window's gradient
//! equally between tied maxima. This one recomputes each window's maximum from the input and
//! writes the gradient once; ties go to the first maximum in row-major window order, as in
//! TensorFlow's `MaxPoolGrad`, which keras-yolo3 trains with.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::simd::with_simd;
use crate::storage::contiguous_f32;

/// The `(n, c, h, w)` of a contiguous NCHW layout, or an error naming `what`.
fn nchw(l: &Layout, what: &str) -> Result<(usize, usize, usize, usize)> {
    match *l.dims() {
        [n, c, h, w] => Ok((n, c, h, w)),
        ref d => candle_core::bail!("{what}: expected an NCHW tensor, got shape {d:?}"),
    }
}

/// The index (0..4, row-major: top-left, top-right, bottom-left, bottom-right) of the first
/// maximum of a 2x2 window, and that maximum. A NaN never wins (as with `>`), so a window of NaNs
/// keeps the top-left element, and the forward value is then that NaN.
#[inline(always)]
fn window_argmax(a: f32, b: f32, c: f32, d: f32) -> (usize, f32) {
    let (mut k, mut m) = (0, a);
    if b > m {
        (k, m) = (1, b);
    }
    if c > m {
        (k, m) = (2, c);
    }
    if d > m {
        (k, m) = (3, d);
    }
    (k, m)
}

/// 2x2 max pool with stride 2 over the last two axes of NCHW `x`; odd sizes drop the last row or
/// column, as candle's `max_pool2d(2)` does.
pub(crate) struct MaxPool2x2Op;

impl CustomOp1 for MaxPool2x2Op {
    fn name(&self) -> &'static str {
        "yolo-max-pool-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "max_pool2x2 input")?;
        let (n, c, h, w) = nchw(l, "max_pool2x2 input")?;
        let (oh, ow) = (h / 2, w / 2);
        let mut y = vec![0f32; n * c * oh * ow];
        if oh > 0 && ow > 0 {
            y.par_chunks_mut(oh * ow)
                .zip(x.par_chunks(h * w))
                .for_each(|(y, x)| {
                    with_simd(|| {
                        for (i, yr) in y.chunks_exact_mut(ow).enumerate() {
                            let r0 = &x[2 * i * w..2 * i * w + 2 * ow];
                            let r1 = &x[(2 * i + 1) * w..(2 * i + 1) * w + 2 * ow];
                            for ((o, p), q) in yr
                                .iter_mut()
                                .zip(r0.chunks_exact(2))
                                .zip(r1.chunks_exact(2))
                            {
                                *o = window_argmax(p[0], p[1], q[0], q[1]).1;
                            }
                        }
                    })
                });
        }
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&grad, &MaxPool2x2GradOp)?))
    }
}

/// `(x, dy) -> dx`: each window's `dy` at its first maximum in `x`, zero elsewhere.
pub(crate) struct MaxPool2x2GradOp;

impl CustomOp2 for MaxPool2x2GradOp {
    fn name(&self) -> &'static str {
        "yolo-max-pool-2x2-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "max_pool2x2 input")?;
        let g = contiguous_f32(s2, l2, "max_pool2x2 output gradient")?;
        let (n, c, h, w) = nchw(l1, "max_pool2x2 input")?;
        let (oh, ow) = (h / 2, w / 2);
        if l2.dims() != [n, c, oh, ow] {
            candle_core::bail!(
                "max_pool2x2 grad: output gradient {:?} does not match input {:?}",
                l2.dims(),
                l1.dims()
            )
        }
        // Zero-filled, so the row and column an odd size drops get no gradient.
        let mut dx = vec![0f32; x.len()];
        if oh > 0 && ow > 0 {
            dx.par_chunks_mut(h * w)
                .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
                .for_each(|(dx, (x, g))| {
                    with_simd(|| {
                        for (i, gr) in g.chunks_exact(ow).enumerate() {
                            let (top, bottom) = dx[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
                            let r0 = &x[2 * i * w..2 * i * w + 2 * ow];
                            let r1 = &x[(2 * i + 1) * w..(2 * i + 1) * w + 2 * ow];
                            for (j, &gv) in gr.iter().enumerate() {
                                let (p, q) = (&r0[2 * j..2 * j + 2], &r1[2 * j..2 * j + 2]);
                                let (k, _) = window_argmax(p[0], p[1], q[0], q[1]);
                                let row = if k < 2 { &mut *top } else { &mut *bottom };
                                row[2 * j + (k & 1)] = gv;
                            }
                        }
                    })
                });
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_maximum_wins_and_nan_never_does() {
        assert_eq!(window_argmax(1.0, 3.0, 3.0, 2.0), (1, 3.0));
        assert_eq!(window_argmax(5.0, 5.0, 5.0, 5.0), (0, 5.0));
        assert_eq!(window_argmax(-1.0, -2.0, -3.0, -0.5), (3, -0.5));
        assert_eq!(window_argmax(0.0, f32::NAN, 1.0, f32::NAN).0, 2);
    }

    #[test]
    fn the_generic_path_agrees_with_the_kernel_ties_included() -> Result<()> {
        use candle_core::{Device, Var};
        for (dims, tied) in [
            ((2usize, 3usize, 6usize, 8usize), false),
            ((1, 2, 5, 7), false),
            ((2, 2, 6, 6), true),
        ] {
            let n = dims.0 * dims.1 * dims.2 * dims.3;
            // Distinct values, or values from {0, 1, 2} with many ties in every pattern.
            let xs: Vec<f32> = (0..n)
                .map(|i| {
                    if tied {
                        ((i * 7 + i / 5) % 3) as f32
                    } else {
                        ((i * 7919) % n) as f32 * 0.01
                    }
                })
                .collect();
            let x = Var::from_vec(xs, dims, &Device::Cpu)?;
            let fast = x.as_tensor().apply_op1(MaxPool2x2Op)?;
            let generic = crate::surface::max_pool2x2_generic(x.as_tensor())?;
            assert_eq!(
                fast.flatten_all()?.to_vec1::<f32>()?,
                generic.flatten_all()?.to_vec1::<f32>()?
            );
            let r = Tensor::arange(1f32, fast.elem_count() as f32 + 1.0, &Device::Cpu)?
                .reshape(fast.dims())?;
            let g_fast = (&fast * &r)?.sum_all()?.backward()?;
            let g_generic = (&generic * &r)?.sum_all()?.backward()?;
            let (a, b) = (
                g_fast.get(x.as_tensor()).expect("fast gradient"),
                g_generic.get(x.as_tensor()).expect("generic gradient"),
            );
            let (a, b) = (
                a.flatten_all()?.to_vec1::<f32>()?,
                b.flatten_all()?.to_vec1::<f32>()?,
            );
            assert_eq!(a, b, "{dims:?} tied {tied}");
            // Each window's gradient reaches one element, so the sums agree.
            let sum_r: f32 = r.flatten_all()?.to_vec1::<f32>()?.iter().sum();
            assert_eq!(a.iter().sum::<f32>(), sum_r);
        }
        Ok(())
    }
}
