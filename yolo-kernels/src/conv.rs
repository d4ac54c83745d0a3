//! 2-D convolution as im2col + GEMM on CPU, with a hand-written backward whose two halves are
//! GEMMs too: the kernel gradient is `grad · im2col(x)ᵀ` and the input gradient is
//! `col2im(Wᵀ · grad)`. 1x1 stride-1 unpadded convolutions skip im2col/col2im entirely, and wide
//! 3x3 stride-1 ones go through Winograd F(2x2, 3x3) or F(4x4, 3x3) instead (`winograd/`).
//!
//! candle 0.11 computes the input gradient with a direct-loop `conv_transpose2d`, which made it
//! the bulk of a CPU training step.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::gemm::{sgemm, sgemm_lhs_par, sgemm_lhs_seq, sgemm_seq, Lhs, MatMut, MatRef};
use crate::scratch::with_scratch;
use crate::storage::contiguous_f32;
use crate::winograd;

/// Sizes of one convolution, NCHW input, OIHW kernel, symmetric zero padding, no dilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub b: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Validates and derives the output size from input and kernel dimensions.
    pub fn new(x_dims: &[usize], w_dims: &[usize], stride: usize, pad: usize) -> Result<ConvGeom> {
        let (&[b, c_in, h, w], &[c_out, c_in_k, kh, kw]) = (x_dims, w_dims) else {
            bail!("conv2d: expected 4-D input and kernel, got {x_dims:?} and {w_dims:?}")
        };
        if c_in != c_in_k {
            bail!("conv2d: input has {c_in} channels but the kernel expects {c_in_k}")
        }
        if stride == 0 || kh == 0 || kw == 0 {
            bail!("conv2d: stride {stride} and kernel {kh}x{kw} must be positive")
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            bail!("conv2d: kernel {kh}x{kw} larger than padded input {h}x{w} (padding {pad})")
        }
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (w + 2 * pad - kw) / stride + 1;
        Ok(ConvGeom {
            b,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            pad,
            oh,
            ow,
        })
    }

    /// Rows of the im2col matrix: one per (input channel, ky, kx).
    pub fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    pub fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1x1, stride-1, unpadded convolution is a plain matrix product on the NCHW image.
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// For kernel column `kx`, the range of output columns whose input column is inside the image,
    /// and the offset such that input column = `ox * stride + off`.
    fn valid_cols(&self, kx: usize) -> (usize, usize, isize) {
        valid_range(kx, self.pad, self.stride, self.w, self.ow)
    }

    /// The same for rows.
    fn valid_rows(&self, ky: usize) -> (usize, usize, isize) {
        valid_range(ky, self.pad, self.stride, self.h, self.oh)
    }
}

/// Output indices `o` in `lo..hi` map to input index `o * stride + off` inside `0..size`.
fn valid_range(
    k: usize,
    pad: usize,
    stride: usize,
    size: usize,
    out: usize,
) -> (usize, usize, isize) {
    let off = k as isize - pad as isize;
    let s = stride as isize;
    let lo = if off >= 0 {
        0
    } else {
        ((-off + s - 1) / s) as usize
    };
    let last = size as isize - 1 - off;
    let hi = if last < 0 {
        0
    } else {
        ((last / s) as usize + 1).min(out)
    };
    (lo.min(hi), hi, off)
}

/// Unfolds output rows `oy0..oy1` of one input channel `xc` (`h x w`) into `chunk`
/// (`kh*kw` rows of `(oy1 - oy0) * ow` columns), zero where the window reads padding.
fn im2col_channel(xc: &[f32], g: &ConvGeom, oy0: usize, oy1: usize, chunk: &mut [f32]) {
    let ncols = (oy1 - oy0) * g.ow;
    for ky in 0..g.kh {
        let (ylo, yhi, yoff) = g.valid_rows(ky);
        let (ylo, yhi) = (ylo.clamp(oy0, oy1), yhi.clamp(oy0, oy1));
        for kx in 0..g.kw {
            let (xlo, xhi, xoff) = g.valid_cols(kx);
            let row = &mut chunk[(ky * g.kw + kx) * ncols..][..ncols];
            if ylo >= yhi {
                row.fill(0.0);
                continue;
            }
            row[..(ylo - oy0) * g.ow].fill(0.0);
            row[(yhi - oy0) * g.ow..].fill(0.0);
            for oy in ylo..yhi {
                let iy = (oy as isize * g.stride as isize + yoff) as usize;
                let src = &xc[iy * g.w..][..g.w];
                let dst = &mut row[(oy - oy0) * g.ow..][..g.ow];
                dst[..xlo].fill(0.0);
                dst[xhi..].fill(0.0);
                if g.stride == 1 {
                    let start = (xlo as isize + xoff) as usize;
                    dst[xlo..xhi].copy_from_slice(&src[start..start + (xhi - xlo)]);
                } else {
                    for (ox, d) in dst[xlo..xhi].iter_mut().enumerate() {
                        let ix = ((ox + xlo) * g.stride) as isize + xoff;
                        *d = src[ix as usize];
                    }
                }
            }
        }
    }
}

