//! The low-level tensor kernels of the YOLOv3 trainer, behind a small differentiable surface: fast
//! CPU custom ops (with their own backward) that replace candle's defaults for the network's
//! convolutions, batch norms, activations and L2 penalty, and fall back to candle's own ops on
//! CUDA, Metal, other dtypes, or whenever [`generic_ops`] is on.
//!
//! # Contents
//!
//! The public surface (`surface.rs`, `sum_of_squares.rs`):
//! * [`conv2d`]: 2-D convolution without bias; [`set_winograd`] switches its Winograd path.
//! * [`batch_norm_leaky_train`], [`affine_leaky`]: training- and inference-mode batch norm fused
//!   with leaky ReLU.
//! * [`leaky_relu`], [`upsample2x`], [`max_pool2x2`], [`max_pool_2x2_s1_same`]: the remaining
//!   layers' ops.
//! * [`sum_of_squares()`]: `Σ w²` for the L2 kernel penalty.
//! * [`generic_ops`], [`set_generic_ops`]: force candle's device-generic ops on the CPU too.
//! * [`amx_bf16_available`], [`set_bf16_matmul`], [`bf16_matmul_scope`]: bf16 convolution
//!   products on CPUs with AMX (`amx.rs`), for `--precision bf16` on the CPU.
//!
//! The kernels behind it (private):
//! * `conv.rs`: convolution geometry, im2col/col2im, the GEMM-based convolution and its two
//!   gradients as custom ops, and the dispatch to Winograd.
//! * `winograd/`: Winograd convolution for wide 3x3 stride-1 'same' convolutions: the
//!   tile-size-agnostic driver (`mod.rs`), the block tiling (`tiling.rs`), and the transforms of
//!   F(2x2, 3x3) (`f2x2.rs`) and F(4x4, 3x3) (`f4x4.rs`).
//! * `gemm.rs`: strided matrix views and the calls into the `gemm` crate (or, with bf16
//!   products on, into `amx.rs`'s tile kernel; `amx_support.rs` detects AMX).
//! * `bn_leaky.rs`: the fused batch norm + leaky ReLU custom ops, forward and backward.
//! * `leaky.rs`: the leaky ReLU custom op.
//! * `max_pool.rs`: tiny YOLOv3's stride-2 max pool as a custom op.
//! * `simd.rs`: AVX-512 / AVX2 dispatch for the element-wise loops and the branch-free leaky factor.
//! * `scratch.rs`: per-thread scratch buffers for temporaries.
//! * `storage.rs`: the f32 slice behind a custom op's CPU storage.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod amx;
mod amx_support;
mod bn_leaky;
mod conv;
mod gemm;
mod leaky;
mod max_pool;
mod scratch;
mod simd;
mod storage;
mod sum_of_squares;
mod surface;
mod winograd;

pub use amx::{
    amx_bf16_available, bf16_matmul, bf16_matmul_scope, set_bf16_matmul, Bf16MatmulScope,
};
pub use sum_of_squares::sum_of_squares;
pub use surface::{
    affine_leaky, batch_norm_leaky_train, conv2d, generic_ops, leaky_relu, max_pool2x2,
    max_pool_2x2_s1_same, set_generic_ops, set_winograd, upsample2x,
};
