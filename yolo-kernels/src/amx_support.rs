//! Whether the CPU and the OS run AMX bf16 tile instructions. Shared with the build script, which
//! marks the tile tests ignored on machines without them.

/// True when CPUID reports AMX-TILE and AMX-BF16 (with AVX-512 BW and BF16, which
/// the packing loops use)
/// and Linux grants this process the tile-data register state.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn amx_bf16_supported() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if !(std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512bf16"))
    {
        return false;
    }
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let (amx_bf16, amx_tile) = (edx & (1 << 22) != 0, edx & (1 << 24) != 0);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    // Linux hands out the 8 KiB tile-data state only to processes that ask for it; the request
    // fails where the kernel or the hypervisor does not enable it.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this arch_prctl request only extends the set of register states the kernel saves
    // for this process; it reads and writes no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

/// AMX exists only on x86-64, and only Linux's way of enabling it is implemented.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(crate) fn amx_bf16_supported() -> bool {
    false
}
