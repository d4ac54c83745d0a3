//! Quick speed figures for `yolo bench`: real training steps (forward, `yolo_loss` + L2, backward,
//! Adam update) of keras-yolo3's phases, timed next to the machine's GEMM rate so that runs on
//! different or busy machines can be compared as ratios.
//!
//! The criterion benches in `benches/` measure the same kernels with statistics; this module is
//! the few-steps version a user runs to see what their machine does.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use yolo_data::{preprocess_true_boxes, BoxLabel, InputShape};
use yolo_loss::{yolo_loss_with_objects, LossConfig, ObjectSlots};
use yolo_model::{
    conv_table, flops, l2_penalty, trainable_vars, FreezeBody, Precision, Variant, YoloBody,
    YoloConfig,
};

use crate::adam::{Adam, AdamConfig};
use crate::error::Result;

/// What one bench case runs, mirroring a phase of train_bottleneck.py.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchKind {
    /// A training step of the whole model with `freeze` (stages 1 and 2).
    Step,
    /// `forward_bottleneck` in inference mode, per batch (stage 0's feature extraction).
    Bottleneck,
    /// A training step of the output convolutions alone on cached features (stage 0).
    CachedLast,
}

/// One bench case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchCase {
    /// Short name used on the command line (`v3`, `v3-frozen`, `bottleneck`, `last`, `tiny`).
    pub name: String,
    /// Model variant; one class, as the reference figures.
    pub variant: Variant,
    /// Square input size.
    pub size: usize,
    /// Images per step.
    pub batch: usize,
    /// Frozen groups (for [`BenchKind::Step`]).
    pub freeze: FreezeBody,
    /// What is timed.
    pub kind: BenchKind,
    /// keras-yolo3 on TensorFlow 2.21, seconds per step (or per image for the bottleneck), from
    /// one stored run on a 2-core AMD EPYC (AVX2) on 2026-11-28, when known: the ratio printed
    /// next to ours is only a hint, since machines differ from day to day;
    /// `../shared/anchors/side_by_side.sh` measures both in one run.
    pub tf_seconds: Option<f64>,
}

/// The cases of the training-speed table at `size` (the TensorFlow figures apply at 416 only).
pub fn default_cases(size: usize) -> Vec<BenchCase> {
    let tf = |s: f64| if size == 416 { Some(s) } else { None };
    let case = |name: &str, variant, batch, freeze, kind, tf_s| BenchCase {
        name: name.to_string(),
        variant,
        size,
        batch,
        freeze,
        kind,
        tf_seconds: tf(tf_s),
    };
    vec![
        case(
            "last",
            Variant::YoloV3,
            8,
            FreezeBody::AllButOutputs,
            BenchKind::CachedLast,
            0.165,
        ),
        // The batch the stage-0 cache is built with, as keras-yolo3's predict_generator (8).
        case(
            "bottleneck",
            Variant::YoloV3,
            crate::bottleneck::BUILD_BATCH,
            FreezeBody::AllButOutputs,
            BenchKind::Bottleneck,
            0.63,
        ),
        case(
            "tiny",
            Variant::Tiny,
            8,
            FreezeBody::None,
            BenchKind::Step,
            2.57,
        ),
        case(
            "v3",
            Variant::YoloV3,
            4,
            FreezeBody::None,
            BenchKind::Step,
            9.74,
        ),
        case(
            "v3-frozen",
            Variant::YoloV3,
            16,
            FreezeBody::AllButOutputs,
            BenchKind::Step,
            9.70,
        ),
    ]
}

/// Timing of one case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The case.
    pub case: BenchCase,
    /// Median seconds per step (per image for [`BenchKind::Bottleneck`]).
    pub seconds: f64,
    /// Every timed step's seconds, in order (per batch, also for the bottleneck case).
    pub step_seconds: Vec<f64>,
    /// The loss (yolo_loss + L2) of the first step, for the training-step cases: the same
    /// seeded weights and inputs on every device, so CPU and GPU runs can be compared.
    pub first_loss: Option<f64>,
    /// The device the case ran on (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// The compute precision the case ran in.
    pub precision: Precision,
    /// Training steps skipped by the f16 loss scale (an overflow halves the scale and skips the
    /// Adam update; the step is still timed). 0 in f32 and bf16.
    pub skipped_steps: u64,
    /// Images per second.
    pub images_per_s: f64,
    /// Effective GFLOP/s: forward FLOPs of what runs, with the backward counted as 2x forward for
    /// all-trainable steps and the cached output-conv step (the training-speed table's convention).
    pub gflops: f64,
    /// `gflops` / the GEMM reference rate.
    pub gemm_ratio: Option<f64>,
    /// `seconds` / TensorFlow's seconds, when known.
    pub tf_ratio: Option<f64>,
    /// Peak resident set size of the process so far, in GB (Linux only).
    pub peak_rss_gb: Option<f64>,
}

