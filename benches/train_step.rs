//! Issue 7: CPU training speed. Per-layer forward/backward timings of the four convolutions in the
//! issue's table (batch 4), candle 0.11's own ops against `yolo_model::ops`, next to a GEMM
//! reference rate (4096² f32 through the same `gemm` crate candle uses, all rayon threads).
//!
//! Run: `cargo bench -p yolov3 --bench train_step --profile dev` (add a criterion filter such as
//! `layer` or `gemm` to run less). Besides criterion's own report it prints a summary table with
//! medians, effective GFLOP/s and the ratio to the GEMM rate measured in the same run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};
use criterion::{black_box, Criterion};
use yolov3::model::ops;

/// Per-iteration seconds recorded by every `iter_custom` sample, keyed by benchmark id.
static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(id: &str, total: Duration, iters: u64) {
    let per_iter = total.as_secs_f64() / iters.max(1) as f64;
    SAMPLES
        .lock()
        .expect("samples lock")
        .entry(id.to_string())
        .or_default()
        .push(per_iter);
}

fn median(id: &str) -> Option<f64> {
    let samples = SAMPLES.lock().expect("samples lock");
    let mut v = samples.get(id)?.clone();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// One convolution of the table.
struct Layer {
    name: &'static str,
    batch: usize,
    c_in: usize,
    c_out: usize,
    size: usize,
    k: usize,
    stride: usize,
}

impl Layer {
    fn pad(&self) -> usize {
        self.k / 2
    }

    fn out_size(&self) -> usize {
        (self.size + 2 * self.pad() - self.k) / self.stride + 1
    }

    /// Multiply-adds x 2 of the forward pass.
    fn fwd_flops(&self) -> f64 {
        let o = self.out_size();
        2.0 * (self.batch * self.c_out * o * o * self.c_in * self.k * self.k) as f64
    }
}

const LAYERS: &[Layer] = &[
    Layer {
        name: "3x3 256->512 @26",
        batch: 4,
        c_in: 256,
        c_out: 512,
        size: 26,
        k: 3,
        stride: 1,
    },
    Layer {
        name: "1x1 512->256 @26",
        batch: 4,
        c_in: 512,
        c_out: 256,
        size: 26,
        k: 1,
        stride: 1,
    },
    Layer {
        name: "3x3s2 128->256 @104",
        batch: 4,
        c_in: 128,
        c_out: 256,
        size: 104,
        k: 3,
        stride: 2,
    },
    Layer {
        name: "3x3 32->64 @208",
        batch: 4,
        c_in: 32,
        c_out: 64,
        size: 208,
        k: 3,
        stride: 1,
    },
];

type ConvFn = fn(&Tensor, &Tensor, usize, usize) -> candle_core::Result<Tensor>;

fn candle_conv(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> candle_core::Result<Tensor> {
    x.conv2d(w, pad, stride, 1, 1)
}

fn bench_layers(c: &mut Criterion) {
    let dev = Device::Cpu;
    let impls: [(&str, ConvFn); 2] = [("candle", candle_conv), ("ours", ops::conv2d)];
    let mut group = c.benchmark_group("layer");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for layer in LAYERS {
        let x = Var::randn(
            0f32,
            1.0,
            (layer.batch, layer.c_in, layer.size, layer.size),
            &dev,
        )
        .expect("x");
        let w = Var::randn(
            0f32,
            0.05,
            (layer.c_out, layer.c_in, layer.k, layer.k),
            &dev,
        )
        .expect("w");
        for (imp, conv) in impls {
            let id = format!("{}/{imp}/fwd", layer.name);
            group.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        black_box(conv(&x, &w, layer.stride, layer.pad()).expect("conv"));
                    }
                    let el = t.elapsed();
                    record(&id, el, iters);
                    el
                })
            });
            // Backward alone: the forward is outside the timed region, and `backward` seeds the
            // output gradient with ones, so only the conv's input and kernel gradients are timed.
            let id = format!("{}/{imp}/bwd", layer.name);
            group.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let mut el = Duration::ZERO;
                    for _ in 0..iters {
                        let y = conv(x.as_tensor(), w.as_tensor(), layer.stride, layer.pad())
                            .expect("conv");
                        let t = Instant::now();
                        let grads = y.backward().expect("backward");
                        el += t.elapsed();
                        assert!(grads.get(x.as_tensor()).is_some());
                        assert!(grads.get(w.as_tensor()).is_some());
                    }
                    record(&id, el, iters);
                    el
                })
            });
        }
    }
    group.finish();
}

/// GFLOP/s of a 4096² f32 GEMM through the `gemm` crate with all rayon threads.
fn bench_gemm(c: &mut Criterion) {
    const N: usize = 4096;
    let a: Vec<f32> = (0..N * N).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let b: Vec<f32> = (0..N * N).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut d = vec![0f32; N * N];
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("gemm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("4096", |bch| {
        bch.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                // SAFETY: all three buffers are N x N row-major and `d` does not alias `a` or `b`.
                unsafe {
                    gemm::gemm(
                        N,
                        N,
                        N,
                        d.as_mut_ptr(),
                        1,
                        N as isize,
                        false,
                        a.as_ptr(),
                        1,
                        N as isize,
                        b.as_ptr(),
                        1,
                        N as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(threads),
                    )
                }
                black_box(&d);
            }
            let el = t.elapsed();
            record("gemm/4096", el, iters);
            el
        })
    });
    group.finish();
}

fn gemm_rate() -> Option<f64> {
    median("gemm/4096").map(|s| 2.0 * 4096f64.powi(3) / s / 1e9)
}

fn print_layer_summary() {
    let gemm = gemm_rate();
    println!("\n== issue 7 summary (medians; effective GFLOP/s counts backward as 2x forward) ==");
    match gemm {
        Some(g) => println!(
            "GEMM reference 4096^2 f32, gemm crate, {} threads: {g:.1} GFLOP/s",
            rayon::current_num_threads()
        ),
        None => println!("GEMM reference: not run (filtered out)"),
    }
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9} {:>7}",
        "layer (batch 4)",
        "candle fwd",
        "candle bwd",
        "ours fwd",
        "ours bwd",
        "fwd x",
        "bwd x",
        "GFLOP/s",
        "/GEMM"
    );
    for layer in LAYERS {
        let get = |imp: &str, dir: &str| median(&format!("{}/{imp}/{dir}", layer.name));
        let (Some(cf), Some(cb), Some(of), Some(ob)) = (
            get("candle", "fwd"),
            get("candle", "bwd"),
            get("ours", "fwd"),
            get("ours", "bwd"),
        ) else {
            continue;
        };
        let rate = 3.0 * layer.fwd_flops() / (of + ob) / 1e9;
        let ratio = gemm
            .map(|g| format!("{:.2}", rate / g))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<22} {:>9.4}s {:>9.4}s {:>9.4}s {:>9.4}s {:>7.2}x {:>7.2}x {:>9.1} {:>7}",
            layer.name,
            cf,
            cb,
            of,
            ob,
            cf / of,
            cb / ob,
            rate,
            ratio
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_gemm(&mut c);
    bench_layers(&mut c);
    c.final_summary();
    print_layer_summary();
}
