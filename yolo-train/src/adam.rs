//! Adam exactly as Keras 2.1.5 (`keras/optimizers.py`, the version keras-yolo3 pins) defines it,
//! with moments that can be saved and restored for `--resume`.
//!
//! Per step `t` (1-based) and parameter `p` with gradient `g`:
//!
//! ```text
//! lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
//! m    = beta1 * m + (1 - beta1) * g
//! v    = beta2 * v + (1 - beta2) * g^2
//! p    = p - lr_t * m / (sqrt(v) + eps)
//! ```
//!
//! Keras folds the bias corrections into `lr_t`, so `eps` (Keras' `K.epsilon()` = 1e-7) is added
//! to the *uncorrected* `sqrt(v)`, unlike the paper and candle's `AdamW` (which adds it to
//! `sqrt(v_hat)`). There is no weight decay: keras-yolo3's L2 is a loss term (coupled L2).
//! keras-yolo3 recompiles the model between stages, so every phase starts with a fresh `Adam`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::adam_cpu;
use crate::atomic::atomic_write;
use crate::error::{Result, TrainError};

/// Adam hyper-parameters; defaults are Keras' `Adam(lr=1e-3)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to `sqrt(v)` (Keras `K.epsilon()`).
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        }
    }
}

/// One optimised parameter with its two moments.
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// Keras-style Adam over a named set of trainable `Var`s (frozen vars and BN statistics are simply
/// not given to it, so they have no moments and are never stepped).
pub struct Adam {
    cfg: AdamConfig,
    slots: Vec<Slot>,
    iterations: u64,
}

