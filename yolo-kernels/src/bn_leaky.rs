//! Batch normalisation fused with leaky ReLU, forward and hand-written backward, in two passes
//! over the NCHW activations each way (candle's composed version needs a transpose copy and about
//! a dozen element-wise tensors per layer, each with its own backward).
//!
//! * Training: `y = leaky(gamma * (x - mean) / sqrt(var + eps) + beta)` with the batch mean and the
//!   biased batch variance per channel; gradients flow through the batch statistics.
//! * Inference (frozen BN folded to a per-channel affine map): `y = leaky(scale * x + shift)`.
//!
//! The leaky derivative is taken from the output (`y > 0 ? 1 : slope`), as in `leaky.rs`.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::simd::{leaky_factor, with_simd};
use crate::storage::contiguous_f32;

/// `(n, c, hw)` of an NCHW layout whose per-channel parameters have `c` elements.
fn nc_hw(x: &Layout, p: &Layout, what: &str) -> Result<(usize, usize, usize)> {
    let &[n, c, h, w] = x.dims() else {
        bail!("{what}: expected an NCHW tensor, got {:?}", x.dims())
    };
    if p.shape().elem_count() != c {
        bail!(
            "{what}: {c} channels but per-channel parameters of shape {:?}",
            p.dims()
        )
    }
    Ok((n, c, h * w))
}

/// Sum of a slice with 8 independent f32 lanes (vectorisable), returned as f64.
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&a| f(a) as f64).sum();
    for ch in chunks {
        for i in 0..8 {
            acc[i] += f(ch[i]);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest
}

/// Per-channel sums over the `n` blocks of `hw` values of channel `ch`.
fn channel_sum(
    x: &[f32],
    c: usize,
    hw: usize,
    n: usize,
    ch: usize,
    f: impl Fn(f32) -> f32 + Copy,
) -> f64 {
    (0..n)
        .map(|b| lane_sum(&x[(b * c + ch) * hw..][..hw], f))
        .sum()
}

/// Writes `leaky(scale[ch] * x + shift[ch])` for every (n, c) block, in parallel.
fn affine_leaky(
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    c: usize,
    hw: usize,
    slope: f32,
) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(i, (y, x))| {
            let (a, s) = (scale[i % c], shift[i % c]);
            with_simd(|| {
                for (y, &x) in y.iter_mut().zip(x) {
                    let z = a * x + s;
                    *y = z * leaky_factor(z, slope);
                }
            })
        });
    y
}

/// Batch statistics of a training forward pass: per-channel mean and biased variance.
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// `(x, gamma, beta) -> y`, training mode; the batch statistics go to `stats` for the caller's
/// moving averages and for the backward pass.
pub(crate) struct BnLeakyTrainOp {
    pub eps: f32,
    pub slope: f32,
    pub stats: Arc<Mutex<Option<BatchStats>>>,
}

impl BnLeakyTrainOp {
    fn stats(&self) -> Result<BatchStats> {
        match self.stats.lock() {
            Ok(s) => match s.as_ref() {
                Some(s) => Ok(s.clone()),
                None => bail!("batch_norm_leaky: backward before forward"),
            },
            Err(_) => bail!("batch_norm_leaky: statistics lock poisoned"),
        }
    }
}

