//! MixUp (Zhang et al. 2018, as ultralytics applies it to detection): an augmented training
//! sample blended with a second augmented sample, `r * a + (1 - r) * b` with `r ~ Beta(32, 32)`
//! (so about 0.5), keeping the boxes of both. Off unless [`crate::AugmentConfig::mixup`] is above
//! 0; keras-yolo3 has no mixup.

use std::mem::MaybeUninit;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Beta, Distribution};

use crate::annotation::BoxLabel;

/// ultralytics' blend ratio: a draw of `Beta(32, 32)`.
pub fn mixup_ratio(rng: &mut impl Rng) -> f32 {
    match Beta::new(32.0f64, 32.0) {
        Ok(beta) => beta.sample(rng) as f32,
        // Beta(32, 32) always exists; 0.5 is its mean, should the distribution ever refuse.
        Err(_) => 0.5,
    }
}

/// Writes `r * a + (1 - r) * b` into every value of `out` (three slices of one length).
pub fn mixup_into(a: &[f32], b: &[f32], r: f32, out: &mut [MaybeUninit<f32>]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        o.write(r * x + (1.0 - r) * y);
    }
}

/// The boxes of a mixed sample: both images' boxes, shuffled together, at most `max_boxes`
/// (as the mosaic keeps them).
pub fn mixup_boxes(
    mut a: Vec<BoxLabel>,
    b: Vec<BoxLabel>,
    max_boxes: usize,
    rng: &mut impl Rng,
) -> Vec<BoxLabel> {
    a.extend(b);
    a.shuffle(rng);
    a.truncate(max_boxes);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn ratios_are_beta_32_32() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let r: Vec<f32> = (0..2000).map(|_| mixup_ratio(&mut rng)).collect();
        let mean = r.iter().sum::<f32>() / r.len() as f32;
        let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / r.len() as f32;
        // Beta(32, 32): mean 0.5, variance 1 / (4 * 65) = 0.00385.
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!((var - 0.00385).abs() < 0.0008, "{var}");
        assert!(r.iter().all(|&x| (0.2..0.8).contains(&x)));
    }

    #[test]
    fn pixels_blend_and_boxes_of_both_are_kept_up_to_the_cap() {
        let a = [0.0, 1.0, 0.5];
        let b = [1.0, 1.0, 0.0];
        let mut out = vec![f32::NAN; 3];
        mixup_into(&a, &b, 0.25, crate::uninit::as_uninit(&mut out));
        assert_eq!(out, [0.75, 1.0, 0.125]);

        let bx = |c: usize| BoxLabel {
            x_min: 1.0,
            y_min: 1.0,
            x_max: 5.0,
            y_max: 5.0,
            class: c,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let both = mixup_boxes(vec![bx(0), bx(1)], vec![bx(2)], 20, &mut rng);
        let mut classes: Vec<usize> = both.iter().map(|b| b.class).collect();
        classes.sort();
        assert_eq!(classes, [0, 1, 2]);
        let capped = mixup_boxes(vec![bx(0), bx(1)], vec![bx(2), bx(3)], 3, &mut rng);
        assert_eq!(capped.len(), 3);
    }
}
