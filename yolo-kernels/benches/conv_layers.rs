//! The 3x3 stride-1 convolutions of keras-yolo3's `darknet_body` and `make_last_layers`
//! (`DarknetConv2D` with `padding='same'`) at 416x416, batch 4, forward and forward + backward
//! (input and kernel gradients), by Winograd (F(4x4, 3x3) tiles on the 104x104 and 52x52 maps,
//! F(2x2, 3x3) on 26x26) and by im2col + GEMM, in one run so the two can be compared as a ratio
//! on a noisy machine.
//!
//! At 13x13 and batch 4 a layer has only 196 2x2 tiles, below the Winograd path's minimum of 256,
//! so both of its rows run im2col: the pair shows the run's noise.
//!
//! Reported: criterion's time per call, plus a line per benchmark with the effective GFLOP/s of
//! the direct convolution (2 * 9 * c_in * c_out * h * w * batch per forward; forward + backward
//! counted as 3x).
//!
//! Run: `cargo bench -p yolo-kernels --profile release --bench conv_layers` (a filter such as
//! `13x13` or `winograd` runs less).

/// The allocator of the `yolo` binary, so the figures match what training sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};
use criterion::{black_box, criterion_main, BenchmarkId, Criterion};
use yolo_kernels as ops;

const BATCH: usize = 4;

/// (c_in, c_out, size): the residual blocks' 3x3 convs of each Darknet-53 stage at 416 input.
const LAYERS: &[(usize, usize, usize)] = &[
    (64, 128, 104),
    (128, 256, 52),
    (256, 512, 26),
    (512, 1024, 13),
];

fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| (((i + seed) * 2654435761 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn bench_conv_layers(c: &mut Criterion) {
    for train in [false, true] {
        let mut group = c.benchmark_group(if train {
            "conv3x3_forward_backward"
        } else {
            "conv3x3_forward"
        });
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(4));
        for &(ci, co, s) in LAYERS {
            let x = Var::from_tensor(&tensor(&[BATCH, ci, s, s], 1)).unwrap();
            let w = Var::from_tensor(&tensor(&[co, ci, 3, 3], 2)).unwrap();
            let r = tensor(&[BATCH, co, s, s], 3);
            let flops =
                2.0 * 9.0 * (ci * co * s * s * BATCH) as f64 * if train { 3.0 } else { 1.0 };
            for winograd in [true, false] {
                ops::set_winograd(winograd);
                let algo = if winograd { "winograd" } else { "im2col" };
                let id = BenchmarkId::new(algo, format!("{ci}-{co}@{s}x{s}"));
                let step = || {
                    let y = ops::conv2d(x.as_tensor(), w.as_tensor(), 1, 1).unwrap();
                    if train {
                        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                        black_box(grads.get(w.as_tensor()).map(|g| g.dims().to_vec()));
                    } else {
                        black_box(y);
                    }
                };
                // One timed call for the GFLOP/s line (criterion's own statistics follow).
                step();
                let t = Instant::now();
                step();
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "{algo} {ci}->{co} @{s}: {:.1} ms, {:.1} effective GFLOP/s",
                    secs * 1e3,
                    flops / secs / 1e9
                );
                group.bench_function(id, |b| b.iter(step));
            }
        }
        group.finish();
    }
    ops::set_winograd(true);
}

/// The benchmark group `main` runs: `criterion_group!`'s expansion, written out so that it can
/// carry this doc comment.
pub fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench_conv_layers(&mut c);
}
criterion_main!(benches);
