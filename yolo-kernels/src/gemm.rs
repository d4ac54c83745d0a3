//! A safe, bounds-checked wrapper around the `gemm` crate's f32 matrix product (the same crate
//! candle's CPU matmul uses), so the convolution kernels can multiply strided views of their buffers
//! without copying them into contiguous matrices first. With bf16 products turned on
//! ([`crate::set_bf16_matmul`]) the larger products go to the AMX tile kernel instead.

use candle_core::{bail, Result};

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix stored contiguously.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns (so `cols` rows of the result).
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) -> Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
        if last >= self.data.len() {
            bail!(
                "sgemm: {what} view {rows}x{cols} (rs {}, cs {}) exceeds its buffer of {}",
                self.rs,
                self.cs,
                self.data.len()
            )
        }
        Ok(())
    }
}

/// A mutable row-major destination with row stride `rs`.
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rs: usize,
}

/// A left-hand side used against many right-hand sides (a convolution kernel against every
/// image or block): its f32 view, and, when bf16 products are on and it has enough rows, its AMX
/// tiles, packed once here instead of in every product.
pub(crate) struct Lhs<'a> {
    view: MatRef<'a>,
    m: usize,
    k: usize,
    tiles: Option<crate::amx::PackedA>,
}

impl<'a> Lhs<'a> {
    /// The `m x k` matrix `view`, checked against its buffer.
    pub fn new(view: MatRef<'a>, m: usize, k: usize) -> Result<Self> {
        view.check(m, k, "lhs")?;
        let tiles = (crate::amx::bf16_matmul() && crate::amx::worth_tiles(m, usize::MAX, k))
            .then(|| crate::amx::PackedA::new(view, m, k, true));
        Ok(Lhs { view, m, k, tiles })
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)` on the calling thread only, as
/// [`sgemm_seq`], with a prepared left-hand side.
pub(crate) fn sgemm_lhs_seq(
    lhs: &Lhs<'_>,
    n: usize,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
) -> Result<()> {
    sgemm_lhs(lhs, n, rhs, dst, accumulate, gemm::Parallelism::None)
}

/// [`sgemm`] with a prepared left-hand side.
pub(crate) fn sgemm_lhs_par(
    lhs: &Lhs<'_>,
    n: usize,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
) -> Result<()> {
    let p = gemm_parallelism(lhs.m, n, lhs.k);
    sgemm_lhs(lhs, n, rhs, dst, accumulate, p)
}

fn sgemm_lhs(
    lhs: &Lhs<'_>,
    n: usize,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) -> Result<()> {
    let (m, k) = (lhs.m, lhs.k);
    match &lhs.tiles {
        Some(a) if n > 0 && crate::amx::worth_tiles(m, n, k) => {
            debug_assert_eq!(a.rows(), m);
            rhs.check(k, n, "rhs")?;
            check_dst(m, n, dst.rs, dst.data.len())?;
            let parallel = matches!(parallelism, gemm::Parallelism::Rayon(_));
            crate::amx::sgemm_bf16_packed(a, n, rhs, dst, accumulate, parallel);
            Ok(())
        }
        _ => sgemm_with(m, n, k, lhs.view, rhs, dst, accumulate, parallelism),
    }
}

/// An error unless an `m x n` destination (`m, n >= 1`) with row stride `rs` fits in `len` floats.
fn check_dst(m: usize, n: usize, rs: usize, len: usize) -> Result<()> {
    if (m - 1) * rs + n > len || rs < n {
        bail!("sgemm: dst {m}x{n} (rs {rs}) exceeds its buffer of {len}")
    }
    Ok(())
}

/// The number of threads the GEMM may use: rayon's pool size (both cores on the target machine).
pub(crate) fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    // Tiny products are not worth waking the pool for.
    if threads <= 1 || m * n * k < 32 * 32 * 32 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)`, accumulating into `dst`
/// when `accumulate` is set and overwriting it otherwise.
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
) -> Result<()> {
    sgemm_with(
        m,
        n,
        k,
        lhs,
        rhs,
        dst,
        accumulate,
        gemm_parallelism(m, n, k),
    )
}

/// [`sgemm`] on the calling thread only, for callers that parallelise over images themselves.
pub(crate) fn sgemm_seq(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
) -> Result<()> {
    sgemm_with(m, n, k, lhs, rhs, dst, accumulate, gemm::Parallelism::None)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_with(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    dst: MatMut<'_>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) -> Result<()> {
    let (dst, dst_rs) = (dst.data, dst.rs);
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_dst(m, n, dst_rs, dst.len())?;
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..row * dst_rs + n].fill(0.0);
            }
        }
        return Ok(());
    }
    lhs.check(m, k, "lhs")?;
    rhs.check(k, n, "rhs")?;
    if crate::amx::bf16_matmul() && crate::amx::worth_tiles(m, n, k) {
        let parallel = matches!(parallelism, gemm::Parallelism::Rayon(_));
        let dst = MatMut {
            data: dst,
            rs: dst_rs,
        };
        crate::amx::sgemm_bf16(m, n, k, lhs, rhs, dst, accumulate, parallel);
        return Ok(());
    }
    // SAFETY: every index the product touches was bounds-checked above against the slices, and
    // `dst` is borrowed mutably so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
    Ok(())
}
