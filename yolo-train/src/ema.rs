//! Exponential moving average of the weights, as ultralytics' `ModelEMA` keeps it: after each
//! optimizer step every variable of the model (trainable ones and BatchNorm moving statistics)
//! is averaged with the ramped decay `decay * (1 - exp(-updates / tau))`, so the average follows
//! the raw weights closely early on and smooths them later.
//!
//! The trainer evaluates (val loss, mAP) and saves weights files (phase weights, checkpoints,
//! `best.safetensors`) with the average swapped into the model ([`Ema::swap`]), then swaps the
//! raw weights back to train on. At the end of a phase the average becomes the model
//! ([`Ema::adopt`]): the next phase starts from the phase's weights file, as a resumed run does.
//! Each phase starts a fresh average (ramp restarted) from the weights it starts with. The
//! average is saved next to the latest checkpoint (`last/ema-<tag>.safetensors`, named in
//! `state.json`) so a resumed run continues it exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::atomic::atomic_write;
use crate::error::{Result, TrainError};

/// The ramped decay after `updates` updates: `decay * (1 - exp(-updates / tau))`.
pub fn ramped_decay(decay: f64, tau: f64, updates: u64) -> f64 {
    decay * (1.0 - (-(updates as f64) / tau).exp())
}

/// One EMA update of a value: `ema + (1 - d) * (x - ema)`, i.e. `d * ema + (1 - d) * x`, written
/// so that a value that has not changed (a frozen layer) stays bit-identical. The tests' reference
/// for what the tensor update computes.
#[cfg(test)]
fn ema_step(ema: f64, x: f64, d: f64) -> f64 {
    ema + (1.0 - d) * (x - ema)
}

/// The average of every variable of a [`VarMap`], by name.
pub struct Ema {
    decay: f64,
    tau: f64,
    updates: u64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// A fresh average (zero updates) equal to the current values of `varmap`.
    pub fn new(varmap: &VarMap, decay: f64, tau: f64) -> Result<Self> {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut shadow = Vec::with_capacity(data.len());
        for (name, var) in data.iter() {
            shadow.push((name.clone(), var.as_tensor().copy()?.detach()));
        }
        shadow.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Ema {
            decay,
            tau,
            updates: 0,
            shadow,
        })
    }

    /// Updates done so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The averaged tensors, by name (sorted).
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.shadow.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// One update from the current values of `varmap` (after an optimizer step).
    pub fn update(&mut self, varmap: &VarMap) -> Result<()> {
        self.updates += 1;
        let k = 1.0 - ramped_decay(self.decay, self.tau, self.updates);
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, e) in self.shadow.iter_mut() {
            let var = data
                .get(name)
                .ok_or_else(|| TrainError::format(Path::new(name), "variable missing"))?;
            let x = var.as_tensor().detach();
            *e = (&*e + (x - &*e)?.affine(k, 0.0)?)?.detach();
        }
        Ok(())
    }

    /// Exchanges the averaged values with the values of `varmap`: after one call the model holds
    /// the average (and `self` the raw weights), after a second everything is as before.
    pub fn swap(&mut self, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, e) in self.shadow.iter_mut() {
            let var = data
                .get(name)
                .ok_or_else(|| TrainError::format(Path::new(name), "variable missing"))?;
            let raw = var.as_tensor().copy()?.detach();
            var.set(e)?;
            *e = raw;
        }
        Ok(())
    }

    /// Swaps the average into `varmap` until the returned guard is restored or dropped (which
    /// swaps the raw weights back, so an error on the way cannot leave the model averaged).
    pub fn swapped_in(&mut self, varmap: &VarMap) -> Result<Swapped<'_>> {
        self.swap(varmap)?;
        Ok(Swapped {
            ema: Some(self),
            varmap: varmap.clone(),
        })
    }

    /// Copies the average into `varmap` for good (the end of a phase).
    pub fn adopt(&self, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, e) in &self.shadow {
            if let Some(var) = data.get(name) {
                var.set(e)?;
            }
        }
        Ok(())
    }

    /// Atomically writes the average (and its update count, in the metadata) to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (n, t) in &self.shadow {
            map.insert(n.clone(), t.to_device(&Device::Cpu)?);
        }
        let mut meta = HashMap::new();
        meta.insert("updates".to_string(), self.updates.to_string());
        let bytes = safetensors::serialize(&map, Some(meta))
            .map_err(|e| TrainError::format(path, e.to_string()))?;
        atomic_write(path, &bytes)
    }

    /// Restores an average saved by [`Ema::save`]; it must hold every variable of this average
    /// with the same shapes.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| TrainError::format(path, e.to_string()))?;
        let updates: u64 = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("updates"))
            .ok_or_else(|| TrainError::format(path, "metadata `updates` missing"))?
            .parse()
            .map_err(|e| TrainError::format(path, format!("updates: {e}")))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        let mut new = Vec::with_capacity(self.shadow.len());
        for (n, e) in &self.shadow {
            let t = tensors
                .get(n)
                .ok_or_else(|| TrainError::format(path, format!("tensor `{n}` missing")))?;
            if t.dims() != e.dims() {
                return Err(TrainError::format(
                    path,
                    format!("`{n}` has shape {:?}, expected {:?}", t.dims(), e.dims()),
                ));
            }
            new.push(t.to_dtype(e.dtype())?.to_device(e.device())?);
        }
        for ((_, e), t) in self.shadow.iter_mut().zip(new) {
            *e = t;
        }
        self.updates = updates;
        Ok(())
    }
}

