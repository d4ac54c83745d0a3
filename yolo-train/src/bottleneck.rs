//! Stage 0's cache: the frozen network (`freeze_body=2`, inference-mode BatchNorm) run once over
//! the letterboxed training and validation images, stored with [`crate::cache`], and read back in
//! shuffled batches to train only the output convs.
//!
//! Because the cached prefix runs exactly as [`yolo_model::YoloBody::forward_t`] runs it under
//! `FreezeBody::AllButOutputs` (inference-mode BN, detached), the loss on cached features equals
//! the loss of the whole frozen model on the same letterboxed images (to float rounding in f32).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use yolo_data::{Anchors, Annotation, BoxLabel, InputShape};
use yolo_model::{is_output_conv, YoloBody};

use crate::cache::{BottleneckCache, CacheEntry, CacheHeader, CacheWriter, Fingerprint};
use crate::config::CacheDtype;
use crate::dataset::{annotation_line, letterbox_batch};
use crate::error::{Result, TrainError};

/// Images per forward pass while building the cache (train_bottleneck.py predicts in batches of 8).
pub const BUILD_BATCH: usize = 8;

/// The content key of a cache: every frozen variable (all but the output convs, BN statistics
/// included), the annotation lines in order, the input shape, the anchors, the dtype and a label
/// (`train`/`val`).
#[allow(clippy::too_many_arguments)]
pub fn fingerprint(
    varmap: &VarMap,
    anns: &[Annotation],
    input: InputShape,
    anchors: &Anchors,
    dtype: CacheDtype,
    tiny: bool,
    label: &str,
) -> Result<String> {
    let mut f = Fingerprint::new();
    f.bytes("label", label.as_bytes());
    f.bytes("tiny", &[tiny as u8]);
    f.bytes("input", format!("{}x{}", input.h, input.w).as_bytes());
    f.bytes("dtype", format!("{dtype:?}").as_bytes());
    let a: Vec<u8> = anchors
        .wh
        .iter()
        .flat_map(|w| w.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    f.bytes("anchors", &a);
    let mut lines = String::new();
    for ann in anns {
        lines.push_str(&annotation_line(ann));
        lines.push('\n');
    }
    f.bytes("lines", lines.as_bytes());
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().filter(|n| !is_output_conv(n)).collect();
    names.sort();
    for n in names {
        f.tensor(n, data[n].as_tensor())?;
    }
    Ok(f.finish())
}

/// Opens the cache at `path` if its fingerprint matches, otherwise (re)builds it. Returns the cache
/// and whether it was rebuilt.
#[allow(clippy::too_many_arguments)]
pub fn ensure_cache(
    path: &Path,
    model: &YoloBody,
    anns: &[Annotation],
    fingerprint: &str,
    input: InputShape,
    dtype: CacheDtype,
    seed: u64,
    device: &Device,
) -> Result<(BottleneckCache, bool)> {
    if let Some(c) = BottleneckCache::open_matching(path, fingerprint) {
        return Ok((c, false));
    }
    build_cache(path, model, anns, fingerprint, input, dtype, seed, device)?;
    Ok((BottleneckCache::open(path)?, true))
}

/// Runs the frozen part over `anns` (letterbox path, inference mode) and writes the cache.
#[allow(clippy::too_many_arguments)]
pub fn build_cache(
    path: &Path,
    model: &YoloBody,
    anns: &[Annotation],
    fingerprint: &str,
    input: InputShape,
    dtype: CacheDtype,
    seed: u64,
    device: &Device,
) -> Result<()> {
    // The header (written first) lists every entry's boxes, so a first pass letterboxes for the
    // boxes only; the second pass recomputes the same (deterministic) pixels for the features.
    // Only one batch of pixels is alive at a time.
    let mut entries = Vec::with_capacity(anns.len());
    for (k, chunk) in anns.chunks(BUILD_BATCH).enumerate() {
        let b = letterbox_batch(chunk, k * BUILD_BATCH, input, seed, &Device::Cpu)?;
        for (p, bx) in b.paths.iter().zip(&b.boxes) {
            entries.push(CacheEntry {
                path: p.clone(),
                boxes: bx
                    .iter()
                    .map(|l| [l.x_min, l.y_min, l.x_max, l.y_max, l.class as f32])
                    .collect(),
            });
        }
    }
    let header = CacheHeader {
        fingerprint: fingerprint.to_string(),
        dtype,
        shapes: header_shapes(model, input, device)?,
        entries,
    };
    let mut w = CacheWriter::create(path, header)?;
    let filled = fill_cache(&mut w, path, model, anns, input, seed, device);
    match filled {
        Ok(()) => w.finish(),
        Err(e) => {
            w.abandon();
            Err(e)
        }
    }
}

/// The second pass of [`build_cache`]: the bottleneck features of every image, in order.
fn fill_cache(
    w: &mut CacheWriter,
    path: &Path,
    model: &YoloBody,
    anns: &[Annotation],
    input: InputShape,
    seed: u64,
    device: &Device,
) -> Result<()> {
    for (k, chunk) in anns.chunks(BUILD_BATCH).enumerate() {
        if crate::interrupt::stop_requested() {
            return Err(TrainError::Interrupted(format!(
                "the bottleneck cache build of {}",
                path.display()
            )));
        }
        let b = letterbox_batch(chunk, k * BUILD_BATCH, input, seed, device)?;
        let feats = model.forward_bottleneck(&b.images)?;
        for i in 0..chunk.len() {
            let maps: Vec<Tensor> = feats
                .iter()
                .map(|f| f.get(i))
                .collect::<candle_core::Result<_>>()?;
            w.push(&maps)?;
        }
    }
    Ok(())
}

fn header_shapes(model: &YoloBody, input: InputShape, device: &Device) -> Result<Vec<[usize; 3]>> {
    let probe = Tensor::zeros((1, 3, input.h, input.w), candle_core::DType::F32, device)?;
    model
        .forward_bottleneck(&probe)?
        .iter()
        .map(|t| {
            let (_, c, h, w) = t.dims4()?;
            Ok([c, h, w])
        })
        .collect()
}

/// The paths of the train and validation caches inside a run directory.
pub fn cache_paths(run_dir: &Path) -> (PathBuf, PathBuf) {
    (
        run_dir.join("cache").join("bottleneck_train.bin"),
        run_dir.join("cache").join("bottleneck_val.bin"),
    )
}

/// The boxes of record `i` as labels.
pub fn entry_boxes(e: &CacheEntry) -> Vec<BoxLabel> {
    e.boxes
        .iter()
        .map(|b| BoxLabel {
            x_min: b[0],
            y_min: b[1],
            x_max: b[2],
            y_max: b[3],
            class: b[4] as usize,
        })
        .collect()
}

/// The record indices of epoch `epoch`'s batches: `max(1, n / batch)` batches over a permutation
/// drawn from `(seed, epoch)` (identity without `shuffle`), wrapping around when `n < batch`.
pub fn epoch_batches(
    n: usize,
    batch: usize,
    seed: u64,
    epoch: usize,
    shuffle: bool,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64);
        order.shuffle(&mut rng);
    }
    let steps = (n / batch).max(1);
    (0..steps)
        .map(|s| (0..batch).map(|k| order[(s * batch + k) % n]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_batches_cover_distinct_samples_and_change_with_epoch() {
        let b0 = epoch_batches(10, 4, 1, 0, true);
        assert_eq!(b0.len(), 2);
        let mut flat: Vec<usize> = b0.concat();
        flat.sort();
        flat.dedup();
        assert_eq!(flat.len(), 8);
        assert_ne!(b0, epoch_batches(10, 4, 1, 1, true));
        assert_eq!(b0, epoch_batches(10, 4, 1, 0, true));
        assert_eq!(epoch_batches(3, 4, 1, 0, false), vec![vec![0, 1, 2, 0]]);
    }
}
