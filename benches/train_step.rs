//! CPU training speed.
//!
//! * `gemm`: the GEMM reference rate (4096² f32 through the same `gemm` crate candle uses, all
//!   rayon threads).
//! * `step`: full training steps with the model's public API (`yolo_body`, `forward_t`, loss = sum
//!   of squared raw outputs, `backward`): YOLOv3 416 1 class all trainable batch 4, freeze_body=2
//!   batch 16, tiny 416 all trainable batch 8; and bottleneck extraction (`forward_bottleneck`,
//!   batch 8, as the stage-0 cache builder). Printed with images/s, effective GFLOP/s (training counted as 3x the forward
//!   convolution FLOPs of `yolo_model::flops`), the ratio to the GEMM rate, the ratio to
//!   keras-yolo3 on TF 2.21 (measured on a 2-core EPYC) and the peak RSS of each.
//! * `layer`: per-layer forward/backward timings of the four convolutions in `LAYERS`
//!   (batch 4), candle 0.11's own ops against `yolo_model::ops`.
//! * `bn`: Keras BatchNorm (training) + leaky ReLU at the largest activation (4x64x208x208), the
//!   model's candle-composed `KerasBatchNorm` against the fused `ops::batch_norm_leaky_train`.
//!
//! Run: `cargo bench -p yolov3 --bench train_step --profile dev` (add a criterion filter such as
//! `layer` or `gemm` to run less). On a busy 2-core machine, `TRAIN_STEP_QUICK=2` times the full
//! steps with one warm-up and 2 timed steps instead of criterion's 10 samples, and
//! `TRAIN_STEP_CASES=all_trainable,tiny` picks steps by substring. Besides criterion's own report it prints a summary table with
//! medians, effective GFLOP/s and the ratio to the GEMM rate measured in the same run.

/// The allocator of the `yolo` binary, so the figures match what training sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use criterion::{black_box, Criterion};
use yolov3::model::{flops, ops, FreezeBody, KerasBatchNorm, YoloBody, YoloConfig};

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

/// One of the convolutions timed by the `layer` benchmark.
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

/// One full-network measurement.
struct StepCase {
    id: &'static str,
    cfg: YoloConfig,
    batch: usize,
    /// `None` measures bottleneck extraction (inference forward to the bottleneck features).
    freeze: Option<FreezeBody>,
    /// keras-yolo3 on TF 2.21, 2-core EPYC: seconds per step, or per image for the
    /// bottleneck extraction.
    tf_seconds: f64,
}

fn step_cases() -> Vec<StepCase> {
    vec![
        StepCase {
            id: "v3_416_all_trainable_b4",
            cfg: YoloConfig::v3(1),
            batch: 4,
            freeze: Some(FreezeBody::None),
            tf_seconds: 9.74,
        },
        StepCase {
            id: "v3_416_freeze_body2_b16",
            cfg: YoloConfig::v3(1),
            batch: 16,
            freeze: Some(FreezeBody::AllButOutputs),
            tf_seconds: 9.70,
        },
        StepCase {
            id: "tiny_416_all_trainable_b8",
            cfg: YoloConfig::tiny(1),
            batch: 8,
            freeze: Some(FreezeBody::None),
            tf_seconds: 2.57,
        },
        // The batch the stage-0 cache is built with (keras-yolo3's predict_generator uses 8 too).
        StepCase {
            id: "v3_416_bottleneck_b8",
            cfg: YoloConfig::v3(1),
            batch: yolov3::train::BUILD_BATCH,
            freeze: None,
            tf_seconds: 0.63,
        },
    ]
}

const SIZE: usize = 416;

/// One step: forward, loss = sum of squared raw outputs, backward (gradients only; the optimizer
/// update is a few element-wise passes over the weights).
fn train_step(model: &YoloBody, x: &Tensor, freeze: FreezeBody) -> candle_core::Result<f32> {
    let outs = model.forward_t(x, true, freeze)?;
    let mut loss = outs[0].sqr()?.sum_all()?;
    for o in &outs[1..] {
        loss = (loss + o.sqr()?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    black_box(&grads);
    loss.to_scalar::<f32>()
}

/// Resets the kernel's peak-RSS counter of this process (Linux `clear_refs` 5); false elsewhere.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size (`VmHWM`) in GB, if the platform reports it.
fn peak_rss_gb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e9)
}

static PEAK_RSS: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

fn bench_steps(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(30));
    for case in step_cases() {
        let id = format!("step/{}", case.id);
        let (_varmap, model) = YoloBody::build(&case.cfg, 0, &dev).expect("model");
        let x = Tensor::rand(0f32, 1.0, (case.batch, 3, SIZE, SIZE), &dev).expect("input");
        let run = || match case.freeze {
            Some(freeze) => {
                let loss = train_step(&model, &x, freeze).expect("step");
                assert!(loss.is_finite(), "loss {loss}");
            }
            None => {
                black_box(model.forward_bottleneck(&x).expect("bottleneck"));
            }
        };
        let reset = reset_peak_rss();
        if let Some(n) = quick_steps() {
            if !step_selected(&id) {
                continue;
            }
            // Quick mode: one warm-up step, then `n` timed steps, no criterion statistics.
            run();
            for _ in 0..n {
                let t = Instant::now();
                run();
                record(&id, t.elapsed(), 1);
            }
            println!("{id}: {:?}", SAMPLES.lock().expect("samples lock").get(&id));
        } else {
            group.bench_function(case.id, |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        run();
                    }
                    let el = t.elapsed();
                    record(&id, el, iters);
                    el
                })
            });
        }
        if let (true, Some(gb)) = (reset, peak_rss_gb()) {
            PEAK_RSS.lock().expect("rss lock").insert(id, gb);
        }
    }
    group.finish();
}