impl CustomOp3 for BnLeakyTrainOp {
    fn name(&self) -> &'static str {
        "yolo-batch-norm-leaky-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "batch_norm_leaky input")?;
        let gamma = contiguous_f32(s2, l2, "batch_norm_leaky gamma")?;
        let beta = contiguous_f32(s3, l3, "batch_norm_leaky beta")?;
        let (n, c, hw) = nc_hw(l1, l2, "batch_norm_leaky")?;
        nc_hw(l1, l3, "batch_norm_leaky")?;
        let count = (n * hw) as f64;
        if n * hw < 2 {
            bail!(
                "batch_norm_leaky: training needs more than one value per channel, got {:?}",
                l1.dims()
            )
        }
        let (mean, var): (Vec<f32>, Vec<f32>) = (0..c)
            .into_par_iter()
            .map(|ch| {
                with_simd(|| {
                    let mean = channel_sum(x, c, hw, n, ch, |v| v) / count;
                    let m = mean as f32;
                    let var = channel_sum(x, c, hw, n, ch, |v| (v - m) * (v - m)) / count;
                    (mean as f32, var as f32)
                })
            })
            .unzip();
        let scale: Vec<f32> = (0..c)
            .map(|ch| gamma[ch] / (var[ch] + self.eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
        let y = affine_leaky(x, &scale, &shift, c, hw, self.slope);
        match self.stats.lock() {
            Ok(mut s) => *s = Some(BatchStats { mean, var }),
            Err(_) => bail!("batch_norm_leaky: statistics lock poisoned"),
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self.stats()?;
        let c = gamma.elem_count();
        let mut packed_params = Vec::with_capacity(3 * c);
        packed_params.extend(&stats.mean);
        packed_params.extend(stats.var.iter().map(|v| 1.0 / (v + self.eps).sqrt()));
        packed_params.extend(gamma.flatten_all()?.to_vec1::<f32>()?);
        let grad = grad.contiguous()?;
        let op = BnLeakyGradOp {
            slope: self.slope,
            params: packed_params,
        };
        let packed = x.apply_op3_no_bwd(res, &grad, &op)?;
        split_packed(&packed, x, gamma)
    }
}

/// Splits `[dx, dgamma, dbeta]` packed in one buffer. The small gradients are copied out into
/// buffers of their own so that they do not keep the activation-sized buffer alive in the
/// gradient store (`Tensor::copy` would not do: it clones the whole storage behind a view, which
/// cost two activation-sized copies per layer).
fn split_packed(
    packed: &Tensor,
    x: &Tensor,
    p: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (len, c) = (x.elem_count(), p.elem_count());
    let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
    let small = |offset: usize| -> Result<Tensor> {
        let v = packed.narrow(0, offset, c)?.to_vec1::<f32>()?;
        Tensor::from_vec(v, p.shape(), p.device())
    };
    Ok((Some(dx), Some(small(len)?), Some(small(len + c)?)))
}

/// The three same-shape NCHW inputs of a fused op's gradient (the op's input, its output and the
/// output gradient) as contiguous f32 slices, with the batch, channel and plane sizes.
struct GradInputs<'a> {
    x: &'a [f32],
    y: &'a [f32],
    g: &'a [f32],
    n: usize,
    c: usize,
    hw: usize,
}

impl<'a> GradInputs<'a> {
    /// Reads the inputs of the gradient op of `name`, checking they are f32, contiguous, NCHW and
    /// of one shape.
    fn read(
        name: &str,
        (s1, l1): (&'a CpuStorage, &Layout),
        (s2, l2): (&'a CpuStorage, &Layout),
        (s3, l3): (&'a CpuStorage, &Layout),
    ) -> Result<Self> {
        let x = contiguous_f32(s1, l1, &format!("{name} input"))?;
        let y = contiguous_f32(s2, l2, &format!("{name} output"))?;
        let g = contiguous_f32(s3, l3, &format!("{name} output gradient"))?;
        if l1.dims() != l2.dims() || l1.dims() != l3.dims() {
            bail!(
                "{name} grad: shapes {:?} {:?} {:?} differ",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let &[n, c, h, w] = l1.dims() else {
            bail!("{name} grad: expected NCHW, got {:?}", l1.dims())
        };
        Ok(Self {
            x,
            y,
            g,
            n,
            c,
            hw: h * w,
        })
    }
}

/// `(x, y, dy) -> [dx, dgamma, dbeta]` for the training-mode op; `params` holds mean, inv_std and
/// gamma per channel.
struct BnLeakyGradOp {
    slope: f32,
    params: Vec<f32>,
}

impl CustomOp3 for BnLeakyGradOp {
    fn name(&self) -> &'static str {
        "yolo-batch-norm-leaky-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let GradInputs { x, y, g, n, c, hw } =
            GradInputs::read("batch_norm_leaky", (s1, l1), (s2, l2), (s3, l3))?;
        if self.params.len() != 3 * c {
            bail!(
                "batch_norm_leaky grad: {} parameters for {c} channels",
                self.params.len()
            )
        }
        let (mean, inv_std, gamma) = (
            &self.params[..c],
            &self.params[c..2 * c],
            &self.params[2 * c..],
        );
        let slope = self.slope;
        // Pass 1: per channel, sum(dz) and sum(dz * xhat), dz = dy * leaky'(y).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, is) = (mean[ch], inv_std[ch]);
                let (mut sdz, mut sdzx) = (0f64, 0f64);
                for b in 0..n {
                    let off = (b * c + ch) * hw;
                    let (xs, ys, gs) = (&x[off..][..hw], &y[off..][..hw], &g[off..][..hw]);
                    // Eight f32 lanes per image and channel (lane l takes elements 8i + l, the
                    // tail goes to lane 0), summed in f64 afterwards.
                    let (a, bb) = with_simd(|| {
                        let (mut a, mut bb) = ([0f32; 8], [0f32; 8]);
                        let blocks = xs
                            .chunks_exact(8)
                            .zip(ys.chunks_exact(8))
                            .zip(gs.chunks_exact(8));
                        for ((xc, yc), gc) in blocks {
                            for l in 0..8 {
                                let dz = gc[l] * leaky_factor(yc[l], slope);
                                a[l] += dz;
                                bb[l] += dz * (xc[l] - m);
                            }
                        }
                        for j in hw / 8 * 8..hw {
                            let dz = gs[j] * leaky_factor(ys[j], slope);
                            a[0] += dz;
                            bb[0] += dz * (xs[j] - m);
                        }
                        (a, bb)
                    });
                    sdz += a.iter().map(|&v| v as f64).sum::<f64>();
                    sdzx += bb.iter().map(|&v| v as f64).sum::<f64>();
                }
                (sdz, sdzx * is as f64)
            })
            .collect();
        let count = (n * hw) as f32;
        // dx = gamma * inv_std * (dz - mean(dz) - xhat * mean(dz * xhat))
        let mut out = vec![0f32; n * c * hw + 2 * c];
        let (dx, dp) = out.split_at_mut(n * c * hw);
        dx.par_chunks_mut(hw).enumerate().for_each(|(i, dx)| {
            let ch = i % c;
            let off = i * hw;
            let (xs, ys, gs) = (&x[off..][..hw], &y[off..][..hw], &g[off..][..hw]);
            let (m, is) = (mean[ch], inv_std[ch]);
            let k = gamma[ch] * is;
            let mdz = sums[ch].0 as f32 / count;
            let mdzx = sums[ch].1 as f32 / count;
            with_simd(|| {
                for j in 0..hw {
                    let dz = gs[j] * leaky_factor(ys[j], slope);
                    let xhat = (xs[j] - m) * is;
                    dx[j] = k * (dz - mdz - xhat * mdzx);
                }
            })
        });
        for ch in 0..c {
            dp[ch] = sums[ch].1 as f32; // dgamma
            dp[c + ch] = sums[ch].0 as f32; // dbeta
        }
        Ok((CpuStorage::F32(out), Shape::from(n * c * hw + 2 * c)))
    }
}

/// `(x, scale, shift) -> leaky(scale * x + shift)` per channel: a frozen (inference-mode) BN folded
/// into an affine map, fused with the activation.
pub(crate) struct AffineLeakyOp {
    pub slope: f32,
}

impl CustomOp3 for AffineLeakyOp {
    fn name(&self) -> &'static str {
        "yolo-affine-leaky"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "affine_leaky input")?;
        let scale = contiguous_f32(s2, l2, "affine_leaky scale")?;
        let shift = contiguous_f32(s3, l3, "affine_leaky shift")?;
        let (_, c, hw) = nc_hw(l1, l2, "affine_leaky")?;
        nc_hw(l1, l3, "affine_leaky")?;
        let y = affine_leaky(x, scale, shift, c, hw, self.slope);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let packed = x.apply_op3_no_bwd(
            res,
            &grad,
            &AffineLeakyGradOp {
                slope: self.slope,
                scale: scale.flatten_all()?.to_vec1::<f32>()?,
            },
        )?;
        split_packed(&packed, x, scale)
    }
}

/// `(x, y, dy) -> [dx, dscale, dshift]` for [`AffineLeakyOp`].
struct AffineLeakyGradOp {
    slope: f32,
    scale: Vec<f32>,
}

impl CustomOp3 for AffineLeakyGradOp {
    fn name(&self) -> &'static str {
        "yolo-affine-leaky-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let GradInputs { x, y, g, n, c, hw } =
            GradInputs::read("affine_leaky", (s1, l1), (s2, l2), (s3, l3))?;
        if self.scale.len() != c {
            bail!(
                "affine_leaky grad: {} scales for {c} channels",
                self.scale.len()
            )
        }
        let slope = self.slope;
        let mut out = vec![0f32; n * c * hw + 2 * c];
        let (dx, dp) = out.split_at_mut(n * c * hw);
        // dx = dz * scale; per-block partial sums of dz * x and dz, reduced per channel below.
        let partial: Vec<(f64, f64)> = dx
            .par_chunks_mut(hw)
            .enumerate()
            .map(|(i, dx)| {
                let off = i * hw;
                let (xs, ys, gs) = (&x[off..][..hw], &y[off..][..hw], &g[off..][..hw]);
                let a = self.scale[i % c];
                let (mut sdz, mut sdzx) = (0f64, 0f64);
                for j in 0..hw {
                    let dz = gs[j] * leaky_factor(ys[j], slope);
                    dx[j] = a * dz;
                    sdz += dz as f64;
                    sdzx += (dz * xs[j]) as f64;
                }
                (sdzx, sdz)
            })
            .collect();
        for (i, (sdzx, sdz)) in partial.into_iter().enumerate() {
            dp[i % c] += sdzx as f32;
            dp[c + i % c] += sdz as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(n * c * hw + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Storage};

    use super::*;

    /// Number of f32 values in the buffer behind `t` (not just its view).
    fn buffer_len(t: &Tensor) -> usize {
        match &*t.storage_and_layout().0 {
            Storage::Cpu(CpuStorage::F32(v)) => v.len(),
            _ => panic!("expected f32 CPU storage"),
        }
    }

    #[test]
    fn split_packed_gives_parameter_gradients_buffers_of_their_own() {
        let (n, c, hw) = (2, 3, 4);
        let len = n * c * hw;
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..len + 2 * c).map(|i| i as f32).collect();
        let packed = Tensor::from_vec(values, len + 2 * c, &dev).unwrap();
        let x = Tensor::zeros((n, c, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let p = Tensor::zeros(c, candle_core::DType::F32, &dev).unwrap();
        let (dx, dp, dq) = split_packed(&packed, &x, &p).unwrap();
        let (dx, dp, dq) = (dx.unwrap(), dp.unwrap(), dq.unwrap());
        assert_eq!(dx.dims(), &[n, c, 2, 2]);
        assert_eq!(
            dx.flatten_all().unwrap().to_vec1::<f32>().unwrap()[len - 1],
            23.0
        );
        assert_eq!(dp.to_vec1::<f32>().unwrap(), [24.0, 25.0, 26.0]);
        assert_eq!(dq.to_vec1::<f32>().unwrap(), [27.0, 28.0, 29.0]);
        // The small gradients must not hold (a copy of) the activation-sized buffer: they live in
        // the gradient store until the optimizer has run.
        assert_eq!(buffer_len(&dp), c);
        assert_eq!(buffer_len(&dq), c);
    }
}
