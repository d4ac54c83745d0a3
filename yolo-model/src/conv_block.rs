//! keras-yolo3's two conv flavours: `DarknetConv2D_BN_Leaky` (conv without bias, BatchNorm,
//! LeakyReLU 0.1) and the plain `DarknetConv2D` with bias used for the output layers.
//!
//! Kernels are OIHW (`(filters, c_in, k, k)`, darknet's own order); Keras' `glorot_uniform`
//! initialiser is used for new kernels, zeros for the output biases.

use candle_core::{Result, Tensor};
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

/// Conv (no bias) + BatchNorm + LeakyReLU(0.1). Variables: `{prefix}.conv.weight`,
/// `{prefix}.bn.{weight,bias,running_mean,running_var}`.
#[derive(Debug, Clone)]
pub struct ConvBnLeaky {
    weight: Tensor,
    bn: KerasBatchNorm,
    stride: usize,
    padding: usize,
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
        })
    }

    /// Forward pass; `train` selects the BatchNorm mode. Inference mode (`train = false`) builds
    /// no gradient graph: no variable of this block gets a gradient through it.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if self.stride == 2 && (h % 2 != 0 || w % 2 != 0) {
            candle_core::bail!(
                "stride-2 conv needs even input sizes (Darknet pads top/left only), got {h}x{w}"
            );
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

/// The 1x1 output conv with bias and no activation. Variables: `{prefix}.weight`, `{prefix}.bias`.
#[derive(Debug, Clone)]
pub struct OutputConv {
    weight: Tensor,
    bias: Tensor,
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
        Ok(Self { weight, bias })
    }

    /// `conv(x) + bias`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::conv2d(x, &self.weight, 1, 0)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}