/// The machine's f32 GEMM rate in GFLOP/s through candle's matmul (the `gemm` crate on all cores,
/// the library the convolutions use): the median of `reps` products of `n x n` matrices.
pub fn gemm_reference_gflops(n: usize, reps: usize) -> Result<f64> {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    a.matmul(&b)?; // warm-up
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        times.push(t.elapsed().as_secs_f64());
        drop(c);
    }
    Ok(2.0 * (n as f64).powi(3) / median(&mut times) / 1e9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Peak resident set size (`VmHWM`) of this process in GB, where the platform reports it.
pub fn peak_rss_gb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e9)
}

/// y_true for `batch` images with two boxes each (one large, one small), so the loss has objects
/// on more than one layer as in real training, with its object slots listed on the host as the
/// loader lists them.
fn y_true(
    cfg: &YoloConfig,
    size: usize,
    batch: usize,
    dev: &Device,
) -> Result<(Vec<Tensor>, ObjectSlots)> {
    let (anchors, _) = crate::model_source::default_anchors(cfg.variant);
    let s = size as f32;
    let boxes: Vec<Vec<BoxLabel>> = (0..batch)
        .map(|_| {
            vec![
                BoxLabel {
                    x_min: 0.1 * s,
                    y_min: 0.2 * s,
                    x_max: 0.6 * s,
                    y_max: 0.8 * s,
                    class: 0,
                },
                BoxLabel {
                    x_min: 0.7 * s,
                    y_min: 0.1 * s,
                    x_max: 0.76 * s,
                    y_max: 0.18 * s,
                    class: 0,
                },
            ]
        })
        .collect();
    let input = InputShape::new(size, size)?;
    let targets = preprocess_true_boxes(&boxes, input, &anchors, cfg.num_classes)?;
    let slots = ObjectSlots::new(targets.iter().map(|y| y.object_slots()).collect());
    let tensors = targets
        .iter()
        .map(|y| Ok(y.to_tensor(dev)?))
        .collect::<Result<_>>()?;
    Ok((tensors, slots))
}

/// The bench input: `n` images of `s`x`s` uniform pixels drawn on the host from a fixed seed, so
/// every device sees the same batch.
fn seeded_images(n: usize, s: usize, dev: &Device) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let v: Vec<f32> = (0..n * 3 * s * s).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::from_vec(v, (n, 3, s, s), dev)?)
}

