//! Helpers for the element-wise CPU kernels: compiling a loop for the widest vector instruction
//! set the CPU has (AVX-512, else AVX2), chosen at run time, and a branch-free leaky ReLU factor.

/// The vector instruction sets [`with_simd`] compiles a loop for, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SimdTier {
    /// AVX-512 F (16 f32 lanes).
    Avx512,
    /// AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// The compile target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
}

/// The widest tier this CPU runs, detected once (the check is a cached CPUID read).
pub(crate) fn simd_tier() -> SimdTier {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return SimdTier::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return SimdTier::Avx2;
        }
    }
    SimdTier::Baseline
}

/// Runs `f` compiled for the widest vector instruction set the CPU has. The kernels' loops are
/// element-wise, and LLVM vectorises what is inlined here two (AVX2) or four (AVX-512) times as
/// wide as for the baseline x86-64 target. The results are bit-identical in every tier: the loops
/// have no reductions LLVM may reorder and no fused multiply-adds it may contract. Call it inside
/// each rayon task: closures that rayon runs are not inlined into this one.
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    with_tier(simd_tier(), f)
}

/// [`with_simd`] for a given tier, which must be one the CPU runs (a lower one is allowed, so
/// tests can compare the tiers).
#[inline(always)]
pub(crate) fn with_tier<R>(tier: SimdTier, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        /// `f`, compiled with AVX-512 F enabled.
        ///
        /// # Safety
        /// The CPU must support AVX-512 F.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        /// `f`, compiled with AVX2 and FMA enabled.
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match tier {
            SimdTier::Avx512 if std::is_x86_feature_detected!("avx512f") => {
                // SAFETY: the CPU supports AVX-512 F, checked just above (it implies AVX2 and
                // FMA on every CPU that has it).
                return unsafe { run_avx512(f) };
            }
            SimdTier::Avx512 | SimdTier::Avx2
                if std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma") =>
            {
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                return unsafe { run_avx2(f) };
            }
            _ => {}
        }
    }
    let _ = tier;
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
    }

    /// The same element-wise loop in every tier the CPU runs gives the same bits.
    #[test]
    fn every_available_tier_gives_the_same_bits() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.37).collect();
        let apply = |tier| {
            with_tier(tier, || {
                x.iter()
                    .map(|&v| (v * leaky_factor(v, 0.1) + 0.5) * 1.25)
                    .map(f32::to_bits)
                    .collect::<Vec<_>>()
            })
        };
        let base = apply(SimdTier::Baseline);
        let best = simd_tier();
        for tier in [SimdTier::Avx512, SimdTier::Avx2] {
            if tier == best || (tier == SimdTier::Avx2 && best == SimdTier::Avx512) {
                assert_eq!(apply(tier), base, "{tier:?}");
            }
        }
        assert_eq!(with_simd(|| 2 + 2), 4);
    }
}
