//! keras-yolo3's two conv flavours: `DarknetConv2D_BN_Leaky` (conv without bias, BatchNorm,
//! LeakyReLU 0.1) and the plain `DarknetConv2D` with bias used for the output layers.
//!
//! Kernels are OIHW (`(filters, c_in, k, k)`, darknet's own order). The blocks take their
//! variables from the `VarBuilder`: a kernel already in its `VarMap` (as
//! [`crate::YoloBody::build`] puts the seeded ones there) is used as it is; a missing one is
//! created with Keras' `glorot_uniform` (candle's unseeded RNG), output biases with zeros.
//! [`ConvBnLeaky`] implements candle's `ModuleT` (BatchNorm differs in training), [`OutputConv`]
//! candle's `Module`.
//!
//! Both blocks compute in f32 unless given a 16-bit compute dtype ([`crate::Precision`]); then
//! they run the device-generic path with casts: kernel and input cast to the compute dtype at use,
//! BatchNorm in f32, the output conv's result back in f32.

use candle_core::{DType, Module, ModuleT, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::batch_norm::KerasBatchNorm;
use yolo_kernels as ops;

/// LeakyReLU slope of every hidden conv.
pub const LEAKY_SLOPE: f64 = 0.1;

fn glorot_uniform(c_in: usize, filters: usize, k: usize) -> Init {
    let fan_in = (c_in * k * k) as f64;
    let fan_out = (filters * k * k) as f64;
    let limit = (6.0 / (fan_in + fan_out)).sqrt();
    Init::Uniform {
        lo: -limit,
        up: limit,
    }
}

/// A convolution of `x` by `w`, both in the same 16-bit dtype, with candle's own op. On the CPU
/// it runs in f32 on the 16-bit values and is rounded back to the 16-bit dtype: what a GPU's
/// 16-bit convolution with f32 accumulation computes. candle 0.11's CPU convolution has no bf16
/// GEMM at all (its im2col product rejects bf16, unlike its plain matmul, which widens) and its
/// f16 one, with the f16 transposed convolution of the backward pass, is many times slower than
/// f32. The casts are differentiable, so the backward pass rounds the gradients to the 16-bit
/// dtype at the same places as on a GPU.
fn conv2d_16(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() != DType::F32 {
        let (dt, f) = (x.dtype(), DType::F32);
        return x
            .to_dtype(f)?
            .conv2d(&w.to_dtype(f)?, padding, stride, 1, 1)?
            .to_dtype(dt);
    }
    x.conv2d(w, padding, stride, 1, 1)
}

/// Conv (no bias) + BatchNorm + LeakyReLU(0.1). Variables: `{prefix}.conv.weight`,
/// `{prefix}.bn.{weight,bias,running_mean,running_var}`.
#[derive(Debug, Clone)]
pub struct ConvBnLeaky {
    weight: Tensor,
    bn: KerasBatchNorm,
    stride: usize,
    padding: usize,
    /// The dtype the convolution runs in (the kernel variable stays f32).
    compute: DType,
}

impl ConvBnLeaky {
    /// A `k x k` conv from `c_in` to `filters` channels with the given stride. Stride-1 convs pad
    /// 'same'; stride-2 convs reproduce Darknet's top-left-only padding, which on the even sizes
    /// YOLO uses reads the same pixels as a symmetric padding of 1 (see [`ops::conv2d`]).
    pub fn new(
        c_in: usize,
        filters: usize,
        k: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.pp("conv").get_with_hints(
            (filters, c_in, k, k),
            "weight",
            glorot_uniform(c_in, filters, k),
        )?;
        let bn = KerasBatchNorm::new(filters, vb.pp("bn"))?;
        Ok(Self {
            weight,
            bn,
            stride,
            padding: k / 2,
            compute: DType::F32,
        })
    }

    /// Sets the dtype the convolution computes in: F32 (the default, the fast CPU kernels on the
    /// CPU) or BF16/F16 (candle's own ops; see [`ConvBnLeaky::forward_t`]).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }

    /// Forward pass; `train` selects the BatchNorm mode. Inference mode (`train = false`) builds
    /// no gradient graph: no variable of this block gets a gradient through it.
    ///
    /// With a 16-bit compute dtype the input and the kernel are cast to it, the convolution and
    /// the activation run in it, and BatchNorm runs in f32 between two casts; the result is in the
    /// compute dtype.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if self.stride == 2 && (h % 2 != 0 || w % 2 != 0) {
            candle_core::bail!(
                "stride-2 conv needs even input sizes (Darknet pads top/left only), got {h}x{w}"
            );
        }
        if self.compute != DType::F32 {
            return self.forward_mixed(x, train);
        }
        let bn = &self.bn;
        if train {
            let y = ops::conv2d(x, &self.weight, self.stride, self.padding)?;
            let count = KerasBatchNorm::train_count(&y)?;
            let (out, mean, var) =
                ops::batch_norm_leaky_train(&y, bn.gamma(), bn.beta(), bn.eps(), LEAKY_SLOPE)?;
            bn.update_moving_stats(&mean, &var, count)?;
            Ok(out)
        } else {
            // Inference mode is what frozen layers, validation and detection use: nothing here
            // ever needs a gradient, so the variables are detached. Then no op records its inputs
            // for backprop and every activation is freed as soon as the next layer has read it
            // (otherwise a frozen prefix keeps all its activations alive until its output is
            // detached, which costs gigabytes at batch 16 and 416x416).
            let y = ops::conv2d(x, &self.weight.detach(), self.stride, self.padding)?;
            let (scale, shift) = bn.folded_scale_shift()?;
            ops::affine_leaky(&y, &scale.detach(), &shift.detach(), LEAKY_SLOPE)
        }
    }

    /// The 16-bit path of [`ConvBnLeaky::forward_t`], all candle ops (no f32-only kernel).
    fn forward_mixed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dt = self.compute;
        let x = x.to_dtype(dt)?;
        let z = if train {
            // `to_dtype` is differentiable: the kernel's gradient comes back as f32.
            let y = conv2d_16(&x, &self.weight.to_dtype(dt)?, self.padding, self.stride)?;
            // Batch statistics, normalisation and the moving-statistics update in f32; the
            // result is cast back to the compute dtype.
            self.bn.forward_train(&y)?
        } else {
            let w = self.weight.detach().to_dtype(dt)?;
            let y = conv2d_16(&x, &w, self.padding, self.stride)?.to_dtype(DType::F32)?;
            let (scale, shift) = self.bn.folded_scale_shift()?;
            y.broadcast_mul(&scale.detach().reshape((1, (), 1, 1))?)?
                .broadcast_add(&shift.detach().reshape((1, (), 1, 1))?)?
                .to_dtype(dt)?
        };
        ops::leaky_relu(&z, LEAKY_SLOPE)
    }

    /// The same block composed from plain candle ops (conv, [`KerasBatchNorm::forward_t`],
    /// `max(x, 0.1 x)`): a reference for the fused path, used in tests.
    pub fn forward_t_reference(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        let y = self.bn.forward_t(&y, train)?;
        y.maximum(&(&y * LEAKY_SLOPE)?)
    }

    /// The BatchNorm of this block.
    pub fn bn(&self) -> &KerasBatchNorm {
        &self.bn
    }
}

