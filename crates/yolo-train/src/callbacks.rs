//! The three Keras callbacks keras-yolo3 uses, as plain state machines over `val_loss` whose state
//! is serde data (saved in `state.json` for `--resume`).
//!
//! Semantics follow Keras 2.1.5 (`keras/callbacks.py`, the version keras-yolo3 pins):
//! - `ReduceLROnPlateau(monitor='val_loss', factor=0.1, patience=3)`: an epoch improves when
//!   `val_loss < best - min_delta` (`epsilon=1e-4` in 2.1.5). Otherwise, once `wait >= patience`,
//!   the LR is multiplied by `factor` (never below `min_lr`) and `wait` resets to 0; **then** `wait`
//!   is incremented. So the first cut comes on the 4th epoch without improvement and later cuts every
//!   3rd (the off-by-one that Keras 2.2 later changed).
//! - `EarlyStopping(monitor='val_loss', min_delta=0, patience=10)`: improvement is
//!   `val_loss - min_delta < best`; otherwise `wait += 1` and training stops at `wait >= patience`.
//! - `ModelCheckpoint(period=3, save_best_only=True)`: every `period`-th epoch, save when
//!   `val_loss < best`. keras-yolo3 passes the *same* checkpoint object to stages 1 and 2, so its
//!   `best` and period counter carry across phases; the trainer does the same across all phases.

use serde::{Deserialize, Serialize};

/// Keras 2.1.5 `ReduceLROnPlateau` in `min` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    /// Multiplier applied to the LR on a plateau.
    pub factor: f64,
    /// Epochs without improvement tolerated (see the module doc for the exact count).
    pub patience: usize,
    /// Minimum decrease that counts as an improvement (Keras 2.1.5 `epsilon`).
    pub min_delta: f64,
    /// Epochs to wait after a cut before counting again.
    pub cooldown: usize,
    /// Lower bound on the LR.
    pub min_lr: f64,
    /// Best value seen (`inf` before the first epoch).
    #[serde(with = "lossless_f64")]
    pub best: f64,
    /// Epochs since the last improvement (Keras `wait`).
    pub wait: usize,
    /// Remaining cooldown epochs.
    pub cooldown_counter: usize,
}

impl ReduceLrOnPlateau {
    /// keras-yolo3's `ReduceLROnPlateau(monitor='val_loss', factor, patience)` with Keras defaults
    /// for the rest.
    pub fn new(factor: f64, patience: usize, min_delta: f64) -> Self {
        ReduceLrOnPlateau {
            factor,
            patience,
            min_delta,
            cooldown: 0,
            min_lr: 0.0,
            best: f64::INFINITY,
            wait: 0,
            cooldown_counter: 0,
        }
    }

    /// Feeds one epoch's `val_loss` with the current LR; returns the new LR when it is cut.
    pub fn on_epoch_end(&mut self, current: f64, lr: f64) -> Option<f64> {
        let mut new_lr = None;
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if current < self.best - self.min_delta {
            self.best = current;
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            if self.wait >= self.patience && lr > self.min_lr {
                let lr2 = (lr * self.factor).max(self.min_lr);
                new_lr = Some(lr2);
                self.cooldown_counter = self.cooldown;
                self.wait = 0;
            }
            self.wait += 1;
        }
        new_lr
    }
}

/// Keras `EarlyStopping` in `min` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Minimum decrease that counts as an improvement.
    pub min_delta: f64,
    /// Best value seen (`inf` before the first epoch).
    #[serde(with = "lossless_f64")]
    pub best: f64,
    /// Epochs since the last improvement.
    pub wait: usize,
}

impl EarlyStopping {
    /// keras-yolo3's `EarlyStopping(monitor='val_loss', min_delta, patience)`.
    pub fn new(patience: usize, min_delta: f64) -> Self {
        EarlyStopping {
            patience,
            min_delta,
            best: f64::INFINITY,
            wait: 0,
        }
    }

    /// Feeds one epoch's `val_loss`; returns `true` when training must stop.
    pub fn on_epoch_end(&mut self, current: f64) -> bool {
        if current - self.min_delta < self.best {
            self.best = current;
            self.wait = 0;
            false
        } else {
            self.wait += 1;
            self.wait >= self.patience
        }
    }
}

/// Keras `ModelCheckpoint(save_best_only=True, period=N)` on `val_loss`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCheckpoint {
    /// Check every `period` epochs.
    pub period: usize,
    /// Best `val_loss` among checked epochs (`inf` before the first).
    #[serde(with = "lossless_f64")]
    pub best: f64,
    /// Epochs since the last check.
    pub epochs_since_last_save: usize,
}