/// Adds `chunk` (the [`im2col_channel`] layout for output rows `oy0..oy1`) back onto one input
/// channel `xc`, dropping what falls on padding: the adjoint of [`im2col_channel`].
fn col2im_channel(chunk: &[f32], g: &ConvGeom, oy0: usize, oy1: usize, xc: &mut [f32]) {
    let ncols = (oy1 - oy0) * g.ow;
    for ky in 0..g.kh {
        let (ylo, yhi, yoff) = g.valid_rows(ky);
        let (ylo, yhi) = (ylo.clamp(oy0, oy1), yhi.clamp(oy0, oy1));
        for kx in 0..g.kw {
            let (xlo, xhi, xoff) = g.valid_cols(kx);
            let row = &chunk[(ky * g.kw + kx) * ncols..][..ncols];
            for oy in ylo..yhi {
                let iy = (oy as isize * g.stride as isize + yoff) as usize;
                let dst = &mut xc[iy * g.w..][..g.w];
                let src = &row[(oy - oy0) * g.ow..][..g.ow];
                if g.stride == 1 {
                    let start = (xlo as isize + xoff) as usize;
                    for (d, s) in dst[start..start + (xhi - xlo)]
                        .iter_mut()
                        .zip(&src[xlo..xhi])
                    {
                        *d += *s;
                    }
                } else {
                    for (ox, s) in src[xlo..xhi].iter().enumerate() {
                        let ix = ((ox + xlo) * g.stride) as isize + xoff;
                        dst[ix as usize] += *s;
                    }
                }
            }
        }
    }
}

/// Unfolds one whole image (`c_in x h x w`) into `col` (`k() x ohw()`, row-major), in parallel
/// over input channels.
pub(crate) fn im2col(x: &[f32], g: &ConvGeom, col: &mut [f32]) {
    let (hw, ohw, kk) = (g.hw(), g.ohw(), g.kh * g.kw);
    col[..g.k() * ohw]
        .par_chunks_mut(kk * ohw)
        .zip(x[..g.c_in * hw].par_chunks(hw))
        .for_each(|(chunk, xc)| im2col_channel(xc, g, 0, g.oh, chunk));
}

/// Folds `col` (`k() x ohw()`) back onto one image, overwriting it: the adjoint of [`im2col`].
/// Parallel over input channels.
pub(crate) fn col2im(col: &[f32], g: &ConvGeom, x: &mut [f32]) {
    let (hw, ohw, kk) = (g.hw(), g.ohw(), g.kh * g.kw);
    x[..g.c_in * hw]
        .par_chunks_mut(hw)
        .zip(col[..g.k() * ohw].par_chunks(kk * ohw))
        .for_each(|(xc, chunk)| {
            xc.fill(0.0);
            col2im_channel(chunk, g, 0, g.oh, xc);
        });
}

/// Output rows `oy0..oy1` of one image into `col` (`k() x (oy1 - oy0) * ow`), on this thread.
fn im2col_rows(x: &[f32], g: &ConvGeom, oy0: usize, oy1: usize, col: &mut [f32]) {
    let (hw, kk, ncols) = (g.hw(), g.kh * g.kw, (oy1 - oy0) * g.ow);
    for (chunk, xc) in col.chunks_mut(kk * ncols).zip(x.chunks(hw)).take(g.c_in) {
        im2col_channel(xc, g, oy0, oy1, chunk);
    }
}

/// Adds the [`im2col_rows`] layout back onto one image, on this thread.
fn col2im_rows(col: &[f32], g: &ConvGeom, oy0: usize, oy1: usize, x: &mut [f32]) {
    let (hw, kk, ncols) = (g.hw(), g.kh * g.kw, (oy1 - oy0) * g.ow);
    for (xc, chunk) in x.chunks_mut(hw).zip(col.chunks(kk * ncols)).take(g.c_in) {
        col2im_channel(chunk, g, oy0, oy1, xc);
    }
}

