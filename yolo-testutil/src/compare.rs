//! Relative errors between named sets of values (a model's gradients, moving statistics or
//! weights after a step), for the tests that compare one training path with another.

use std::collections::BTreeMap;

/// `|a - b| / |a|` in the L2 norm over all tensors together, with the name and error of the worst
/// single tensor. Both maps must hold the same names; `a` is the reference.
pub fn relative_l2(
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
) -> (f64, String, f64) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the two sets name different tensors"
    );
    let (mut num, mut den) = (0f64, 0f64);
    let mut worst = (String::new(), 0f64);
    for (k, x) in a {
        let (mut n, mut d) = (0f64, 0f64);
        for (p, q) in x.iter().zip(&b[k]) {
            n += f64::from(p - q).powi(2);
            d += f64::from(*p).powi(2);
        }
        num += n;
        den += d;
        let r = (n / d.max(1e-30)).sqrt();
        if r > worst.1 {
            worst = (k.clone(), r);
        }
    }
    ((num / den.max(1e-30)).sqrt(), worst.0, worst.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_l2_is_the_norm_ratio_and_names_the_worst_tensor() {
        let a = BTreeMap::from([("x".to_string(), vec![3.0, 4.0]), ("y".into(), vec![1.0])]);
        let b = BTreeMap::from([("x".to_string(), vec![3.0, 4.0]), ("y".into(), vec![2.0])]);
        let (all, name, worst) = relative_l2(&a, &b);
        // |a - b| = 1, |a| = sqrt(26); y alone is off by 100%.
        assert!((all - 1.0 / 26f64.sqrt()).abs() < 1e-12, "{all}");
        assert_eq!((name.as_str(), worst), ("y", 1.0));
        assert_eq!(relative_l2(&a, &a).0, 0.0);
    }
}