impl Adam {
    /// A fresh optimizer (zero moments, zero iterations) over `vars`.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamConfig) -> Result<Self> {
        let mut slots = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            // Two buffers: the CPU path updates the moments in place.
            let m = var.as_tensor().zeros_like()?;
            let v = var.as_tensor().zeros_like()?;
            slots.push(Slot { name, var, m, v });
        }
        Ok(Adam {
            cfg,
            slots,
            iterations: 0,
        })
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }

    /// Sets the learning rate (ReduceLROnPlateau does this between epochs).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Steps taken so far (Keras `optimizer.iterations`).
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// The names of the optimised parameters, in order.
    pub fn names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// The optimised variables with their names.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.var))
    }

    /// Applies one update from `grads`. A parameter without a gradient (not reached by the loss)
    /// still sees its moments decay, as Keras does with a zero gradient.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_impl(grads, true)
    }

    /// [`Adam::step`]; `in_place` allows the CPU kernels (the tests compare both paths).
    fn step_impl(&mut self, grads: &GradStore, in_place: bool) -> Result<()> {
        self.iterations += 1;
        let t = self.iterations as f64;
        let c = &self.cfg;
        let lr_t = c.lr * (1.0 - c.beta2.powf(t)).sqrt() / (1.0 - c.beta1.powf(t));
        for s in self.slots.iter_mut() {
            let g = grads.get(s.var.as_tensor());
            if in_place
                && [s.var.as_tensor(), &s.m, &s.v]
                    .into_iter()
                    .chain(g)
                    .all(adam_cpu::fast_path)
            {
                // Same arithmetic, in place: no temporaries (see `adam_cpu`).
                let zeros;
                let g = match g {
                    Some(g) => g,
                    None => {
                        zeros = s.m.zeros_like()?;
                        &zeros
                    }
                };
                let moment = |decay: f64, square| adam_cpu::MomentUpdate {
                    decay: decay as f32,
                    rest: (1.0 - decay) as f32,
                    square,
                };
                s.m.inplace_op2(g, &moment(c.beta1, false))?;
                s.v.inplace_op2(g, &moment(c.beta2, true))?;
                let update = adam_cpu::ParamUpdate {
                    lr_t: lr_t as f32,
                    eps: c.eps as f32,
                };
                s.var.as_tensor().inplace_op3(&s.m, &s.v, &update)?;
                continue;
            }
            // Everything here is detached: a gradient may still carry its backward graph, and a
            // moment built from it would chain every step's graph to the next (a memory leak).
            let g = match grads.get(s.var.as_tensor()) {
                Some(g) => g.detach(),
                None => s.m.zeros_like()?,
            };
            let m = (s.m.affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?.detach();
            let v = (s.v.affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?.detach();
            let denom = v.sqrt()?.affine(1.0, c.eps)?;
            let update = (m.div(&denom)?).affine(lr_t, 0.0)?;
            let p = s.var.as_tensor().detach().sub(&update)?;
            s.var.set(&p)?;
            s.m = m;
            s.v = v;
        }
        Ok(())
    }

    /// The first optimised variable whose gradient holds a NaN or infinity, with that value (or,
    /// off the CPU fast path, the gradient's non-finite sum of squares). Run before [`Adam::step`]
    /// so a bad batch is reported before it touches the weights. Off the CPU fast path this reads
    /// one value pair per gradient back in one copy; a training step reads
    /// [`Adam::non_finite_flag`] with its loss instead and calls
    /// [`Adam::first_non_finite_grad_flagged`], which only searches when the flag says so.
    pub fn first_non_finite_grad(&self, grads: &GradStore) -> Result<Option<(String, f64)>> {
        self.search_non_finite(grads, true)
    }

    /// One f32 scalar on the gradients' device that is NaN exactly when a gradient off the CPU
    /// fast path holds a NaN or infinity, and 0 otherwise: the sum over those gradients of
    /// `sum(g * 0)` (`inf * 0` and `NaN * 0` are NaN, every finite value gives 0, so unlike a sum
    /// of squares a large finite gradient never trips it). Nothing is read here: the caller copies
    /// it to the host together with the step's loss values (one transfer) and passes the value to
    /// [`Adam::first_non_finite_grad_flagged`]. `None` when no gradient is off the fast path
    /// (those are scanned on the host).
    pub fn non_finite_flag(&self, grads: &GradStore) -> Result<Option<Tensor>> {
        let mut zeros = Vec::new();
        for s in &self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            if !adam_cpu::fast_path(g) {
                zeros.push(zero_sum(g)?);
            }
        }
        if zeros.is_empty() {
            return Ok(None);
        }
        Ok(Some(Tensor::stack(&zeros, 0)?.sum_all()?))
    }

    /// [`Adam::first_non_finite_grad`] once the value of [`Adam::non_finite_flag`] is on the
    /// host: the CPU fast path's gradients are scanned there, and the per-gradient search of the
    /// others (a second copy from the device) runs only when `flag` is not finite, the error
    /// path. `flag` is `None` when the flag was `None`.
    pub fn first_non_finite_grad_flagged(
        &self,
        grads: &GradStore,
        flag: Option<f32>,
    ) -> Result<Option<(String, f64)>> {
        self.search_non_finite(grads, flag.is_some_and(|f| !f.is_finite()))
    }

    /// The first non-finite gradient in slot order: fast-path gradients by a host scan, the
    /// others (when `device`) by one copy of each gradient's `sum(g * 0)` and sum of squares.
    fn search_non_finite(&self, grads: &GradStore, device: bool) -> Result<Option<(String, f64)>> {
        let mut pairs = Vec::new();
        let mut names = Vec::new();
        for s in &self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            if adam_cpu::fast_path(g) {
                if let Some(x) = adam_cpu::first_non_finite(g)? {
                    return Ok(Some((s.name.clone(), x as f64)));
                }
            } else if device {
                let g = g.detach();
                pairs.push(zero_sum(&g)?);
                pairs.push(g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F32)?);
                names.push(s.name.as_str());
            }
        }
        if pairs.is_empty() {
            return Ok(None);
        }
        let v: Vec<f32> = Tensor::stack(&pairs, 0)?.to_vec1()?;
        Ok(v.chunks(2)
            .zip(names)
            .find(|(p, _)| !p[0].is_finite())
            .map(|(p, n)| (n.to_string(), p[1] as f64)))
    }

    /// Atomically writes the moments to a safetensors file (`m.<name>`, `v.<name>`), with the
    /// iteration count and learning rate in its metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            map.insert(format!("m.{}", s.name), s.m.to_device(&Device::Cpu)?);
            map.insert(format!("v.{}", s.name), s.v.to_device(&Device::Cpu)?);
        }
        let mut meta = HashMap::new();
        meta.insert("iterations".to_string(), self.iterations.to_string());
        meta.insert("lr".to_string(), format!("{:e}", self.cfg.lr));
        let bytes = safetensors::serialize(&map, Some(meta))
            .map_err(|e| TrainError::format(path, e.to_string()))?;
        atomic_write(path, &bytes)
    }

    /// Restores moments, iteration count and learning rate saved by [`Adam::save`]; the file must
    /// hold exactly this optimizer's parameters with the same shapes.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| TrainError::format(path, e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| -> Result<String> {
            meta.get(k)
                .cloned()
                .ok_or_else(|| TrainError::format(path, format!("metadata `{k}` missing")))
        };
        let iterations: u64 = get("iterations")?
            .parse()
            .map_err(|e| TrainError::format(path, format!("iterations: {e}")))?;
        let lr: f64 = get("lr")?
            .parse()
            .map_err(|e| TrainError::format(path, format!("lr: {e}")))?;
        let dev = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(Device::Cpu);
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        if tensors.len() != 2 * self.slots.len() {
            return Err(TrainError::format(
                path,
                format!(
                    "holds {} moment tensors, the optimizer needs {}",
                    tensors.len(),
                    2 * self.slots.len()
                ),
            ));
        }
        let mut new = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let pick = |k: String| -> Result<Tensor> {
                let t = tensors
                    .get(&k)
                    .ok_or_else(|| TrainError::format(path, format!("tensor `{k}` missing")))?;
                if t.dims() != s.var.dims() {
                    return Err(TrainError::format(
                        path,
                        format!(
                            "`{k}` has shape {:?}, expected {:?}",
                            t.dims(),
                            s.var.dims()
                        ),
                    ));
                }
                Ok(t.to_dtype(s.var.dtype())?.to_device(&dev)?)
            };
            new.push((
                pick(format!("m.{}", s.name))?,
                pick(format!("v.{}", s.name))?,
            ));
        }
        for (s, (m, v)) in self.slots.iter_mut().zip(new) {
            s.m = m;
            s.v = v;
        }
        self.iterations = iterations;
        self.cfg.lr = lr;
        Ok(())
    }
}

