//! Seeded initialisation: Keras' default `glorot_uniform` for every conv kernel, drawn from a
//! seed, and the model factory [`YoloBody::build`] that uses it.
//!
//! candle draws `VarMap` initial values from an unseeded RNG; for reproducible runs (and a resume
//! test against an uninterrupted run) every conv kernel is drawn here from `seed` (limit
//! `sqrt(6 / (fan_in + fan_out))`, fans = channels x kernel area). Kernel `k` in the name order of
//! all the model's variables draws from ChaCha8 stream `k` of `seed`, so the values depend
//! neither on hash-map order nor on which other variables exist. Other variables keep their
//! constant initial values (BN gamma 1, beta 0, moving mean 0, moving variance 1, biases 0).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::architecture::model_variables;
use crate::config::YoloConfig;
use crate::yolo_body::YoloBody;

/// The seeded Glorot-uniform values of an OIHW kernel of shape `dims`, from stream `stream` of
/// `seed`.
fn seeded_kernel(dims: &[usize], seed: u64, stream: u64, device: &Device) -> Result<Tensor> {
    let area = dims[2] * dims[3];
    let (fan_out, fan_in) = (dims[0] * area, dims[1] * area);
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-limit..limit)).collect();
    Tensor::from_vec(v, dims, device)
}

/// Redraws every 4-D variable of `varmap` from `seed` (kernel `k` in name order from stream `k`),
/// leaving the others as they are. [`YoloBody::build`] draws the same values without a first,
/// unseeded draw.
pub fn seeded_glorot_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let var = &data[name];
        if var.dims().len() != 4 {
            continue;
        }
        let t = seeded_kernel(var.dims(), seed, k as u64, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

impl YoloBody {
    /// The model factory: a new `VarMap` holding the network `cfg` describes (either variant) on
    /// `device`, its conv kernels drawn from `seed` as [`seeded_glorot_init`] draws them, and the
    /// body built on it. Each kernel is drawn once: the seeded values are in the `VarMap` before
    /// the conv blocks ask for their variables.
    pub fn build(cfg: &YoloConfig, seed: u64, device: &Device) -> Result<(VarMap, YoloBody)> {
        let varmap = VarMap::new();
        let mut vars = model_variables(cfg);
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        {
            let mut data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            for (k, (name, dims)) in vars.iter().enumerate() {
                if dims.len() == 4 {
                    let t = seeded_kernel(dims, seed, k as u64, device)?;
                    data.insert(name.clone(), Var::from_tensor(&t)?);
                }
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let body = YoloBody::new(cfg, vb)?;
        Ok((varmap, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Init;

    fn values(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
        let d = vm.data().lock().unwrap();
        let mut v: Vec<(String, Vec<f32>)> = d
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

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

    #[test]
    fn build_equals_new_then_seeded_redraw_for_both_variants() {
        for cfg in [YoloConfig::tiny(2), YoloConfig::v3(1)] {
            let (built, _) = YoloBody::build(&cfg, 9, &Device::Cpu).unwrap();
            let old = VarMap::new();
            YoloBody::new(
                &cfg,
                VarBuilder::from_varmap(&old, DType::F32, &Device::Cpu),
            )
            .unwrap();
            seeded_glorot_init(&old, 9).unwrap();
            assert_eq!(values(&built), values(&old), "{}", cfg.describe());
        }
    }
}
