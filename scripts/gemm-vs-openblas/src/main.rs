//! Prints the GFLOP/s of `gemm` and of OpenBLAS on the convolutions' product shapes (416 input),
//! the best of three timings each, and their ratio. Single-thread rows are what the Winograd
//! blocks and the one-image-per-thread convolutions run; two-thread rows what a convolution on
//! fewer images than threads runs.

use std::time::Instant;

extern "C" {
    fn openblas_set_num_threads(n: i32);
}

/// GFLOP/s of `f`, the best of three rounds of enough repetitions for about a second each.
fn rate(mut f: impl FnMut(), flops: f64) -> f64 {
    f();
    let reps = ((2e9 / flops).ceil() as usize).clamp(3, 200);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    flops / best / 1e9
}

fn main() {
    // (what, m, n, k, threads): row-major C (m x n) = A (m x k) * B (k x n).
    let shapes: &[(&str, usize, usize, usize, usize)] = &[
        ("square 4096", 4096, 4096, 4096, 2),
        ("im2col 3x3 512->1024 @13, 2 threads", 1024, 169, 4608, 2),
        ("im2col 3x3 512->1024 @13, 1 thread", 1024, 169, 4608, 1),
        ("im2col 3x3 s2 16->32 @416, 2 threads", 32, 208 * 208, 144, 2),
        ("im2col 3x3 s2 32->64 @208, 2 threads", 64, 104 * 104, 288, 2),
        ("1x1 512->256 @26, 2 threads", 256, 676, 512, 2),
        ("1x1 512->256 @26, 1 thread", 256, 676, 512, 1),
        ("1x1 1024->512 @13, 1 thread", 512, 169, 1024, 1),
        ("1x1 256->128 @52, 1 thread", 128, 2704, 256, 1),
        ("Winograd F4 block 128->256, 1 thread", 256, 56, 128, 1),
        ("Winograd F4 block 64->128, 1 thread", 128, 110, 64, 1),
        ("Winograd F2 block 256->512, 1 thread", 512, 64, 256, 1),
        ("Winograd F4 block 16->32, 1 thread", 32, 900, 16, 1),
        ("Winograd kernel grad 256x128, 1 thread", 256, 128, 676, 1),
    ];
    println!("{:<42} {:>16} {:>8} {:>9} {:>6}", "shape", "m x n x k", "gemm", "openblas", "ratio");
    for &(what, m, n, k, threads) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let ours = rate(
            || {
                // SAFETY: a, b and c hold exactly m*k, k*n and m*n floats, addressed row-major
                // with the strides given; c does not alias a or b.
                unsafe {
                    gemm::gemm(
                        m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize,
                        b.as_ptr(), 1, n as isize, 1.0, 1.0, false, false, false, par,
                    )
                }
            },
            flops,
        );
        // SAFETY: a plain setter of OpenBLAS' thread count.
        unsafe { openblas_set_num_threads(threads as i32) };
        let blas = rate(
            || {
                // SAFETY: the same buffers and shapes as above, in CBLAS' row-major terms.
                unsafe {
                    cblas_sys::cblas_sgemm(
                        cblas_sys::CblasRowMajor, cblas_sys::CblasNoTrans,
                        cblas_sys::CblasNoTrans, m as i32, n as i32, k as i32, 1.0, a.as_ptr(),
                        k as i32, b.as_ptr(), n as i32, 0.0, c.as_mut_ptr(), n as i32,
                    )
                }
            },
            flops,
        );
        let dims = format!("{m}x{n}x{k}");
        println!("{what:<42} {dims:>16} {ours:>8.1} {blas:>9.1} {:>6.2}", ours / blas);
    }
}