/// `sum(g * 0)` as an f32 scalar: 0 when every value of `g` is finite, NaN otherwise.
fn zero_sum(g: &Tensor) -> Result<Tensor> {
    Ok(g.detach()
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(candle_core::DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_step(adam: &mut Adam, var: &Var, g: &[f32]) {
        // loss = sum(g * p) has gradient g.
        let gt = Tensor::new(g, &Device::Cpu).unwrap();
        let loss = var.as_tensor().mul(&gt).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        adam.step(&grads).unwrap();
    }

    /// Expected values computed by hand with Keras 2.1.5's formulas (float64 python):
    /// ```python
    /// p=[1.0,-2.0]; g=[[0.5,-0.1],[0.2,0.3]]; m=[0,0]; v=[0,0]
    /// for t, gs in enumerate(g, 1):
    ///     lrt = 1e-3*sqrt(1-0.999**t)/(1-0.9**t)
    ///     for i in range(2):
    ///         m[i] = .9*m[i]+.1*gs[i]; v[i] = .999*v[i]+.001*gs[i]**2
    ///         p[i] -= lrt*m[i]/(sqrt(v[i])+1e-7)
    /// # t=1: [0.9990000063245154, -1.9990000316217766]
    /// # t=2: [0.9981014363988028, -1.9994942165129777]
    /// ```
    #[test]
    fn adam_matches_keras_2_1_5_update_rule() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![("w".into(), var.clone())], AdamConfig::default()).unwrap();
        one_step(&mut adam, &var, &[0.5, -0.1]);
        let p = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((p[0] as f64 - 0.9990000063245154).abs() < 1e-6, "{p:?}");
        assert!((p[1] as f64 + 1.9990000316217766).abs() < 1e-6, "{p:?}");
        one_step(&mut adam, &var, &[0.2, 0.3]);
        let p = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((p[0] as f64 - 0.9981014363988028).abs() < 1e-6, "{p:?}");
        assert!((p[1] as f64 + 1.9994942165129777).abs() < 1e-6, "{p:?}");
        assert_eq!(adam.iterations(), 2);
    }

    /// The in-place CPU kernels reproduce the tensor-op path bit for bit, over several steps,
    /// shapes, and a parameter the loss does not reach (zero gradient, decaying moments).
    #[test]
    fn in_place_cpu_update_is_bit_identical_to_tensor_ops() {
        let make = |seed: u64| -> Vec<(String, Var)> {
            let mut x = seed;
            let mut next = move || {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            };
            [vec![70_000usize], vec![3, 5, 7], vec![1]]
                .into_iter()
                .enumerate()
                .map(|(i, shape)| {
                    let n: usize = shape.iter().product();
                    let v: Vec<f32> = (0..n).map(|_| next()).collect();
                    let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
                    (format!("p{i}"), Var::from_tensor(&t).unwrap())
                })
                .collect()
        };
        let (fast_vars, slow_vars) = (make(7), make(7));
        let cfg = AdamConfig::default();
        let mut fast = Adam::new(fast_vars.clone(), cfg).unwrap();
        let mut slow = Adam::new(slow_vars.clone(), cfg).unwrap();
        for step in 0..4 {
            for (adam, vars, in_place) in [
                (&mut fast, &fast_vars, true),
                (&mut slow, &slow_vars, false),
            ] {
                // loss = sum(p0^3) + step * sum(sin(p1)); p2 gets no gradient.
                let l0 = vars[0].1.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
                let l1 = vars[1].1.as_tensor().sin().unwrap().sum_all().unwrap();
                let loss = (l0 + l1.affine(step as f64, 0.0).unwrap()).unwrap();
                let grads = loss.backward().unwrap();
                adam.step_impl(&grads, in_place).unwrap();
            }
        }
        for ((name, a), (_, b)) in fast_vars.iter().zip(&slow_vars) {
            let a = a
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = b
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}"
            );
        }
        for (a, b) in fast.slots.iter().zip(&slow.slots) {
            for (x, y) in [(&a.m, &b.m), (&a.v, &b.v)] {
                let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(x, y, "moments of {}", a.name);
            }
        }
        // The parameters moved.
        let p2 = fast_vars[2]
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let p0 = make(7)[0]
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let moved = fast_vars[0]
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(moved.iter().zip(&p0).filter(|(a, b)| a != b).count() > 69_000);
        assert_eq!(p2.len(), 1);
    }

    #[test]
    fn first_non_finite_grad_names_the_variable_and_value() {
        let a = Var::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let b = Var::new(&[1.0f32, -1.0], &Device::Cpu).unwrap();
        let adam = Adam::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            AdamConfig::default(),
        )
        .unwrap();
        let ok = (a.as_tensor().sum_all().unwrap() + b.as_tensor().sum_all().unwrap()).unwrap();
        assert_eq!(
            adam.first_non_finite_grad(&ok.backward().unwrap()).unwrap(),
            None
        );
        // d/db of sum(log(b)) at b = -1 is 1/b = -1 (finite); of sqrt(b) at -1 it is NaN.
        let bad = (a.as_tensor().sum_all().unwrap()
            + b.as_tensor().sqrt().unwrap().sum_all().unwrap())
        .unwrap();
        let (name, v) = adam
            .first_non_finite_grad(&bad.backward().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(name, "b");
        assert!(v.is_nan(), "{v}");
    }

    #[test]
    fn adam_state_round_trips_and_resumes_identically() {
        let dir = tempfile::tempdir().unwrap();
        let a = Var::new(&[0.3f32, 0.7, -1.1], &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![("a".into(), a.clone())], AdamConfig::default()).unwrap();
        one_step(&mut adam, &a, &[0.1, -0.2, 0.3]);
        adam.set_learning_rate(5e-4);
        let path = dir.path().join("optim.safetensors");
        adam.save(&path).unwrap();
        let saved_p = a.as_tensor().to_vec1::<f32>().unwrap();
        one_step(&mut adam, &a, &[0.4, 0.1, -0.2]);
        let expected = a.as_tensor().to_vec1::<f32>().unwrap();

        let b = Var::new(saved_p.as_slice(), &Device::Cpu).unwrap();
        let mut adam2 = Adam::new(vec![("a".into(), b.clone())], AdamConfig::default()).unwrap();
        adam2.load(&path).unwrap();
        assert_eq!(adam2.iterations(), 1);
        assert_eq!(adam2.learning_rate(), 5e-4);
        one_step(&mut adam2, &b, &[0.4, 0.1, -0.2]);
        assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap(), expected);
    }

    #[test]
    fn adam_load_rejects_other_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let a = Var::new(&[0.3f32, 0.7], &Device::Cpu).unwrap();
        let adam = Adam::new(vec![("a".into(), a)], AdamConfig::default()).unwrap();
        let path = dir.path().join("o.safetensors");
        adam.save(&path).unwrap();
        let b = Var::new(&[0.3f32, 0.7, 0.1], &Device::Cpu).unwrap();
        let mut other = Adam::new(vec![("a".into(), b)], AdamConfig::default()).unwrap();
        let err = other.load(&path).unwrap_err().to_string();
        assert!(err.contains("shape"), "{err}");
    }
}