/// Whether to run one image per thread (sequential GEMMs on cache-sized row blocks) instead of
/// one image at a time with a multi-threaded GEMM: when there are at least as many images as
/// threads, this keeps im2col/col2im in cache and avoids a pool barrier per GEMM.
fn per_image_threads(g: &ConvGeom) -> bool {
    g.b >= rayon::current_num_threads()
}

/// Output rows per block for the per-image path: about 1 M floats of im2col, at least 256 columns.
fn rows_per_block(g: &ConvGeom) -> usize {
    let cols = ((1 << 20) / g.k().max(1)).max(256);
    (cols / g.ow.max(1)).clamp(1, g.oh.max(1))
}

/// The row blocks `(oy0, oy1)` of the per-image path.
fn row_blocks(g: &ConvGeom) -> impl Iterator<Item = (usize, usize)> {
    let (rows, oh) = (rows_per_block(g), g.oh);
    (0..oh.div_ceil(rows)).map(move |i| (i * rows, ((i + 1) * rows).min(oh)))
}

/// Forward: Winograd for wide 3x3 stride-1 convolutions, im2col + GEMM otherwise.
pub(crate) fn conv_forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    if winograd::applies(g) {
        winograd::forward(g, x, w)
    } else {
        gemm_forward(g, x, w)
    }
}

/// Input gradient, by the same rule as [`conv_forward`].
pub(crate) fn conv_input_grad(g: &ConvGeom, grad: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    if winograd::applies(g) {
        winograd::input_grad(g, grad, w)
    } else {
        gemm_input_grad(g, grad, w)
    }
}

/// Kernel gradient, by the same rule as [`conv_forward`].
pub(crate) fn conv_kernel_grad(g: &ConvGeom, x: &[f32], grad: &[f32]) -> Result<Vec<f32>> {
    if winograd::applies(g) {
        winograd::kernel_grad(g, x, grad)
    } else {
        gemm_kernel_grad(g, x, grad)
    }
}

