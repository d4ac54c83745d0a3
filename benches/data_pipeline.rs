//! Throughput of the data pipeline on the raccoon photos (about 500x375 JPEGs), in
//! images per second, batches of 16 at 416x416, with rayon over the images of a batch:
//! - `jpeg_decode`: decoding alone to RGB, the floor every path pays;
//! - `letterbox`: keras-yolo3's `get_random_data(random=False)` (Pillow-exact BICUBIC letterbox)
//!   plus `preprocess_true_boxes` and the batch tensors, through `BatchLoader`;
//! - `augment`: `get_random_data(random=True)` (jitter, scale, placement, flip, HSV) plus
//!   `preprocess_true_boxes` and the batch tensors, through `BatchLoader`;
//! - `augment_single_thread`: the same one image at a time (batch 1), for the per-core figure.
//!
//! Targets: augmentation within 2x of plain decoding, and >= 160 images/s on 2 cores (10x one
//! keras-yolo3 Python process, about 16 images/s).
//!
//! Measured 2026-11-28 with `cargo bench -p yolov3 --profile dev --bench data_pipeline` (yolo-data
//! at opt-level 3, 2-core AMD EPYC shared with a training run, load average ~3.5, so only ratios
//! within one run mean anything), ms per batch of 16:
//! - before the pipeline speed work (da1c516): jpeg_decode 34.7, letterbox 79.6 (2.29x the decode
//!   time), augment 87.0 (2.50x); the same code measured idle in release this morning: 15.2,
//!   43.5 (2.86x), 44.5 (2.92x), augment_single_thread 4.82 ms per image;
//! - after (samples written in place into the batch buffer, border-only fills, streamed resize
//!   rows, gather-free AVX2 horizontal pass, hand-vectorised HSV and u8->f32): two runs gave
//!   jpeg_decode 37.0 / 31.0, letterbox 47.8 / 52.7 (1.29x / 1.70x), augment 63.9 / 52.2
//!   (1.73x / 1.69x), augment_single_thread 2.95 / 3.21 ms per image.
//!
//! Because wall times on a loaded machine are noisy, the ratio was also checked as CPU time
//! with perf (`perf record` on `--bench --profile-time 6 <name>`, share of `zune_jpeg` samples in
//! jpeg_decode divided by its share in the other bench): 2.59 (augment) and 2.62 (letterbox)
//! before, about 1.7 and 1.6 after.
//!
//! Run: `cargo bench -p yolov3 --bench data_pipeline` (yolo-data is built at opt-level 3 in the dev
//! profile too, so `--profile dev` gives representative figures). Skips when
//! `shared/datasets/raccoon` is absent.

/// The allocator of the `yolo` binary, so the figures match what training sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use criterion::{black_box, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use yolov3::data::{
    convert_voc, load_rgb, Anchors, Annotation, BatchLoader, InputShape, LoaderConfig, VocOptions,
};

const BATCH: usize = 16;

fn raccoon() -> Option<Vec<Annotation>> {
    let root: PathBuf = yolo_testutil::shared_path("datasets/raccoon")?;
    match convert_voc(&root, &VocOptions::default()) {
        Ok(ds) if !ds.annotations.is_empty() => Some(ds.annotations),
        Ok(_) => None,
        Err(e) => {
            eprintln!("skipped: cannot read the raccoon annotations: {e}");
            None
        }
    }
}

fn loader(anns: &[Annotation], random: bool, batch_size: usize) -> BatchLoader {
    let cfg = LoaderConfig {
        batch_size,
        input: InputShape::square416(),
        random,
        prefetch: 0,
        ..LoaderConfig::default()
    };
    BatchLoader::new(anns.to_vec(), cfg, Anchors::yolo_default(), 1).expect("raccoon loader")
}

/// Runs batch after batch of the endless stream, so every iteration sees new images and draws.
fn bench_loader(c: &mut Criterion, name: &str, l: &BatchLoader) {
    let mut group = c.benchmark_group("data_pipeline");
    group.sample_size(20);
    group.throughput(Throughput::Elements(l.config().batch_size as u64));
    let mut step = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            let batch = l
                .batches(step, 1)
                .next()
                .expect("one batch")
                .expect("batch builds");
            step += 1;
            black_box(batch.images.dims().to_vec())
        })
    });
    group.finish();
}

fn data_pipeline(c: &mut Criterion) {
    let Some(anns) = raccoon() else {
        eprintln!("skipped: shared/datasets/raccoon not found");
        return;
    };

    {
        let mut group = c.benchmark_group("data_pipeline");
        group.sample_size(20);
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut at = 0usize;
        group.bench_function("jpeg_decode", |b| {
            b.iter(|| {
                let paths: Vec<&PathBuf> = (0..BATCH)
                    .map(|k| &anns[(at + k) % anns.len()].path)
                    .collect();
                at += BATCH;
                let sizes: Vec<(u32, u32)> = paths
                    .par_iter()
                    .map(|p| load_rgb(p).expect("raccoon image decodes").dimensions())
                    .collect();
                black_box(sizes)
            })
        });
        group.finish();
    }

    bench_loader(c, "letterbox", &loader(&anns, false, BATCH));
    bench_loader(c, "augment", &loader(&anns, true, BATCH));
    bench_loader(c, "augment_single_thread", &loader(&anns, true, 1));
}

/// The benchmark group `main` runs: `criterion_group!`'s expansion, written out so that it can
/// carry this doc comment.
pub fn benches() {
    let mut c = Criterion::default().configure_from_args();
    data_pipeline(&mut c);
}
criterion_main!(benches);
