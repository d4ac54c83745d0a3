//! The differentiable functions the network is made of, and the switch between the fast CPU
//! kernels and candle's own ops. Every function here works on any device; CPU-only fast paths fall
//! back to candle's ops on CUDA and Metal.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Result, Tensor};

use crate::{bn_leaky, conv, leaky, max_pool, winograd};

/// The custom CPU kernels handle contiguous-or-not f32 tensors on the CPU; everything else
/// (CUDA, Metal, other dtypes) keeps candle's own ops, as does everything while
/// [`generic_ops`] is on.
pub(crate) fn fast_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !generic_ops()
}

/// 0: not decided yet (read `YOLO_GENERIC_OPS` on first use), 1: fast CPU kernels, 2: generic.
static GENERIC: AtomicU8 = AtomicU8::new(0);

/// Whether the device-generic path (candle's own ops, what CUDA and Metal run) is forced on the
/// CPU too: `YOLO_GENERIC_OPS=1` in the environment or [`set_generic_ops`]. Off by default.
pub fn generic_ops() -> bool {
    match GENERIC.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("YOLO_GENERIC_OPS").is_ok_and(|v| !v.is_empty() && v != "0");
            set_generic_ops(on);
            on
        }
    }
}

/// Forces (or stops forcing) the device-generic path on the CPU for the whole process, so the
/// code CUDA and Metal run can be checked against the fast CPU kernels on a machine without them.
pub fn set_generic_ops(on: bool) {
    GENERIC.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// 2-D convolution without bias, NCHW input `x`, OIHW kernel `w`, symmetric zero `padding`.
///
/// keras-yolo3's stride-2 convs pad only top/left (`ZeroPadding2D(((1,0),(1,0)))`) and convolve
/// 'valid'; on even input sizes that equals padding 1 on every side, since the extra bottom/right
/// row and column are never read.
///
/// On CPU f32 this is im2col + GEMM with a GEMM-based backward (see `conv.rs`), or Winograd
/// F(2x2, 3x3) or F(4x4, 3x3) for wide 3x3 stride-1 convolutions (`winograd/`); elsewhere it is
/// candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if fast_cpu(x) && fast_cpu(w) {
        x.contiguous()?.apply_op2(
            &w.contiguous()?,
            conv::Conv2dOp {
                stride,
                pad: padding,
            },
        )
    } else {
        x.conv2d(w, padding, stride, 1, 1)
    }
}

/// Turns the Winograd convolutions (both tile sizes) on or off for the whole process; they are on
/// unless the environment sets `YOLO_NO_WINOGRAD=1`. Off, every CPU convolution is im2col + GEMM,
/// which benchmarks use to compare the two in one run. Results agree to float rounding either way.
pub fn set_winograd(enabled: bool) {
    winograd::set_enabled(enabled);
}

/// Leaky ReLU `max(x, slope * x)` for `0 < slope < 1` (darknet and keras-yolo3 use 0.1).
///
/// The derivative at exactly 0 is `slope`, as in TensorFlow's `LeakyReLU` that keras-yolo3 trains
/// with. On CPU f32 it is one fused pass forward and backward.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if fast_cpu(x) {
        x.contiguous()?.apply_op1(leaky::LeakyReluOp {
            slope: slope as f32,
        })
    } else {
        // Where x == 0 this gradient would be (1 + slope) / 2 instead of slope; measure zero.
        x.maximum(&(x * slope)?)
    }
}

/// Nearest-neighbour 2x upsampling of an NCHW tensor, built from reshape and broadcast so that its
/// backward is a correct sum (candle 0.11's `upsample_nearest2d` backward overwrites gradients).
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .reshape((n, c, h * 2, w * 2))
}

/// Tiny YOLOv3's 2x2 stride-2 max pool over NCHW `x` (odd sizes drop the last row or column).
///
/// On CPU f32 it is one pass each way; elsewhere it is composed from candle ops. On every device
/// a window's gradient goes to its first maximum in row-major order, as in TensorFlow's
/// `MaxPoolGrad`: ties are common (the letterbox's grey border gives constant activations). candle
/// 0.11's own `max_pool2d` is not used: its backward multiplies the gradient by the fraction of
/// the window at the maximum instead of dividing by it (a quarter of the true gradient per pool).
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if fast_cpu(x) {
        x.contiguous()?.apply_op1(max_pool::MaxPool2x2Op)
    } else {
        max_pool2x2_generic(x)
    }
}

/// [`max_pool2x2`] from candle's reshape, compare and select ops, for every device: the output
/// selects the first of the window's four elements that is at least each later one, so the
/// gradient reaches exactly that element.
pub(crate) fn max_pool2x2_generic(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    let x = x
        .narrow(2, 0, 2 * oh)?
        .narrow(3, 0, 2 * ow)?
        .reshape((n, c, oh, 2, ow, 2))?;
    let at = |dy: usize, dx: usize| -> Result<Tensor> {
        x.narrow(3, dy, 1)?
            .narrow(5, dx, 1)?
            .reshape((n, c, oh, ow))
    };
    first_max4(&at(0, 0)?, &at(0, 1)?, &at(1, 0)?, &at(1, 1)?)
}