/// Forward by im2col: `out[b] = W (c_out x k) · im2col(x[b])`.
pub(crate) fn gemm_forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let (hw, ohw, k) = (g.hw(), g.ohw(), g.k());
    let mut out = vec![0f32; g.b * g.c_out * ohw];
    let wm = Lhs::new(MatRef::row_major(w, k), g.c_out, k)?;
    if per_image_threads(g) {
        out.par_chunks_mut(g.c_out * ohw)
            .zip(x.par_chunks(g.c_in * hw))
            .try_for_each(|(ob, xb)| -> Result<()> {
                if g.pointwise() {
                    let xm = MatRef::row_major(xb, hw);
                    return sgemm_lhs_seq(&wm, ohw, xm, MatMut { data: ob, rs: ohw }, false);
                }
                // im2col or a non-accumulating GEMM writes all of `col` before it is read.
                with_scratch(k * rows_per_block(g) * g.ow, 0, |col, _| -> Result<()> {
                    for (oy0, oy1) in row_blocks(g) {
                        let ncols = (oy1 - oy0) * g.ow;
                        let col = &mut col[..k * ncols];
                        im2col_rows(xb, g, oy0, oy1, col);
                        let dst = MatMut {
                            data: &mut ob[oy0 * g.ow..],
                            rs: ohw,
                        };
                        sgemm_lhs_seq(&wm, ncols, MatRef::row_major(col, ncols), dst, false)?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
    } else if g.pointwise() {
        for b in 0..g.b {
            let xb = MatRef::row_major(&x[b * g.c_in * hw..][..g.c_in * hw], hw);
            let ob = &mut out[b * g.c_out * ohw..][..g.c_out * ohw];
            sgemm_lhs_par(&wm, ohw, xb, MatMut { data: ob, rs: ohw }, false)?;
        }
    } else {
        let mut col = vec![0f32; k * ohw];
        for b in 0..g.b {
            im2col(&x[b * g.c_in * hw..][..g.c_in * hw], g, &mut col);
            let ob = &mut out[b * g.c_out * ohw..][..g.c_out * ohw];
            sgemm_lhs_par(
                &wm,
                ohw,
                MatRef::row_major(&col, ohw),
                MatMut { data: ob, rs: ohw },
                false,
            )?;
        }
    }
    Ok(out)
}

/// Input gradient by col2im: `dx[b] = col2im(Wᵀ (k x c_out) · grad[b])`.
pub(crate) fn gemm_input_grad(g: &ConvGeom, grad: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let (hw, ohw, k) = (g.hw(), g.ohw(), g.k());
    let mut dx = vec![0f32; g.b * g.c_in * hw];
    let wt = Lhs::new(MatRef::transposed(w, k), k, g.c_out)?;
    if per_image_threads(g) {
        dx.par_chunks_mut(g.c_in * hw)
            .zip(grad.par_chunks(g.c_out * ohw))
            .try_for_each(|(db, gb)| -> Result<()> {
                if g.pointwise() {
                    let gm = MatRef::row_major(gb, ohw);
                    return sgemm_lhs_seq(&wt, hw, gm, MatMut { data: db, rs: hw }, false);
                }
                // im2col or a non-accumulating GEMM writes all of `col` before it is read.
                with_scratch(k * rows_per_block(g) * g.ow, 0, |col, _| -> Result<()> {
                    for (oy0, oy1) in row_blocks(g) {
                        let ncols = (oy1 - oy0) * g.ow;
                        let col = &mut col[..k * ncols];
                        let gm = MatRef {
                            data: &gb[oy0 * g.ow..],
                            rs: ohw,
                            cs: 1,
                        };
                        let dst = MatMut {
                            data: &mut *col,
                            rs: ncols,
                        };
                        sgemm_lhs_seq(&wt, ncols, gm, dst, false)?;
                        col2im_rows(col, g, oy0, oy1, db);
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
    } else if g.pointwise() {
        for b in 0..g.b {
            let gb = MatRef::row_major(&grad[b * g.c_out * ohw..][..g.c_out * ohw], ohw);
            let db = &mut dx[b * g.c_in * hw..][..g.c_in * hw];
            sgemm_lhs_par(&wt, hw, gb, MatMut { data: db, rs: hw }, false)?;
        }
    } else {
        let mut col = vec![0f32; k * ohw];
        for b in 0..g.b {
            let gb = MatRef::row_major(&grad[b * g.c_out * ohw..][..g.c_out * ohw], ohw);
            sgemm_lhs_par(
                &wt,
                ohw,
                gb,
                MatMut {
                    data: &mut col,
                    rs: ohw,
                },
                false,
            )?;
            col2im(&col, g, &mut dx[b * g.c_in * hw..][..g.c_in * hw]);
        }
    }
    Ok(dx)
}

/// Kernel gradient by im2col: `dW = Σ_b grad[b] (c_out x ohw) · im2col(x[b])ᵀ`.
pub(crate) fn gemm_kernel_grad(g: &ConvGeom, x: &[f32], grad: &[f32]) -> Result<Vec<f32>> {
    let (hw, ohw, k) = (g.hw(), g.ohw(), g.k());
    if per_image_threads(g) {
        let partials = (0..g.b)
            .into_par_iter()
            .fold(
                || Ok(vec![0f32; g.c_out * k]),
                |acc: Result<Vec<f32>>, b| {
                    let mut acc = acc?;
                    let xb = &x[b * g.c_in * hw..][..g.c_in * hw];
                    let gb = &grad[b * g.c_out * ohw..][..g.c_out * ohw];
                    if g.pointwise() {
                        let (gm, xt) = (MatRef::row_major(gb, ohw), MatRef::transposed(xb, hw));
                        let dst = MatMut {
                            data: &mut acc,
                            rs: k,
                        };
                        sgemm_seq(g.c_out, k, ohw, gm, xt, dst, true)?;
                        return Ok(acc);
                    }
                    // im2col or a non-accumulating GEMM writes all of `col` before it is read.
                    with_scratch(k * rows_per_block(g) * g.ow, 0, |col, _| -> Result<()> {
                        for (oy0, oy1) in row_blocks(g) {
                            let ncols = (oy1 - oy0) * g.ow;
                            let col = &mut col[..k * ncols];
                            im2col_rows(xb, g, oy0, oy1, col);
                            let gm = MatRef {
                                data: &gb[oy0 * g.ow..],
                                rs: ohw,
                                cs: 1,
                            };
                            let ct = MatRef::transposed(col, ncols);
                            let dst = MatMut {
                                data: &mut acc,
                                rs: k,
                            };
                            sgemm_seq(g.c_out, k, ncols, gm, ct, dst, true)?;
                        }
                        Ok(())
                    })?;
                    Ok(acc)
                },
            )
            .collect::<Result<Vec<Vec<f32>>>>()?;
        let mut parts = partials.into_iter();
        let mut dw = parts.next().unwrap_or_else(|| vec![0f32; g.c_out * k]);
        for p in parts {
            dw.par_chunks_mut(1 << 14)
                .zip(p.par_chunks(1 << 14))
                .for_each(|(d, p)| d.iter_mut().zip(p).for_each(|(d, p)| *d += p));
        }
        return Ok(dw);
    }
    let mut dw = vec![0f32; g.c_out * k];
    if g.pointwise() {
        for b in 0..g.b {
            let gb = MatRef::row_major(&grad[b * g.c_out * ohw..][..g.c_out * ohw], ohw);
            let xt = MatRef::transposed(&x[b * g.c_in * hw..][..g.c_in * hw], hw);
            sgemm(
                g.c_out,
                k,
                ohw,
                gb,
                xt,
                MatMut {
                    data: &mut dw,
                    rs: k,
                },
                b > 0,
            )?;
        }
    } else {
        let mut col = vec![0f32; k * ohw];
        for b in 0..g.b {
            im2col(&x[b * g.c_in * hw..][..g.c_in * hw], g, &mut col);
            let gb = MatRef::row_major(&grad[b * g.c_out * ohw..][..g.c_out * ohw], ohw);
            sgemm(
                g.c_out,
                k,
                ohw,
                gb,
                MatRef::transposed(&col, ohw),
                MatMut {
                    data: &mut dw,
                    rs: k,
                },
                b > 0,
            )?;
        }
    }
    Ok(dw)
}

/// `conv2d(x, w)` as a candle custom op with its own backward (CPU, f32, contiguous).
pub(crate) struct Conv2dOp {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "yolo-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "conv2d input")?;
        let w = contiguous_f32(s2, l2, "conv2d kernel")?;
        let g = ConvGeom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let out = conv_forward(&g, x, w)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.b, g.c_out, g.oh, g.ow)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // An argument outside the graph (the input image, a detached frozen prefix, a constant
        // kernel) gets no gradient, which saves a GEMM and a col2im per image.
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gx = if x.track_op() {
            let op = ConvInputGradOp {
                stride: self.stride,
                pad: self.pad,
                h,
                w: wd,
            };
            Some(grad.apply_op2_no_bwd(w, &op)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            let op = ConvKernelGradOp {
                stride: self.stride,
                pad: self.pad,
                kh,
                kw,
            };
            Some(x.apply_op2_no_bwd(&grad, &op)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// `(grad, w) -> dx` for an input of spatial size `h x w` (needed because strided convolutions
/// map several input sizes onto one output size).
pub(crate) struct ConvInputGradOp {
    pub stride: usize,
    pub pad: usize,
    pub h: usize,
    pub w: usize,
}

impl CustomOp2 for ConvInputGradOp {
    fn name(&self) -> &'static str {
        "yolo-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let grad = contiguous_f32(s1, l1, "conv2d output gradient")?;
        let w = contiguous_f32(s2, l2, "conv2d kernel")?;
        let (&[b, _, _, _], &[_, c_in, _, _]) = (l1.dims(), l2.dims()) else {
            bail!("conv2d input gradient: expected 4-D tensors")
        };
        let g = ConvGeom::new(&[b, c_in, self.h, self.w], l2.dims(), self.stride, self.pad)?;
        if l1.dims() != [g.b, g.c_out, g.oh, g.ow] {
            bail!(
                "conv2d input gradient: grad {:?} does not match {g:?}",
                l1.dims()
            )
        }
        let dx = conv_input_grad(&g, grad, w)?;
        Ok((CpuStorage::F32(dx), Shape::from((g.b, g.c_in, g.h, g.w))))
    }
}

/// `(x, grad) -> dW` for a `kh x kw` kernel.
pub(crate) struct ConvKernelGradOp {
    pub stride: usize,
    pub pad: usize,
    pub kh: usize,
    pub kw: usize,
}

impl CustomOp2 for ConvKernelGradOp {
    fn name(&self) -> &'static str {
        "yolo-conv2d-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "conv2d input")?;
        let grad = contiguous_f32(s2, l2, "conv2d output gradient")?;
        let (&[_, c_in, _, _], &[_, c_out, _, _]) = (l1.dims(), l2.dims()) else {
            bail!("conv2d kernel gradient: expected 4-D tensors")
        };
        let g = ConvGeom::new(
            l1.dims(),
            &[c_out, c_in, self.kh, self.kw],
            self.stride,
            self.pad,
        )?;
        if l2.dims() != [g.b, g.c_out, g.oh, g.ow] {
            bail!(
                "conv2d kernel gradient: grad {:?} does not match {g:?}",
                l2.dims()
            )
        }
        let dw = conv_kernel_grad(&g, x, grad)?;
        Ok((
            CpuStorage::F32(dw),
            Shape::from((g.c_out, g.c_in, g.kh, g.kw)),
        ))
    }
}
