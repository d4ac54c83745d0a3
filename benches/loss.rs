//! Speed of keras-yolo3's `yolo_loss` (`yolo3/model.py`) on the CPU, batch 8 at
//! 416x416 (output grids 13, 26, 52; 3 anchors per layer), for 1 class and for 80 classes.
//!
//! Measured: the forward pass alone and forward + backward (d total / d raw outputs), for the
//! fused CPU kernel that `yolo_loss` uses and, for reference, the device-generic tensor-op
//! composition (`yolo_loss_tensor_ops`). Targets: forward + backward <= 20 ms
//! (1 class) and <= 110 ms (80 classes); keras-yolo3 on TF took 17 / 41 ms and 84 / 222 ms
//! (forward / forward + backward).
//!
//! Run: `cargo bench -p yolov3 --bench loss --profile dev` (yolo-loss is built at opt-level 3 in
//! the dev profile). A criterion filter such as `loss_fused` or `c80` runs less.

/// The allocator of the `yolo` binary, so the figures match what training sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use criterion::{black_box, criterion_main, BenchmarkId, Criterion};
use yolov3::data::Anchors;
use yolov3::loss::{yolo_loss, yolo_loss_tensor_ops, LossConfig, LossError, LossParts};

const MASKS: [[usize; 3]; 3] = [[6, 7, 8], [3, 4, 5], [0, 1, 2]];
const BATCH: usize = 8;
const INPUT: usize = 416;
const GRIDS: [usize; 3] = [13, 26, 52];

/// xorshift in [0, 1).
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A realistic y_true: 2 to 6 boxes per image of assorted sizes, written the way keras-yolo3's
/// `preprocess_true_boxes` writes them (best anchor by IoU of the sizes over all 9 anchors, the
/// layer whose mask holds it, cell `floor(x * gw)`, `floor(y * gh)`, one-hot class).
fn y_true(num_classes: usize, rng: &mut Rng) -> Vec<Tensor> {
    let anchors = Anchors::yolo_default().wh;
    let k = 5 + num_classes;
    let mut layers: Vec<Vec<f32>> = GRIDS
        .iter()
        .map(|g| vec![0f32; BATCH * g * g * 3 * k])
        .collect();
    for b in 0..BATCH {
        let boxes = 2 + (rng.uniform() * 5.0) as usize;
        for _ in 0..boxes {
            let (w, h) = (8.0 + rng.uniform() * 300.0, 8.0 + rng.uniform() * 300.0);
            let (x, y) = (
                w / 2.0 + rng.uniform() * (416.0 - w),
                h / 2.0 + rng.uniform() * (416.0 - h),
            );
            let best = (0..9)
                .map(|n| {
                    let [aw, ah] = anchors[n];
                    let inter = w.min(aw) * h.min(ah);
                    (n, inter / (w * h + aw * ah - inter))
                })
                .fold((0, -1.0), |acc, v| if v.1 > acc.1 { v } else { acc })
                .0;
            let l = MASKS
                .iter()
                .position(|m| m.contains(&best))
                .expect("every anchor is in a mask");
            let a = MASKS[l]
                .iter()
                .position(|&n| n == best)
                .expect("anchor in its mask");
            let g = GRIDS[l];
            let (xn, yn) = (x / INPUT as f32, y / INPUT as f32);
            let (i, j) = ((xn * g as f32) as usize, (yn * g as f32) as usize);
            let s = (((b * g + j) * g + i) * 3 + a) * k;
            let slot = &mut layers[l][s..s + k];
            slot[..5].copy_from_slice(&[xn, yn, w / INPUT as f32, h / INPUT as f32, 1.0]);
            slot[5 + (rng.uniform() * num_classes as f32) as usize] = 1.0;
        }
    }
    layers
        .into_iter()
        .zip(GRIDS)
        .map(|(v, g)| Tensor::from_vec(v, (BATCH, g, g, 3, k), &Device::Cpu).expect("y_true"))
        .collect()
}

/// Raw NCHW outputs as Vars, values 0.5 * (sum of 4 uniforms - 2) (about N(0, 0.3)).
fn raw_outputs(num_classes: usize, rng: &mut Rng) -> Vec<Var> {
    GRIDS
        .iter()
        .map(|&g| {
            let n = BATCH * 3 * (5 + num_classes) * g * g;
            let v: Vec<f32> = (0..n)
                .map(|_| 0.5 * ((0..4).map(|_| rng.uniform()).sum::<f32>() - 2.0))
                .collect();
            Var::from_vec(v, (BATCH, 3 * (5 + num_classes), g, g), &Device::Cpu).expect("raw")
        })
        .collect()
}

type LossFn =
    fn(&[Tensor], &[Tensor], &[[f32; 2]], usize, &LossConfig) -> Result<LossParts, LossError>;

fn bench_loss(c: &mut Criterion) {
    let anchors = Anchors::yolo_default().wh;
    let cfg = LossConfig::default();
    let paths: [(&str, LossFn, usize); 2] = [
        ("fused", yolo_loss, 20),
        // About 1 s (80 classes) per iteration on 2 cores: the minimum sample count.
        ("tensor_ops", yolo_loss_tensor_ops, 10),
    ];
    for (path, f, samples) in paths {
        let mut group = c.benchmark_group(format!("loss_{path}"));
        group
            .sample_size(samples)
            .measurement_time(Duration::from_secs(4));
        for num_classes in [1usize, 80] {
            let mut rng = Rng(0x5EED_1234_ABCD_0001 ^ num_classes as u64);
            let yt = y_true(num_classes, &mut rng);
            let vars = raw_outputs(num_classes, &mut rng);
            let raws: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let id = format!("c{num_classes}");
            group.bench_function(BenchmarkId::new("forward", &id), |b| {
                b.iter(|| {
                    let parts = f(&raws, &yt, &anchors, num_classes, &cfg).expect("loss");
                    black_box(parts.total.to_scalar::<f32>().expect("scalar"))
                })
            });
            group.bench_function(BenchmarkId::new("forward_backward", &id), |b| {
                b.iter(|| {
                    let parts = f(&raws, &yt, &anchors, num_classes, &cfg).expect("loss");
                    black_box(parts.total.backward().expect("backward"))
                })
            });
        }
        group.finish();
    }
}

/// The benchmark group `main` runs: `criterion_group!`'s expansion, written out so that it can
/// carry this doc comment.
pub fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench_loss(&mut c);
}
criterion_main!(benches);
