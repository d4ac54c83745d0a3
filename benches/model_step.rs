//! Speed of keras-yolo3's `yolo_body` (Darknet-53 + three-scale head) and
//! `tiny_yolo_body` at 416x416, batch 1 and 4: the inference-mode forward pass and a full training
//! step's forward + backward (freeze_body=0, BatchNorm in training mode, loss = sum of squared
//! raw outputs, gradients for every variable).
//!
//! Reported: criterion's time and throughput in images/s (`elem/s`), plus a line per benchmark
//! with images/s and the effective GFLOP/s from `yolo_model::flops` (convolutions only, a
//! multiply-add counted as 2: 65.9 GFLOP per YOLOv3 image, 5.6 for tiny; forward + backward is
//! counted as 3x the forward FLOPs: input and kernel gradients each cost about one forward).
//!
//! Run (the lead runs it; a release build of candle takes a while):
//! `cargo bench -p yolov3 --bench model_step` (a filter such as `tiny` or `forward` runs less).
//! Uses CUDA device 0 when built with `--features cuda` and a GPU is present, else the CPU.

/// The allocator of the `yolo` binary, so the figures match what training sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::Cell;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Device::Cpu, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{black_box, criterion_main, BenchmarkId, Criterion, Throughput};
use yolov3::model::{flops, FreezeBody, YoloBody, YoloConfig};

const SIZE: usize = 416;

fn input(device: &Device, batch: usize) -> Tensor {
    let n = batch * 3 * SIZE * SIZE;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as u64 * 2654435761 % 1000) as f32) / 1000.0)
        .collect();
    Tensor::from_vec(v, (batch, 3, SIZE, SIZE), &Cpu)
        .and_then(|t| t.to_device(device))
        .unwrap()
}

fn bench_model(c: &mut Criterion) {
    let device = Device::cuda_if_available(0).unwrap_or(Cpu);
    let configs = [
        ("yolov3", YoloConfig::v3(80)),
        ("tiny", YoloConfig::tiny(80)),
    ];
    for train in [false, true] {
        let name = if train {
            "model_forward_backward"
        } else {
            "model_forward"
        };
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(20));
        for (label, cfg) in configs {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
            let model = YoloBody::new(&cfg, vb).unwrap();
            for batch in [1usize, 4] {
                let x = input(&device, batch);
                let per_image = flops(&cfg, SIZE, SIZE) * if train { 3.0 } else { 1.0 };
                let (time, iters) = (Cell::new(Duration::ZERO), Cell::new(0u64));
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_with_input(
                    BenchmarkId::new(label, format!("bs{batch}")),
                    &x,
                    |b, x| {
                        b.iter_custom(|n| {
                            let start = Instant::now();
                            for _ in 0..n {
                                if train {
                                    let outs = model.forward_t(x, true, FreezeBody::None).unwrap();
                                    let mut loss = outs[0].sqr().unwrap().sum_all().unwrap();
                                    for o in &outs[1..] {
                                        loss =
                                            (loss + o.sqr().unwrap().sum_all().unwrap()).unwrap();
                                    }
                                    black_box(loss.backward().unwrap());
                                } else {
                                    black_box(model.forward(x).unwrap());
                                }
                            }
                            device.synchronize().unwrap();
                            let t = start.elapsed();
                            time.set(time.get() + t);
                            iters.set(iters.get() + n);
                            t
                        })
                    },
                );
                let secs = time.get().as_secs_f64();
                let images = (iters.get() * batch as u64) as f64;
                eprintln!(
                    "{name}/{label}/bs{batch}: {:.2} images/s, {:.1} effective GFLOP/s \
                     ({:.1} GFLOP per image)",
                    images / secs,
                    images * per_image / secs / 1e9,
                    per_image / 1e9
                );
            }
        }
        group.finish();
    }
}

/// The benchmark group `main` runs: `criterion_group!`'s expansion, written out so that it can
/// carry this doc comment.
pub fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench_model(&mut c);
}
criterion_main!(benches);