/// The average swapped into a model ([`Ema::swapped_in`]); the raw weights come back on
/// [`Swapped::restore`] or drop.
pub struct Swapped<'a> {
    ema: Option<&'a mut Ema>,
    varmap: VarMap,
}

impl Swapped<'_> {
    /// Swaps the raw weights back.
    pub fn restore(mut self) -> Result<()> {
        match self.ema.take() {
            Some(e) => e.swap(&self.varmap),
            None => Ok(()),
        }
    }
}

impl Drop for Swapped<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.ema.take() {
            let _ = e.swap(&self.varmap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn ramp_starts_at_zero_and_tends_to_the_decay() {
        assert_eq!(ramped_decay(0.9999, 2000.0, 0), 0.0);
        let d1 = ramped_decay(0.9999, 2000.0, 1);
        assert!((d1 - 0.9999 * (1.0 - (-1.0f64 / 2000.0).exp())).abs() < 1e-15);
        let d2000 = ramped_decay(0.9999, 2000.0, 2000);
        assert!((d2000 - 0.9999 * (1.0 - (-1.0f64).exp())).abs() < 1e-15);
        assert!((ramped_decay(0.9999, 2000.0, 100_000) - 0.9999).abs() < 1e-12);
        let all: Vec<f64> = (0..50).map(|u| ramped_decay(0.9, 10.0, u)).collect();
        assert!(all.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn step_is_the_weighted_mean_and_keeps_unchanged_values() {
        assert!((ema_step(1.0, 3.0, 0.75) - (0.75 * 1.0 + 0.25 * 3.0)).abs() < 1e-15);
        for v in [0.1f64, -3.7, 1e-9, 12345.678] {
            assert_eq!(ema_step(v, v, 0.9999), v);
        }
    }

    #[test]
    fn update_swap_adopt_save_and_load() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let a = vm
            .get((2,), "a", candle_nn::Init::Const(1.0), DType::F32, &dev)
            .unwrap();
        let frozen = vm
            .get(
                (3,),
                "frozen",
                candle_nn::Init::Const(0.3),
                DType::F32,
                &dev,
            )
            .unwrap();
        let mut ema = Ema::new(&vm, 0.5, 1.0).unwrap();
        let var = |n: &str| vm.data().lock().unwrap()[n].clone();
        var("a")
            .set(&Tensor::new(&[3.0f32, 5.0], &dev).unwrap())
            .unwrap();
        ema.update(&vm).unwrap();
        let d = ramped_decay(0.5, 1.0, 1);
        let shadow: HashMap<String, Vec<f32>> = ema
            .tensors()
            .map(|(n, t)| (n.to_string(), t.to_vec1::<f32>().unwrap()))
            .collect();
        for (got, x) in shadow["a"].iter().zip([3.0f64, 5.0]) {
            assert!((*got as f64 - ema_step(1.0, x, d)).abs() < 1e-6);
        }
        assert_eq!(shadow["frozen"], vec![0.3f32; 3]);
        assert_eq!(ema.updates(), 1);
        // Swap in, then back.
        let raw = a.to_vec1::<f32>().unwrap();
        ema.swap(&vm).unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), shadow["a"]);
        ema.swap(&vm).unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), raw);
        assert_eq!(frozen.to_vec1::<f32>().unwrap(), vec![0.3f32; 3]);
        {
            let _g = ema.swapped_in(&vm).unwrap();
            assert_eq!(a.to_vec1::<f32>().unwrap(), shadow["a"]);
        }
        assert_eq!(a.to_vec1::<f32>().unwrap(), raw);
        // Save / load round trip.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ema.safetensors");
        ema.save(&p).unwrap();
        let mut back = Ema::new(&vm, 0.5, 1.0).unwrap();
        back.load(&p).unwrap();
        assert_eq!(back.updates(), 1);
        let b: HashMap<String, Vec<f32>> = back
            .tensors()
            .map(|(n, t)| (n.to_string(), t.to_vec1::<f32>().unwrap()))
            .collect();
        assert_eq!(b, shadow);
        // Adopt: the model holds the average.
        back.adopt(&vm).unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), shadow["a"]);
    }
}
