//! Weight initialisation: seeded Glorot kernels, and the check that a checkpoint given as initial
//! weights fits the model variant ([`check_weights_fit`]).
//!
//! candle draws `VarMap` initial values from an unseeded RNG; for
//! reproducible runs (and a resume test against an uninterrupted run) every conv kernel is redrawn
//! here from `seed`, with Keras' default `glorot_uniform` (limit `sqrt(6 / (fan_in + fan_out))`,
//! fans = channels x kernel area). Other variables keep their constant initial values (BN gamma 1,
//! beta 0, moving mean 0, moving variance 1, biases 0).

use std::collections::HashSet;
use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yolo_model::{model_variables, LoadReport, Variant, YoloConfig};

use crate::error::{Result, TrainError};

/// Redraws every 4-D variable of `varmap` from `seed` (in name order, so the result does not
/// depend on hash-map order).
pub fn seeded_glorot_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims();
        if dims.len() != 4 {
            continue;
        }
        let area = dims[2] * dims[3];
        let (fan_out, fan_in) = (dims[0] * area, dims[1] * area);
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(k as u64);
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-limit..limit)).collect();
        let t = Tensor::from_vec(v, dims, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::YoloV3 => "yolov3",
        Variant::Tiny => "yolov3-tiny",
    }
}

/// Decides whether a safetensors checkpoint given as initial weights (`--weights`) fits the model
/// `model_cfg`, from the report of its partial load. The rule:
///
/// - nothing loaded (no tensor matches a variable by name and shape): an error;
/// - fewer than half of the model's variables loaded *and* more of the file's tensor names belong
///   to the other variant (YOLOv3 / tiny) than to this one: an error saying which variant the file
///   looks like and which setting to change;
/// - anything else is a deliberate partial initialisation and is accepted (and reported by the
///   caller): another class count loads all but the output convs, a backbone-only file loads the
///   backbone.
///
/// The names come from [`model_variables`], so no model of the other variant is built.
pub fn check_weights_fit(report: &LoadReport, model_cfg: &YoloConfig, path: &Path) -> Result<()> {
    let loaded = report.loaded.len();
    let skipped = report.skipped_shape.len();
    let model_vars = loaded + skipped + report.missing.len();
    let file_tensors = loaded + skipped + report.unexpected.len();
    let other = YoloConfig {
        variant: match model_cfg.variant {
            Variant::YoloV3 => Variant::Tiny,
            Variant::Tiny => Variant::YoloV3,
        },
        ..*model_cfg
    };
    let other_names: HashSet<String> = model_variables(&other)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let in_other = report
        .loaded
        .iter()
        .chain(report.skipped_shape.iter().map(|s| &s.0))
        .chain(&report.unexpected)
        .filter(|n| other_names.contains(*n))
        .count();
    let looks_other = in_other > loaded + skipped;
    if loaded > 0 && (2 * loaded >= model_vars || !looks_other) {
        return Ok(());
    }
    let head = if loaded == 0 {
        "none".to_string()
    } else {
        format!("only {loaded}")
    };
    let verb = if loaded == 1 { "loads" } else { "load" };
    let mut msg = format!(
        "{head} of the {model_vars} variables of the {} model {verb} from its {file_tensors} \
         tensors ({skipped} names match with another shape, {} names the model lacks)",
        model_cfg.describe(),
        report.unexpected.len()
    );
    let other_name = variant_name(other.variant);
    if looks_other {
        let fix = match other.variant {
            Variant::Tiny => "use --tiny (tiny = true)",
            Variant::YoloV3 => "drop --tiny (tiny = false)",
        };
        msg.push_str(&format!(
            "; it looks like a {other_name} checkpoint ({in_other} of its {file_tensors} names \
             are {other_name}'s): {fix}"
        ));
    } else if file_tensors == 0 {
        msg.push_str("; the file holds no tensors");
    } else {
        let examples: Vec<&str> = report
            .unexpected
            .iter()
            .take(3)
            .map(String::as_str)
            .collect();
        msg.push_str(&format!(
            "; expected a checkpoint of this model as `yolo train` or `yolo convert` write it \
             (names such as {}), found names such as {}",
            model_variables(model_cfg)
                .iter()
                .take(2)
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            examples.join(", ")
        ));
    }
    Err(TrainError::WrongWeights {
        path: path.to_path_buf(),
        msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Init, VarBuilder};

    #[test]
    fn same_seed_same_kernels_within_glorot_limit() {
        let make = |seed| {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            vb.get_with_hints((8, 4, 3, 3), "k", Init::Const(0.0))
                .unwrap();
            vb.get_with_hints(8, "b", Init::Const(0.5)).unwrap();
            seeded_glorot_init(&vm, seed).unwrap();
            let d = vm.data().lock().unwrap();
            (
                d["k"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                d["b"].to_vec1::<f32>().unwrap(),
            )
        };
        let (a, b) = make(3);
        let (a2, _) = make(3);
        let (a3, _) = make(4);
        assert_eq!(a, a2);
        assert_ne!(a, a3);
        let limit = (6.0f32 / (36.0 + 72.0)).sqrt();
        assert!(a.iter().all(|x| x.abs() <= limit));
        assert!(a.iter().any(|x| x.abs() > limit * 0.5));
        assert_eq!(b, vec![0.5; 8]);
    }
}