/// The element-wise maximum of a 2x2 window's four elements (top-left, top-right, bottom-left,
/// bottom-right), selecting the first that is at least every later one, so that a tie's gradient
/// goes to the first maximum in row-major order (TensorFlow's max-pool gradient).
fn first_max4(a: &Tensor, b: &Tensor, c: &Tensor, d: &Tensor) -> Result<Tensor> {
    // The masks compare detached values: they select, they are not differentiated.
    let (ad, bd, cd, dd) = (a.detach(), b.detach(), c.detach(), d.detach());
    let max_cd = cd.maximum(&dd)?;
    let max_bcd = bd.maximum(&max_cd)?;
    let c_or_d = cd.ge(&dd)?.where_cond(c, d)?;
    let b_or_later = bd.ge(&max_cd)?.where_cond(b, &c_or_d)?;
    ad.ge(&max_bcd)?.where_cond(a, &b_or_later)
}

/// Tiny YOLOv3's 2x2 stride-1 'same' max pool: the window at (i, j) covers rows i..i+2 and columns
/// j..j+2; the bottom row and right column are padded, and the padding never wins the max
/// (Keras pads max pools with -inf). candle 0.11 has no backward for kernel != stride. A tie's
/// gradient goes to the first maximum, as in [`max_pool2x2`]; the windows overlap, so an element
/// collects the gradients of every window it is the first maximum of.
pub fn max_pool_2x2_s1_same(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    // Replicating the last row/column gives the same maxima as -inf padding.
    let xr = Tensor::cat(&[x, &x.narrow(3, w - 1, 1)?], 3)?;
    let xp = Tensor::cat(&[&xr, &xr.narrow(2, h - 1, 1)?], 2)?;
    let a = xp.narrow(2, 0, h)?.narrow(3, 0, w)?;
    let b = xp.narrow(2, 0, h)?.narrow(3, 1, w)?;
    let c = xp.narrow(2, 1, h)?.narrow(3, 0, w)?;
    let d = xp.narrow(2, 1, h)?.narrow(3, 1, w)?;
    first_max4(&a, &b, &c, &d)
}

/// Training-mode batch normalisation fused with leaky ReLU, over the channel axis of NCHW `x`:
/// `leaky(gamma * (x - mean) / sqrt(var + eps) + beta, slope)` with the batch mean and the biased
/// batch variance (as Keras/TF train). Returns `(y, batch_mean, batch_var)`; the two statistics
/// (shape `(c,)`, biased variance) are detached, for the caller's moving averages. Gradients flow
/// to `x`, `gamma` and `beta` through the batch statistics. `slope = 1` gives plain batch norm.
///
/// On CPU f32 this is one custom op with a two-pass hand-written backward; elsewhere it is
/// composed from candle ops.
pub fn batch_norm_leaky_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    slope: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _, _) = x.dims4()?;
    if fast_cpu(x) && fast_cpu(gamma) && fast_cpu(beta) {
        let stats = Arc::new(Mutex::new(None));
        let op = bn_leaky::BnLeakyTrainOp {
            eps: eps as f32,
            slope: slope as f32,
            stats: stats.clone(),
        };
        let y = x
            .contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
        let s = match stats.lock() {
            Ok(s) => s.clone(),
            Err(_) => candle_core::bail!("batch_norm_leaky_train: statistics lock poisoned"),
        };
        let Some(s) = s else {
            candle_core::bail!("batch_norm_leaky_train: forward produced no statistics")
        };
        let mean = Tensor::from_vec(s.mean, c, x.device())?;
        let var = Tensor::from_vec(s.var, c, x.device())?;
        return Ok((y, mean, var));
    }
    let mean = x.mean_keepdim((0, 2, 3))?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
    let scale = gamma
        .reshape((1, c, 1, 1))?
        .broadcast_div(&(&var + eps)?.sqrt()?)?;
    let z = centred
        .broadcast_mul(&scale)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    let y = leaky_relu(&z, slope)?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// `leaky(scale * x + shift, slope)` per channel of NCHW `x`: an inference-mode (frozen) batch
/// norm folded into `scale = gamma / sqrt(moving_var + eps)`, `shift = beta - moving_mean * scale`,
/// fused with the activation. Differentiable in all three arguments.
pub fn affine_leaky(x: &Tensor, scale: &Tensor, shift: &Tensor, slope: f64) -> Result<Tensor> {
    if fast_cpu(x) && fast_cpu(scale) && fast_cpu(shift) {
        x.contiguous()?.apply_op3(
            &scale.contiguous()?,
            &shift.contiguous()?,
            bn_leaky::AffineLeakyOp {
                slope: slope as f32,
            },
        )
    } else {
        let (_, c, _, _) = x.dims4()?;
        let z = x
            .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?;
        leaky_relu(&z, slope)
    }
}
