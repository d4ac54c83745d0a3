//! Parameter groups mirroring train_bottleneck.py's `freeze_body`, trainable variables and the
//! L2 kernel penalty.
//!
//! Groups are name prefixes (see [`crate::architecture`] for the names): `backbone.*` is what
//! `freeze_body=1` freezes (Keras layers `0..185` of `yolo_body`, `0..20` of `tiny_yolo_body`),
//! `backbone.*` + `neck.*` is what `freeze_body=2` freezes (all but the output convs), `head.*`
//! are the output convs. The parameter counts equal Keras' per group (tested against the
//! `model_layers` fixtures).

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::VarMap;
use yolo_kernels::sum_of_squares;

use crate::config::{FreezeBody, YoloConfig};

/// A freezable part of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParamGroup {
    /// Darknet-53 (or tiny's first five conv blocks).
    Backbone,
    /// Everything between the backbone and the output convs.
    Neck,
    /// The 1x1 output convs.
    Head,
}

impl ParamGroup {
    /// Whether this group is trained under `freeze`.
    pub fn is_trainable(self, freeze: FreezeBody) -> bool {
        match freeze {
            FreezeBody::None => true,
            FreezeBody::Body => self != ParamGroup::Backbone,
            FreezeBody::AllButOutputs => self == ParamGroup::Head,
        }
    }
}

/// The group a variable name belongs to, or `None` for a name outside the scheme.
pub fn group_of(name: &str) -> Option<ParamGroup> {
    if name.starts_with("backbone.") {
        Some(ParamGroup::Backbone)
    } else if name.starts_with("neck.") {
        Some(ParamGroup::Neck)
    } else if name.starts_with("head.") {
        Some(ParamGroup::Head)
    } else {
        None
    }
}

/// Whether `name` is a variable of one of the output convs (`head.out{l}.weight` / `.bias`).
pub fn is_output_conv(name: &str) -> bool {
    name.starts_with("head.out")
}

/// Whether `name` is a BatchNorm moving statistic (never trained by an optimizer).
pub fn is_bn_running_stat(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// Whether `name` is a conv kernel (the variables Keras' `l2(5e-4)` regulariser applies to).
pub fn is_conv_kernel(name: &str) -> bool {
    name.ends_with(".conv.weight") || (is_output_conv(name) && name.ends_with(".weight"))
}

/// The variables an optimizer should update under `freeze`, sorted by name: every variable of a
/// trainable group except BatchNorm moving statistics. Names outside the scheme are left out.
/// (`cfg` is accepted for symmetry with the other functions; groups depend on names only.)
pub fn trainable_vars(
    varmap: &VarMap,
    _cfg: &YoloConfig,
    freeze: FreezeBody,
) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, _)| !is_bn_running_stat(name))
        .filter(|(name, _)| group_of(name).is_some_and(|g| g.is_trainable(freeze)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// keras-yolo3's kernel regulariser: `weight * Σ‖W‖²` over the conv kernels of the trainable
/// groups (BatchNorm parameters and biases are not regularised), as a scalar tensor that stays in
/// the gradient graph. keras-yolo3 uses `weight = 5e-4`. On CPU each kernel's sum is accumulated in
/// f64, and the kernels' gradients it produces record no graph of their own.
pub fn l2_penalty(
    varmap: &VarMap,
    cfg: &YoloConfig,
    freeze: FreezeBody,
    weight: f64,
) -> Result<Tensor> {
    let vars = trainable_vars(varmap, cfg, freeze);
    let mut total: Option<Tensor> = None;
    for (_, var) in vars.iter().filter(|(n, _)| is_conv_kernel(n)) {
        let s = sum_of_squares(var.as_tensor())?;
        total = Some(match total {
            None => s,
            Some(t) => (t + s)?,
        });
    }
    match total {
        Some(t) => t * weight,
        None => {
            // Nothing trainable: a zero scalar on the map's device, if it has any variable.
            let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            let device = data
                .values()
                .next()
                .map(|v| v.device().clone())
                .unwrap_or(candle_core::Device::Cpu);
            Tensor::zeros((), DType::F32, &device)
        }
    }
}