impl ModelCheckpoint {
    /// A checkpoint callback checking every `period` epochs.
    pub fn new(period: usize) -> Self {
        ModelCheckpoint {
            period: period.max(1),
            best: f64::INFINITY,
            epochs_since_last_save: 0,
        }
    }

    /// Feeds one epoch's `val_loss`; returns `true` when the weights must be saved now.
    pub fn on_epoch_end(&mut self, current: f64) -> bool {
        self.epochs_since_last_save += 1;
        if self.epochs_since_last_save >= self.period {
            self.epochs_since_last_save = 0;
            if current < self.best {
                self.best = current;
                return true;
            }
        }
        false
    }

    /// keras-yolo3's file name `ep{epoch:03d}-loss{loss:.3f}-val_loss{val_loss:.3f}`, where
    /// `epoch` is the 0-based Keras epoch (Keras formats `epoch + 1`).
    pub fn file_name(epoch: usize, loss: f64, val_loss: f64) -> String {
        format!(
            "ep{:03}-loss{:.3}-val_loss{:.3}.safetensors",
            epoch + 1,
            loss,
            val_loss
        )
    }
}

/// JSON has no infinity: `best` starts at `inf`, so it is written as a string when not finite.
mod lossless_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&v.to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum F {
            N(f64),
            S(String),
        }
        match F::deserialize(d)? {
            F::N(v) => Ok(v),
            F::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_lr_on_plateau_follows_keras_2_1_5_counting() {
        let mut r = ReduceLrOnPlateau::new(0.1, 3, 1e-4);
        let mut lr = 1e-4;
        // Epoch 0 improves (best=inf); epochs 1..=3 do not: wait goes 1, 2, 3 without a cut.
        assert_eq!(r.on_epoch_end(10.0, lr), None);
        for _ in 0..3 {
            assert_eq!(r.on_epoch_end(10.0, lr), None);
        }
        assert_eq!(r.wait, 3);
        // 4th non-improving epoch: wait >= patience, cut by 10x, then wait = 1.
        let cut = r.on_epoch_end(10.00005, lr).expect("cut");
        assert!((cut - 1e-5).abs() < 1e-18);
        lr = cut;
        assert_eq!(r.wait, 1);
        // Next cut after 2 more (wait 1 -> 2 -> 3), on the 3rd.
        assert_eq!(r.on_epoch_end(10.0, lr), None);
        assert_eq!(r.on_epoch_end(10.0, lr), None);
        assert!(r.on_epoch_end(10.0, lr).is_some());
        // A real improvement (more than min_delta) resets.
        assert_eq!(r.on_epoch_end(9.0, lr), None);
        assert_eq!(r.wait, 0);
        assert_eq!(r.best, 9.0);
    }

    #[test]
    fn reduce_lr_improvement_must_exceed_min_delta() {
        let mut r = ReduceLrOnPlateau::new(0.5, 0, 0.1);
        assert_eq!(r.on_epoch_end(1.0, 1.0), None);
        // 0.95 is not below 1.0 - 0.1: no improvement, and patience 0 cuts at once.
        assert_eq!(r.on_epoch_end(0.95, 1.0), Some(0.5));
        assert_eq!(r.best, 1.0);
    }

    #[test]
    fn early_stopping_stops_after_patience_epochs_without_improvement() {
        let mut e = EarlyStopping::new(10, 0.0);
        assert!(!e.on_epoch_end(5.0));
        for i in 1..10 {
            assert!(!e.on_epoch_end(5.0), "epoch {i}");
        }
        assert_eq!(e.wait, 9);
        assert!(e.on_epoch_end(5.0));
        let mut e = EarlyStopping::new(2, 0.0);
        assert!(!e.on_epoch_end(5.0));
        assert!(!e.on_epoch_end(6.0));
        assert!(!e.on_epoch_end(4.0));
        assert_eq!(e.wait, 0);
        assert!(!e.on_epoch_end(4.0));
        assert!(e.on_epoch_end(4.5));
    }

    #[test]
    fn model_checkpoint_saves_best_every_period() {
        let mut c = ModelCheckpoint::new(3);
        let saves: Vec<bool> = [9.0, 8.0, 7.0, 1.0, 2.0, 8.0, 5.0, 5.0, 0.5]
            .iter()
            .map(|&v| c.on_epoch_end(v))
            .collect();
        // Checked at epochs 2, 5, 8 (0-based): 7.0 saves, 8.0 is worse, 0.5 saves.
        assert_eq!(
            saves,
            vec![false, false, true, false, false, false, false, false, true]
        );
        assert_eq!(
            ModelCheckpoint::file_name(11, 23.4564, 25.7891),
            "ep012-loss23.456-val_loss25.789.safetensors"
        );
    }
}