/// candle's train/eval module interface: [`ConvBnLeaky::forward_t`].
impl ModuleT for ConvBnLeaky {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        ConvBnLeaky::forward_t(self, xs, train)
    }
}

/// The 1x1 output conv with bias and no activation. Variables: `{prefix}.weight`, `{prefix}.bias`.
#[derive(Debug, Clone)]
pub struct OutputConv {
    weight: Tensor,
    bias: Tensor,
    /// The dtype the convolution runs in (the variables and the result stay f32).
    compute: DType,
}

impl OutputConv {
    /// A 1x1 conv from `c_in` to `filters` channels with bias.
    pub fn new(c_in: usize, filters: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            (filters, c_in, 1, 1),
            "weight",
            glorot_uniform(c_in, filters, 1),
        )?;
        let bias = vb.get_with_hints(filters, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            compute: DType::F32,
        })
    }

    /// Sets the dtype the convolution computes in (see [`OutputConv::forward`]).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }

    /// `conv(x) + bias`. With a 16-bit compute dtype the input and the kernel are cast to it for
    /// the convolution, whose result is cast to f32 before the bias: the output is always f32,
    /// so the loss runs in f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.compute == DType::F32 {
            ops::conv2d(x, &self.weight, 1, 0)?
        } else {
            let dt = self.compute;
            conv2d_16(&x.to_dtype(dt)?, &self.weight.to_dtype(dt)?, 0, 1)?.to_dtype(DType::F32)?
        };
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// candle's module interface: [`OutputConv::forward`] (train and eval are the same; `ModuleT`
/// comes with candle's blanket impl).
impl Module for OutputConv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        OutputConv::forward(self, xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn candle_module_traits_run_the_blocks() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cbl = ConvBnLeaky::new(3, 4, 3, 1, vb.pp("a")).unwrap();
        let out = OutputConv::new(4, 2, vb.pp("b")).unwrap();
        let x = Tensor::rand(0f32, 1.0, (1, 3, 8, 8), &Device::Cpu).unwrap();
        let y = ModuleT::forward_t(&cbl, &x, false).unwrap();
        let z = Module::forward(&out, &y).unwrap();
        let want = out.forward(&cbl.forward_t(&x, false).unwrap()).unwrap();
        let d = (z - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(
            ModuleT::forward_t(&out, &y, true).unwrap().dims(),
            &[1, 2, 8, 8]
        );
    }
}
