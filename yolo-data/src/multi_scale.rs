//! Multi-scale training (darknet's `random=1`, ultralytics' `--multi-scale`): every `every`
//! batches the loader draws a new input size from `sizes`, so the network sees objects at several
//! scales. Off unless configured; keras-yolo3 trains at one size.
//!
//! The draw for batch group `g = step / every` comes from its own ChaCha8 stream `g` of the
//! loader's seed, so a resumed run gets the same sizes at the same steps. A size is the longer
//! side of the input: a `h x w` input keeps its aspect, each side rounded to a multiple of 32.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::input_shape::InputShape;

/// Domain separation of the size draws from the loader's other streams.
const SCALE_SALT: u64 = 0x7363_616c_6573_2121;

/// The sizes to draw from and how often to draw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiScale {
    /// Candidate sizes of the input's longer side, multiples of 32 (e.g. 320 to 608).
    pub sizes: Vec<usize>,
    /// Batches between two draws (darknet redraws every 10).
    pub every: usize,
}

impl MultiScale {
    /// Checks the settings: at least one size, each a positive multiple of 32, `every >= 1`.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.sizes.is_empty() {
            return Err(DataError::Config(
                "multi-scale needs at least one size".into(),
            ));
        }
        if let Some(s) = self.sizes.iter().find(|&&s| s == 0 || s % 32 != 0) {
            return Err(DataError::Config(format!(
                "multi-scale size {s} must be a positive multiple of 32"
            )));
        }
        if self.every == 0 {
            return Err(DataError::Config(
                "multi-scale must redraw every 1 or more batches".into(),
            ));
        }
        Ok(())
    }

    /// The input of training batch `step` for a run whose input is `base`.
    pub fn input_for_step(&self, base: InputShape, seed: u64, step: u64) -> InputShape {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SCALE_SALT);
        rng.set_stream(step / self.every.max(1) as u64);
        let size = self.sizes[rng.random_range(0..self.sizes.len().max(1))];
        let long = base.h.max(base.w);
        let side =
            |v: usize| (((v * size) as f64 / long as f64 / 32.0).round() as usize).max(1) * 32;
        InputShape {
            h: side(base.h),
            w: side(base.w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_change_only_every_n_batches_and_are_reproducible() {
        let m = MultiScale {
            sizes: vec![64, 96, 128, 160],
            every: 3,
        };
        let base = InputShape::square416();
        let sizes: Vec<usize> = (0..30).map(|s| m.input_for_step(base, 7, s).h).collect();
        for (s, &v) in sizes.iter().enumerate() {
            assert!(m.sizes.contains(&v), "step {s}: {v}");
            assert_eq!(
                m.input_for_step(base, 7, s as u64).w,
                v,
                "square stays square"
            );
            if s % 3 != 0 {
                assert_eq!(
                    v,
                    sizes[s - 1],
                    "step {s} is in the group of step {}",
                    s - 1
                );
            }
        }
        let distinct: std::collections::BTreeSet<_> = sizes.iter().collect();
        assert!(distinct.len() >= 3, "ten draws use most sizes: {sizes:?}");
        let again: Vec<usize> = (0..30).map(|s| m.input_for_step(base, 7, s).h).collect();
        assert_eq!(sizes, again);
        let other: Vec<usize> = (0..30).map(|s| m.input_for_step(base, 8, s).h).collect();
        assert_ne!(sizes, other, "another seed, other sizes");
    }

    #[test]
    fn a_non_square_input_keeps_its_aspect_in_multiples_of_32() {
        let m = MultiScale {
            sizes: vec![320],
            every: 1,
        };
        let base = InputShape { h: 416, w: 608 };
        assert_eq!(m.input_for_step(base, 0, 5), InputShape { h: 224, w: 320 });
    }

    #[test]
    fn bad_settings_are_errors_naming_the_value() {
        for (m, want) in [
            (
                MultiScale {
                    sizes: vec![],
                    every: 1,
                },
                "at least one size",
            ),
            (
                MultiScale {
                    sizes: vec![320, 330],
                    every: 1,
                },
                "size 330 must be",
            ),
            (
                MultiScale {
                    sizes: vec![320],
                    every: 0,
                },
                "every 1 or more",
            ),
        ] {
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert!(MultiScale {
            sizes: vec![320, 608],
            every: 10
        }
        .validate()
        .is_ok());
    }
}
