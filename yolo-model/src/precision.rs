//! The compute precision of the forward and backward pass (mixed precision).
//!
//! [`Precision::F32`] is the default and runs exactly as before (the fast CPU kernels on the CPU).
//! [`Precision::Bf16`] and [`Precision::F16`] keep every variable in f32 (the master weights,
//! the BatchNorm moving statistics, and so the optimizer's moments) and run the convolutions in
//! the 16-bit dtype on the device-generic path (candle's own ops): each conv kernel is cast to the
//! compute dtype where it is used (the cast is differentiable; its backward casts the gradient
//! back to f32), BatchNorm computes its batch statistics and normalisation in f32 (cast in, cast
//! out) for stability, and the output maps are returned in f32 so the loss stays f32.
//!
//! f16 has a narrow exponent range, so small gradients underflow: training in f16 needs loss
//! scaling (yolo-train's `LossScaler`); bf16 has f32's range and needs none.
//!
//! On the CPU, candle widens 16-bit matmuls to f32 (it has no bf16/f16 GEMM kernel there), so
//! 16-bit tensors would be slower than f32. bf16 on a CPU with AMX therefore runs differently
//! ([`Precision::uses_cpu_tiles`]): the tensors stay f32 and the fast kernels' convolution
//! products take bf16-rounded operands on AMX tiles with f32 accumulation. f16, and bf16 on a
//! CPU without AMX, do not run on the CPU ([`Precision::runs_on_cpu`]).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The dtype the network computes in; the variables stay f32 whatever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// bfloat16 convolutions (f32's exponent range, 8 significant bits); no loss scaling.
    Bf16,
    /// IEEE half convolutions (11 significant bits, max 65504); needs loss scaling.
    F16,
}

impl Precision {
    /// Every precision, in the order the CLI lists them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    /// The compute dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// The name used in configs and on the command line: `f32`, `bf16`, `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// Whether this is a 16-bit (mixed) precision.
    pub fn is_mixed(self) -> bool {
        self != Precision::F32
    }

    /// Whether this precision runs on `device` as f32 tensors with the CPU kernels' bf16 tile
    /// products (bf16 on a CPU with AMX) rather than as 16-bit tensors.
    pub fn uses_cpu_tiles(self, device: &Device) -> bool {
        self == Precision::Bf16 && device.is_cpu() && yolo_kernels::amx_bf16_available()
    }

    /// The precision of the network's tensors on `device`: f32 where
    /// [`Precision::uses_cpu_tiles`], else this one.
    pub fn tensor_precision(self, device: &Device) -> Precision {
        if self.uses_cpu_tiles(device) {
            Precision::F32
        } else {
            self
        }
    }

    /// Whether this precision is worth running on this machine's CPU: f32 always, bf16 with
    /// AMX (see [`Precision::uses_cpu_tiles`]), f16 never (candle widens it to f32).
    pub fn runs_on_cpu(self) -> bool {
        match self {
            Precision::F32 => true,
            Precision::Bf16 => yolo_kernels::amx_bf16_available(),
            Precision::F16 => false,
        }
    }

    /// Whether training in this precision needs loss scaling (f16's gradients underflow).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `f32`, `bf16` or `f16` (case-insensitive, surrounding spaces ignored).
impl FromStr for Precision {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == t)
            .ok_or_else(|| ModelError::Precision(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_serialise_the_same() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            let back: Precision = serde_json::from_str(&format!("\"{}\"", p.name())).unwrap();
            assert_eq!(back, p);
        }
        assert_eq!(" BF16 ".parse::<Precision>().unwrap(), Precision::Bf16);
        let e = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
        assert_eq!(Precision::default(), Precision::F32);
        assert_eq!(Precision::F16.dtype(), DType::F16);
        assert!(Precision::F16.needs_loss_scaling() && !Precision::Bf16.needs_loss_scaling());
    }

    /// Inference in 16 bits: f32 outputs and bottleneck features, within the 16-bit rounding of
    /// the f32 forward pass; the variables untouched and still f32.
    #[test]
    fn a_16_bit_body_returns_f32_maps_close_to_the_f32_ones() {
        use crate::{YoloBody, YoloConfig};
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let (varmap, f32_body) = YoloBody::build(&YoloConfig::tiny(2), 5, &dev).unwrap();
        let x = Tensor::rand(0f32, 1.0, (1, 3, 64, 64), &dev).unwrap();
        let want = f32_body.forward(&x).unwrap();
        let rel = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
            let n = a.sqr().unwrap().sum_all().unwrap();
            (d.to_scalar::<f32>().unwrap() / n.to_scalar::<f32>().unwrap()).sqrt()
        };
        for (p, bound) in [(Precision::Bf16, 5e-2), (Precision::F16, 1e-2)] {
            let body = f32_body.clone().with_precision(p);
            let got = body.forward(&x).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.dtype(), DType::F32);
                let r = rel(w, g);
                assert!(r < bound, "{p}: {r}");
            }
            let feats = body.forward_bottleneck(&x).unwrap();
            assert!(feats.iter().all(|f| f.dtype() == DType::F32));
            let last = body.forward_last(&feats).unwrap();
            assert!(rel(&want[0], &last[0]) < bound);
        }
        assert_eq!(f32_body.precision(), Precision::F32);
        let data = varmap.data().lock().unwrap();
        assert!(data.values().all(|v| v.dtype() == DType::F32));
    }
}
