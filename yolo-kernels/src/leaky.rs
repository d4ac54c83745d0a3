//! Leaky ReLU as one fused CPU pass with a hand-written backward.
//!
//! The derivative is `1` for `x > 0` and `slope` for `x <= 0`, so at exactly 0 it is `slope`: this
//! is TensorFlow's `LeakyReluGrad` (`features > 0 ? 1 : alpha`), which keras-yolo3's
//! `LeakyReLU(alpha=0.1)` layers train with. (candle's `maximum(x, 0.1x)` would split the tie and
//! give 0.55 at 0.)

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::simd::{leaky_factor, with_simd};
use crate::storage::contiguous_f32;

/// Elements per rayon task for element-wise kernels: large enough to amortise scheduling.
pub(crate) const CHUNK: usize = 1 << 15;

/// `max(x, slope * x)` for `0 < slope < 1`.
pub(crate) struct LeakyReluOp {
    pub slope: f32,
}

impl CustomOp1 for LeakyReluOp {
    fn name(&self) -> &'static str {
        "yolo-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "leaky_relu input")?;
        let slope = self.slope;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                with_simd(|| {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = x * leaky_factor(x, slope);
                    }
                })
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // `res > 0` exactly when `x > 0`, since slope > 0.
        let grad = grad.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(
            &grad,
            &LeakyReluGradOp { slope: self.slope },
        )?))
    }
}

/// `(y, dy) -> dx = dy * (y > 0 ? 1 : slope)`.
pub(crate) struct LeakyReluGradOp {
    pub slope: f32,
}

impl CustomOp2 for LeakyReluGradOp {
    fn name(&self) -> &'static str {
        "yolo-leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, "leaky_relu output")?;
        let g = contiguous_f32(s2, l2, "leaky_relu output gradient")?;
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "leaky_relu grad: shapes {:?} and {:?} differ",
                l1.dims(),
                l2.dims()
            )
        }
        let slope = self.slope;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(CHUNK)
            .zip(y.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(dx, (y, g))| {
                with_simd(|| {
                    for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                        *d = g * leaky_factor(y, slope);
                    }
                })
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
