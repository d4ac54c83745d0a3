//! In-place CPU kernels for [`crate::adam::Adam`]: the moment and parameter updates as three
//! passes over contiguous `f32` buffers, instead of eleven candle tensor ops that each allocate a
//! fresh buffer (for YOLOv3's 61.5 M parameters that is ~2.7 GB of new pages per step).
//!
//! Every kernel evaluates exactly the expression, in the same order and precision, as the tensor
//! path it replaces (`affine` computes `x * mul + add` in `f32`), so both paths give bit-identical
//! parameters and moments; a test pins that. Other devices, dtypes or non-contiguous layouts keep
//! the tensor path (the caller checks [`fast_path`]).

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

/// Elements per rayon task: large enough to amortise scheduling, small enough to split a layer.
const CHUNK: usize = 1 << 15;

/// Whether `t` can take the in-place CPU path: an `f32` CPU tensor with a contiguous layout.
pub fn fast_path(t: &Tensor) -> bool {
    t.device().is_cpu()
        && t.dtype() == candle_core::DType::F32
        && t.is_contiguous()
        && !yolo_model::ops::generic_ops()
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("adam: {what} is not a contiguous f32 CPU tensor"),
    }
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adam: {what} is not a contiguous f32 CPU tensor"),
    }
}

/// `m = decay * m + rest * g` (or `g * g` when `square`), in place on `m`.
pub struct MomentUpdate {
    /// `beta1` or `beta2`.
    pub decay: f32,
    /// `1 - decay`, computed in `f64` then rounded (as the tensor path's `affine` argument).
    pub rest: f32,
    /// Accumulate the squared gradient (second moment).
    pub square: bool,
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let m = slice_mut(s1, l1, "moment")?;
        let g = slice(s2, l2, "gradient")?;
        if m.len() != g.len() {
            candle_core::bail!("adam: moment has {} values, gradient {}", m.len(), g.len());
        }
        let (decay, rest, square) = (self.decay, self.rest, self.square);
        m.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    // The tensor path: `m.affine(decay, 0) + g.affine(rest, 0)`, with `g.sqr()`
                    // first for the second moment.
                    let g = if square { g * g } else { g };
                    *m = (*m * decay + 0.0) + (g * rest + 0.0);
                }
            });
        Ok(())
    }
}

/// `p = p - lr_t * m / (sqrt(v) + eps)`, in place on `p`.
pub struct ParamUpdate {
    /// The bias-corrected step size of this iteration.
    pub lr_t: f32,
    /// Keras' epsilon, added to the uncorrected `sqrt(v)`.
    pub eps: f32,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adam-param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1, "parameter")?;
        let m = slice(s2, l2, "first moment")?;
        let v = slice(s3, l3, "second moment")?;
        if p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!(
                "adam: parameter has {} values, moments {} and {}",
                p.len(),
                m.len(),
                v.len()
            );
        }
        let (lr_t, eps) = (self.lr_t, self.eps);
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(p, (m, v))| {
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    // The tensor path: `denom = sqrt(v).affine(1, eps)`,
                    // `update = (m / denom).affine(lr_t, 0)`, `p - update`.
                    let denom = v.sqrt() * 1.0 + eps;
                    *p -= (m / denom) * lr_t + 0.0;
                }
            });
        Ok(())
    }
}

/// The first non-finite value of a contiguous `f32` CPU tensor, scanned in place (no copy, no
/// temporary); `None` when every value is finite.
pub fn first_non_finite(t: &Tensor) -> Result<Option<f32>> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(s) = &*storage else {
        candle_core::bail!("adam: gradient is not on the CPU");
    };
    let v = slice(s, layout, "gradient")?;
    Ok(v.par_chunks(CHUNK)
        .find_map_first(|c| c.iter().copied().find(|x| !x.is_finite())))
}
