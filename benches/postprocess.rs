//! Speed of keras-yolo3's `yolo_eval` post-processing (`yolo3/model.py`: decode every
//! output layer, `yolo_correct_boxes`, score threshold, per-class NMS) and of the VOC and COCO mAP
//! evaluators.
//!
//! Measured on the CPU: `yolo_eval_batch` for YOLOv3 outputs at 416x416 (grids 13, 26, 52) with 80
//! classes, batch 1 and 8, at the detector's score threshold 0.3 and at the mAP threshold 0.001
//! (many more NMS candidates); `MapReport::evaluate` (VOC + COCO) on 500 synthetic images with 3
//! classes.
//!
//! Run: `cargo bench -p yolov3 --bench postprocess --profile dev`.

/// The allocator of the `yolo` binary, so the figures match what training sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{black_box, criterion_main, BenchmarkId, Criterion};
use yolov3::data::Anchors;
use yolov3::eval::{
    yolo_eval_batch, EvalImage, EvalParams, EvalSet, GroundTruth, MapReport, ScoredBox,
};

/// xorshift in [0, 1).
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Raw NCHW outputs with logits like a trained network's: mostly confident background, a few
/// hundred slots with objectness and class logits around zero.
fn raw_outputs(batch: usize, num_classes: usize, rng: &mut Rng) -> Vec<Tensor> {
    let k = 5 + num_classes;
    [13usize, 26, 52]
        .iter()
        .map(|&g| {
            let mut data = vec![0f32; batch * 3 * k * g * g];
            for (i, v) in data.iter_mut().enumerate() {
                let f = (i / (g * g)) % k;
                let u = rng.uniform() as f32;
                *v = match f {
                    0..=3 => u - 0.5,
                    4 if u < 0.02 => 2.0 * u / 0.02,
                    4 => -6.0,
                    _ => 4.0 * u - 3.0,
                };
            }
            Tensor::from_vec(data, (batch, 3 * k, g, g), &Device::Cpu).unwrap()
        })
        .collect()
}

fn bench_yolo_eval(c: &mut Criterion) {
    let anchors = Anchors::yolo_default().wh;
    let mut group = c.benchmark_group("yolo_eval_416_c80");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for batch in [1usize, 8] {
        let outputs = raw_outputs(batch, 80, &mut rng);
        let shapes = vec![(417.0f32, 650.0f32); batch];
        for score in [0.3f32, 0.001] {
            let params = EvalParams {
                score_threshold: score,
                iou_threshold: 0.45,
                max_boxes: if score < 0.01 { 100 } else { 20 },
            };
            group.bench_with_input(
                BenchmarkId::new(format!("score_{score}"), format!("bs{batch}")),
                &outputs,
                |b, outs| {
                    b.iter(|| {
                        black_box(yolo_eval_batch(outs, &anchors, 80, &shapes, &params).unwrap())
                    })
                },
            );
        }
    }
    group.finish();
}

fn synthetic_set(images: u64, rng: &mut Rng) -> EvalSet {
    let mut set = EvalSet {
        classes: vec!["a".into(), "b".into(), "c".into()],
        ..Default::default()
    };
    for id in 1..=images {
        set.images.push(EvalImage {
            id,
            file_name: format!("{id}.jpg"),
            width: 640,
            height: 480,
        });
        for _ in 0..3 {
            let (x, y) = (rng.uniform() * 500.0, rng.uniform() * 350.0);
            let (w, h) = (20.0 + rng.uniform() * 120.0, 20.0 + rng.uniform() * 120.0);
            let class_id = (rng.uniform() * 3.0) as usize;
            set.ground_truth
                .push(GroundTruth::new(id, class_id, x, y, x + w, y + h));
            for _ in 0..4 {
                let j = |r: &mut Rng| (r.uniform() - 0.5) * 20.0;
                set.detections.push(ScoredBox {
                    image_id: id,
                    class_id,
                    x_min: x + j(rng),
                    y_min: y + j(rng),
                    x_max: x + w + j(rng),
                    y_max: y + h + j(rng),
                    score: rng.uniform(),
                });
            }
        }
    }
    set
}

fn bench_map(c: &mut Criterion) {
    let mut group = c.benchmark_group("map");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    let set = synthetic_set(500, &mut Rng(42));
    group.bench_function("voc_and_coco_500img_3cls_6000dets", |b| {
        b.iter(|| black_box(MapReport::evaluate(&set)))
    });
    group.finish();
}

/// The benchmark group `main` runs: `criterion_group!`'s expansion, written out so that it can
/// carry this doc comment.
pub fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench_yolo_eval(&mut c);
    bench_map(&mut c);
}
criterion_main!(benches);
