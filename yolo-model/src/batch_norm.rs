//! BatchNormalization as Keras defines it (epsilon 1e-3, momentum 0.99), NCHW, per channel.
//!
//! * Inference: `gamma * (x - moving_mean) / sqrt(moving_var + eps) + beta`.
//! * Training: normalises with the batch mean and the *biased* batch variance (as Keras/TF do),
//!   gradients flow through the batch statistics, and the moving statistics are updated in place:
//!   `moving = 0.99 * moving + 0.01 * batch_stat` (candle's own `BatchNorm` would call this
//!   momentum 0.01).
//! * The variance that enters the moving average is Keras 2.1.5's: the biased batch variance times
//!   `n / (n - (1 + eps))` with `n = batch * height * width` (Keras 2.1.x's "sample variance"
//!   correction; tf.keras / TF2 use the biased variance here, candle uses `n / (n - 1)`). For the
//!   feature-map sizes YOLO trains on, the three differ by less than 1e-4 relative.
//!
//! The moving statistics are [`Var`]s in the `VarMap` (named `running_mean` / `running_var`, the
//! candle-nn names) so that checkpoints carry them; they are updated only through `Var::set` and
//! must never be handed to an optimizer (see [`crate::trainable_vars`]).

use candle_core::{DType, ModuleT, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

/// Keras' default BatchNormalization epsilon.
pub const BN_EPSILON: f64 = 1e-3;
/// Keras' default BatchNormalization momentum (weight of the old moving value).
pub const BN_MOMENTUM: f64 = 0.99;

thread_local! {
    /// Momentum used instead of each layer's own while [`with_bn_momentum`] runs.
    static MOMENTUM_OVERRIDE: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every training-mode BatchNorm update on this thread using `momentum` (the
/// weight of the old moving value) instead of Keras' 0.99. Momentum 0 overwrites the moving
/// statistics with the batch's; `k / (k + 1)` for batch `k` makes them the mean over batches
/// (see [`crate::YoloBody::recalibrate_batch_norm`]).
pub fn with_bn_momentum<R>(momentum: f64, f: impl FnOnce() -> R) -> R {
    let old = MOMENTUM_OVERRIDE.with(|c| c.replace(Some(momentum)));
    let out = f();
    MOMENTUM_OVERRIDE.with(|c| c.set(old));
    out
}

/// Keras-style batch normalisation over the channel axis of an NCHW tensor.
#[derive(Debug, Clone)]
pub struct KerasBatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl KerasBatchNorm {
    /// Fetches `weight` (gamma, init 1), `bias` (beta, init 0), `running_mean` (init 0) and
    /// `running_var` (init 1) of `channels` features from `vb`.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let beta = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
        Ok(Self {
            gamma,
            beta,
            // Shares storage with the VarMap's var when `vb` is backed by a VarMap; otherwise
            // (e.g. mmapped safetensors) this is a private copy.
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps: BN_EPSILON,
            momentum: BN_MOMENTUM,
        })
    }

    fn channel_view(t: &Tensor) -> Result<Tensor> {
        t.reshape((1, (), 1, 1))
    }

    /// The inference-mode map folded to a per-channel affine `x * scale + shift`, with
    /// `scale = gamma / sqrt(moving_var + eps)` and `shift = beta - moving_mean * scale`, both of
    /// shape `(c,)`. Gradients reach gamma and beta, never the moving statistics.
    pub fn folded_scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let inv_std = (self.running_var.as_detached_tensor() + self.eps)?
            .sqrt()?
            .recip()?;
        let scale = (&self.gamma * &inv_std)?;
        let shift = (&self.beta - (self.running_mean.as_detached_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Moves the moving statistics towards a batch's: `moving = 0.99 * moving + 0.01 * stat`,
    /// where the variance entering the average is `batch_var_biased * n / (n - (1 + eps))`
    /// (Keras 2.1.5), `n` = values per channel in the batch. Done outside the gradient graph.
    pub fn update_moving_stats(
        &self,
        batch_mean: &Tensor,
        batch_var_biased: &Tensor,
        count: usize,
    ) -> Result<()> {
        let m = MOMENTUM_OVERRIDE.with(|c| c.get()).unwrap_or(self.momentum);
        let correction = count as f64 / (count as f64 - (1.0 + self.eps));
        let batch_mean = batch_mean.detach().flatten_all()?.to_dtype(DType::F32)?;
        let batch_var = (batch_var_biased
            .detach()
            .flatten_all()?
            .to_dtype(DType::F32)?
            * correction)?;
        let rm = self.running_mean.as_detached_tensor();
        let rv = self.running_var.as_detached_tensor();
        let new_mean = ((rm.to_dtype(DType::F32)? * m)? + (batch_mean * (1.0 - m))?)?;
        let new_var = ((rv.to_dtype(DType::F32)? * m)? + (batch_var * (1.0 - m))?)?;
        self.running_mean.set(&new_mean.to_dtype(rm.dtype())?)?;
        self.running_var.set(&new_var.to_dtype(rv.dtype())?)
    }

    /// Checks a training-mode input and returns the number of values per channel.
    pub(crate) fn train_count(x: &Tensor) -> Result<usize> {
        let (n, _, h, w) = x.dims4()?;
        let count = n * h * w;
        if count < 2 {
            candle_core::bail!(
                "batch norm in training mode needs more than one value per channel, got input {:?}",
                x.shape()
            );
        }
        Ok(count)
    }

    /// Keras' epsilon (1e-3).
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// gamma (`bn.weight`).
    pub fn gamma(&self) -> &Tensor {
        &self.gamma
    }

    /// beta (`bn.bias`).
    pub fn beta(&self) -> &Tensor {
        &self.beta
    }

    /// Inference mode: normalise with the moving statistics (which receive no gradient).
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let (scale, shift) = self.folded_scale_shift()?;
        x.broadcast_mul(&Self::channel_view(&scale.to_dtype(dtype)?)?)?
            .broadcast_add(&Self::channel_view(&shift.to_dtype(dtype)?)?)
    }

    /// Training mode: batch statistics, and an in-place update of the moving statistics. This is
    /// the composed (device-generic) form; [`crate::ConvBnLeaky`] uses the fused
    /// `ops::batch_norm_leaky_train` instead.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let count = Self::train_count(x)?;
        let (n, c, h, w) = x.dims4()?;
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        // Per-channel statistics over (n, h, w): move channels first, flatten the rest.
        let flat = xf.transpose(0, 1)?.reshape((c, count))?;
        let mean = flat.mean_keepdim(D::Minus1)?; // (c, 1)
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?; // biased, (c, 1)
        let inv_std = (&var + self.eps)?.sqrt()?.recip()?;
        let gamma = self.gamma.to_dtype(DType::F32)?.reshape((c, 1))?;
        let beta = self.beta.to_dtype(DType::F32)?.reshape((c, 1))?;
        let y = centred
            .broadcast_mul(&(inv_std.broadcast_mul(&gamma)?))?
            .broadcast_add(&beta)?;
        let y = y
            .reshape((c, n, h, w))?
            .transpose(0, 1)?
            .contiguous()?
            .to_dtype(dtype)?;
        self.update_moving_stats(&mean, &var, count)?;
        Ok(y)
    }

    /// Training mode when `train`, inference mode otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    /// The moving mean (for tests and inspection).
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The moving variance (for tests and inspection).
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }
}

/// candle's train/eval module interface: [`KerasBatchNorm::forward_t`].
impl ModuleT for KerasBatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        KerasBatchNorm::forward_t(self, xs, train)
    }
}
