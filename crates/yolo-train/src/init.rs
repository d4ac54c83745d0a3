//! Seeded weight initialisation. candle draws `VarMap` initial values from an unseeded RNG; for
//! reproducible runs (and a resume test against an uninterrupted run) every conv kernel is redrawn
//! here from `seed`, with Keras' default `glorot_uniform` (limit `sqrt(6 / (fan_in + fan_out))`,
//! fans = channels x kernel area). Other variables keep their constant initial values (BN gamma 1,
//! beta 0, moving mean 0, moving variance 1, biases 0).

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

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