/// A name for `dev` in reports: `cpu`, `cuda:N` or `metal:N`.
fn device_name(dev: &Device) -> String {
    match dev.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Runs `warmup + steps` steps of `case` on `dev` in `precision` and returns the median of the
/// timed ones. `gemm_gflops` (from [`gemm_reference_gflops`]) gives the ratio column. Every step
/// ends with one host read (the loss, or one feature value), which is also what makes a GPU
/// step's time the time of its work rather than of its launch. f16 steps run with the training
/// loop's dynamic loss scale ([`crate::LossScaler`]).
pub fn run_case(
    case: &BenchCase,
    steps: usize,
    warmup: usize,
    gemm_gflops: Option<f64>,
    dev: &Device,
    precision: Precision,
) -> Result<BenchResult> {
    let cfg = YoloConfig::new(case.variant, 1);
    let (varmap, model) = YoloBody::build(&cfg, 0, dev)?;
    let model = model.with_precision(precision.tensor_precision(dev));
    let _tiles = yolo_model::ops::bf16_matmul_scope(precision.uses_cpu_tiles(dev));
    let mut scaler = crate::loss_scale::LossScaler::new(precision);
    let (anchors, _) = crate::model_source::default_anchors(cfg.variant);
    let (n, s) = (case.batch, case.size);
    let x = seeded_images(n, s, dev)?;
    let (yt, slots) = y_true(&cfg, s, n, dev)?;
    let loss_cfg = LossConfig::default();
    let total_flops = flops(&cfg, s, s);
    let mut adam = Adam::new(
        trainable_vars(&varmap, &cfg, case.freeze),
        AdamConfig::default(),
    )?;
    // Stage 0 trains on features computed once: make them once, outside the timing.
    let feats = match case.kind {
        BenchKind::CachedLast => Some(model.forward_bottleneck(&x)?),
        _ => None,
    };
    let mut times = Vec::with_capacity(steps);
    let mut first_loss = None;
    for i in 0..warmup + steps.max(1) {
        let t = Instant::now();
        match case.kind {
            BenchKind::Bottleneck => {
                let f = model.forward_bottleneck(&x)?;
                // Reading one value forces the computation on lazy devices.
                f[0].flatten_all()?.get(0)?.to_scalar::<f32>()?;
            }
            BenchKind::Step | BenchKind::CachedLast => {
                let outputs = match &feats {
                    Some(f) => model.forward_last(f)?,
                    None => model.forward_t(&x, true, case.freeze)?,
                };
                let parts = yolo_loss_with_objects(
                    &outputs,
                    &yt,
                    &slots,
                    &anchors.wh,
                    cfg.num_classes,
                    &loss_cfg,
                )?;
                let l2 = l2_penalty(&varmap, &cfg, case.freeze, 5e-4)?;
                let loss = (&parts.total + &l2)?;
                let mut grads = scaler.scale_loss(&loss)?.backward()?;
                let finite = !scaler.enabled() || adam.first_non_finite_grad(&grads)?.is_none();
                if finite {
                    scaler.unscale(&mut grads, adam.vars().map(|(_, v)| v))?;
                }
                if scaler.update(finite) == crate::loss_scale::ScaleStep::Apply {
                    adam.step(&grads)?;
                }
                let v = loss.to_scalar::<f32>()?;
                if i == 0 {
                    first_loss = Some(f64::from(v));
                }
            }
        }
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let step_seconds = times.clone();
    let step_s = median(&mut times);
    // Forward FLOPs of the output convs alone (what the cached stage-0 step runs).
    let head_flops: f64 = conv_table(&cfg)
        .iter()
        .filter(|c| !c.batch_norm)
        .map(|c| 2.0 * (c.kernel_len() * (s / c.out_stride) * (s / c.out_stride)) as f64)
        .sum();
    let (seconds, images, work) = match case.kind {
        BenchKind::Bottleneck => (step_s / n as f64, 1.0, total_flops),
        BenchKind::CachedLast => (step_s, n as f64, 3.0 * head_flops * n as f64),
        BenchKind::Step => {
            // All trainable: backward counted as 2x forward. Frozen prefix: forward only (the
            // output convs' backward is negligible next to it).
            let mult = if case.freeze == FreezeBody::None {
                3.0
            } else {
                1.0
            };
            (step_s, n as f64, mult * total_flops * n as f64)
        }
    };
    let gflops = work / seconds / 1e9;
    Ok(BenchResult {
        case: case.clone(),
        seconds,
        step_seconds,
        first_loss,
        device: device_name(dev),
        precision,
        skipped_steps: scaler.skipped(),
        images_per_s: images / seconds,
        gflops,
        gemm_ratio: gemm_gflops.map(|g| gflops / g),
        tf_ratio: case.tf_seconds.map(|tf| seconds / tf),
        peak_rss_gb: peak_rss_gb(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn default_cases_carry_tf_figures_only_at_416() {
        let at416 = default_cases(416);
        assert_eq!(at416.len(), 5);
        assert_eq!(
            at416.iter().find(|c| c.name == "v3").unwrap().tf_seconds,
            Some(9.74)
        );
        assert!(default_cases(128).iter().all(|c| c.tf_seconds.is_none()));
    }

    #[test]
    fn a_tiny_step_at_64_runs_and_reports_consistent_figures() {
        let case = BenchCase {
            name: "tiny".into(),
            variant: Variant::Tiny,
            size: 64,
            batch: 2,
            freeze: FreezeBody::None,
            kind: BenchKind::Step,
            tf_seconds: Some(1.0),
        };
        let r = run_case(&case, 2, 0, Some(100.0), &Device::Cpu, Precision::F32).unwrap();
        assert!(r.seconds > 0.0);
        assert_eq!(r.step_seconds.len(), 2);
        assert_eq!(r.device, "cpu");
        assert!((r.seconds - 0.5 * (r.step_seconds[0] + r.step_seconds[1])).abs() < 1e-12);
        // Seeded weights and inputs: a second run's first loss is the same number.
        let loss = r.first_loss.unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        let again = run_case(&case, 1, 0, None, &Device::Cpu, Precision::F32).unwrap();
        assert_eq!(again.first_loss, Some(loss));
        assert!((r.images_per_s - 2.0 / r.seconds).abs() < 1e-9 * r.images_per_s);
        let expected_gflops = 3.0 * flops(&YoloConfig::tiny(1), 64, 64) * 2.0 / r.seconds / 1e9;
        assert!((r.gflops - expected_gflops).abs() < 1e-9 * expected_gflops);
        assert!((r.gemm_ratio.unwrap() - r.gflops / 100.0).abs() < 1e-12);
        assert!((r.tf_ratio.unwrap() - r.seconds).abs() < 1e-12);
    }

    #[test]
    fn gemm_reference_is_positive() {
        assert!(gemm_reference_gflops(64, 2).unwrap() > 0.0);
    }
}