/// `TRAIN_STEP_QUICK=n`: time full steps with one warm-up and `n` timed steps instead of
/// criterion's ten samples (a YOLOv3 step takes seconds to tens of seconds on 2 cores).
fn quick_steps() -> Option<usize> {
    std::env::var("TRAIN_STEP_QUICK").ok()?.parse().ok()
}

/// In quick mode, criterion's filter is not applied to the steps; `TRAIN_STEP_CASES` (a
/// comma-separated list of substrings) selects them instead.
fn step_selected(id: &str) -> bool {
    match std::env::var("TRAIN_STEP_CASES") {
        Ok(list) => list.split(',').any(|p| id.contains(p)),
        Err(_) => true,
    }
}

fn print_step_summary() {
    let gemm = gemm_rate();
    println!("\n== full steps, 416x416, 1 class (medians) ==");
    println!(
        "{:<28} {:>9} {:>8} {:>9} {:>7} {:>9} {:>7} {:>8}",
        "case", "s/step", "img/s", "GFLOP/s", "/GEMM", "TF s", "ours/TF", "peak GB"
    );
    for case in step_cases() {
        let id = format!("step/{}", case.id);
        let Some(t) = median(&id) else { continue };
        let fwd = flops(&case.cfg, SIZE, SIZE) * case.batch as f64;
        // Training counts 3x forward where the whole network trains; a frozen prefix only runs
        // forward (the output convs' backward is negligible).
        let work = match case.freeze {
            Some(FreezeBody::None) => 3.0 * fwd,
            _ => fwd,
        };
        let rate = work / t / 1e9;
        let ratio = gemm
            .map(|g| format!("{:.2}", rate / g))
            .unwrap_or_else(|| "-".into());
        let (label, ours_tf) = match case.freeze {
            Some(_) => ("s/step", t / case.tf_seconds),
            None => ("s/img", t / case.batch as f64 / case.tf_seconds),
        };
        let rss = PEAK_RSS.lock().expect("rss lock").get(&id).copied();
        println!(
            "{:<28} {:>8.3}s {:>8.3} {:>9.1} {:>7} {:>8.2}s {:>7.2} {:>8} ({label} for TF; ours {:.3} s/img)",
            case.id,
            t,
            case.batch as f64 / t,
            rate,
            ratio,
            case.tf_seconds,
            ours_tf,
            rss.map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into()),
            t / case.batch as f64,
        );
    }
}

type BnFn<'a> = dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a;

/// Keras BatchNorm (training) + leaky at 4x64x208x208: the model's composed version against the
/// fused op, forward and backward.
fn bench_bn(c: &mut Criterion) {
    let dev = Device::Cpu;
    let (n, ch, hw) = (4, 64, 208);
    let x = Var::randn(0f32, 1.0, (n, ch, hw, hw), &dev).expect("x");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let bn = KerasBatchNorm::new(ch, vb.pp("bn")).expect("bn");
    let gamma = Var::ones(ch, DType::F32, &dev).expect("gamma");
    let beta = Var::zeros(ch, DType::F32, &dev).expect("beta");
    let composed = |x: &Tensor| ops::leaky_relu(&bn.forward_t(x, true)?, 0.1);
    let fused = |x: &Tensor| {
        Ok(ops::batch_norm_leaky_train(x, gamma.as_tensor(), beta.as_tensor(), 1e-3, 0.1)?.0)
    };
    let impls: [(&str, &BnFn); 2] = [("composed", &composed), ("fused", &fused)];
    let mut group = c.benchmark_group("bn");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300));
    for (name, f) in impls {
        let id = format!("bn/{name}/fwd");
        group.bench_function(format!("{name}/fwd"), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(f(x.as_tensor()).expect("bn"));
                }
                let el = t.elapsed();
                record(&id, el, iters);
                el
            })
        });
        let id = format!("bn/{name}/bwd");
        group.bench_function(format!("{name}/bwd"), |b| {
            b.iter_custom(|iters| {
                let mut el = Duration::ZERO;
                for _ in 0..iters {
                    let y = f(x.as_tensor()).expect("bn");
                    let t = Instant::now();
                    black_box(y.backward().expect("backward"));
                    el += t.elapsed();
                }
                record(&id, el, iters);
                el
            })
        });
    }
    group.finish();
}

fn print_bn_summary() {
    let get = |k: &str| median(&format!("bn/{k}"));
    if let (Some(cf), Some(cb), Some(ff), Some(fb)) = (
        get("composed/fwd"),
        get("composed/bwd"),
        get("fused/fwd"),
        get("fused/bwd"),
    ) {
        println!("\n== BatchNorm(train) + leaky, 4x64x208x208 (medians) ==");
        println!(
            "composed (KerasBatchNorm + ops::leaky_relu): fwd {cf:.4}s bwd {cb:.4}s; fused: fwd {ff:.4}s bwd {fb:.4}s; speed-up fwd {:.2}x bwd {:.2}x",
            cf / ff,
            cb / fb
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_gemm(&mut c);
    bench_steps(&mut c);
    bench_layers(&mut c);
    bench_bn(&mut c);
    c.final_summary();
    print_layer_summary();
    print_bn_summary();
    print_step_summary();
}
