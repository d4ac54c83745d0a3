//! Helpers for the element-wise CPU kernels: compiling a loop for AVX2 when the CPU has it, and a
//! branch-free leaky ReLU factor.

/// Runs `f` compiled for AVX2 when the CPU has it. The kernels' loops are element-wise, and LLVM
/// vectorises what is inlined here twice as wide as for the baseline x86-64 target. Call it inside
/// each rayon task: closures that rayon runs are not inlined into this one.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        /// `f`, compiled with AVX2 enabled.
        ///
        /// # Safety
        /// The CPU must support AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { run(f) };
        }
    }
    f()
}

/// `1` where `v > 0`, else `slope`. Multiplying by it applies leaky ReLU (or, with `v` the
/// activation's output, its derivative) with the same products as the branchy
/// `if v > 0 { x } else { slope * x }`, but LLVM turns it into a vector select; the branchy form
/// compiled to a data-dependent jump that mispredicts on about half of all activations.
#[inline(always)]
pub(crate) fn leaky_factor(v: f32, slope: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else {
        slope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaky_factor_times_x_is_leaky_relu_bit_for_bit() {
        for x in [-3.5f32, -1e-30, -0.0, 0.0, 1e-30, 0.7, 1e6] {
            let branchy = if x > 0.0 { x } else { 0.1 * x };
            assert_eq!(
                (x * leaky_factor(x, 0.1)).to_bits(),
                branchy.to_bits(),
                "{x}"
            );
        }
        assert_eq!(with_avx2(|| 2 + 2), 4);
    }
}
