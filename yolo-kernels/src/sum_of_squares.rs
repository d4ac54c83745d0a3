//! `Σ w²` as one custom op, for the L2 kernel penalty: it keeps nothing in the gradient graph but
//! `w` itself.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::surface::generic_ops;

/// `Σ w²` as a scalar in the gradient graph of `w`.
///
/// On CPU f32 this is one custom op that saves nothing but `w` and whose backward, `2 g w`, is
/// computed from the *detached* kernel. candle's own `w.sqr()?.sum_all()` kept a copy of `w²` in
/// the graph, and its backward multiplies by the tracked variable, so every kernel's gradient
/// recorded a chain of six kernel-sized intermediates that lived as long as the gradient store:
/// for YOLOv3's 62 M parameters 0.25 GB of `w²` plus 1.5 GB next to the 0.25 GB of gradients.
/// Elsewhere the composed form is used.
pub fn sum_of_squares(w: &Tensor) -> Result<Tensor> {
    if w.device().is_cpu() && w.dtype() == DType::F32 && w.is_contiguous() && !generic_ops() {
        w.apply_op1(SumOfSquares)
    } else {
        w.sqr()?.sum_all()
    }
}

/// Elements per partial sum of [`SumOfSquares`]: fixed chunks keep the result independent of the
/// thread count.
const SQUARES_CHUNK: usize = 1 << 14;

/// `w -> Σ w²` (shape `()`), summed in f64 over fixed chunks.
struct SumOfSquares;

impl CustomOp1 for SumOfSquares {
    fn name(&self) -> &'static str {
        "yolo-sum-of-squares"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("sum_of_squares: expected f32 storage")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("sum_of_squares: expected a contiguous tensor")
        };
        let partial: Vec<f64> = data[start..end]
            .par_chunks(SQUARES_CHUNK)
            .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
            .collect();
        let total = partial.iter().sum::<f64>() as f32;
        Ok((CpuStorage::F32(vec![total]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // `w * 2g` equals candle's `(w * g) * 2` bit for bit; neither factor is tracked, so the
        // gradient holds no graph.
        let g2 = grad.detach().affine(2.0, 0.0)?;
        Ok(Some(arg.detach().broadcast_mul(&g2)?.detach()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The value and the gradient `2 w` of the custom op equal the composed form's.
    #[test]
    fn matches_the_composed_form_value_and_gradient() {
        let v: Vec<f32> = (0..40_000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let w = Var::from_vec(v, (200, 200), &Device::Cpu).unwrap();
        let fast = w.as_tensor().apply_op1(SumOfSquares).unwrap();
        let composed = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        let (a, b) = (
            fast.to_scalar::<f32>().unwrap(),
            composed.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        let g_fast = fast.backward().unwrap().get(&w).unwrap().clone();
        let g_composed = composed.backward().unwrap().get(&w).unwrap().clone();
        let d = (g_fast - g_composed)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
    }
}
