//! The training batch loader, keras-yolo3's `data_generator` made parallel and reproducible.
//!
//! - **Order.** Like keras-yolo3's generator, samples form one endless stream over the annotation
//!   list, reshuffled each time the stream wraps around: sample `s` of the stream is position
//!   `s % n` of pass `s / n`, and pass `p` is a permutation drawn from `(seed, p)` (identity when
//!   `shuffle` is off). Epoch `e` is the `steps_per_epoch() * batch_size` samples starting at
//!   `e * steps_per_epoch() * batch_size`, so when `n` is a multiple of the batch size epoch `e` is
//!   exactly pass `e`; otherwise, as in keras-yolo3, the leftover images start the next epoch
//!   rather than being dropped, and a dataset smaller than one batch wraps within a batch.
//! - **Randomness.** Sample `s` gets its own ChaCha8 stream derived from `(seed, s)`, so a batch
//!   is the same whatever the thread scheduling, and the same seed gives the same bytes.
//! - **Parallelism.** Each batch decodes and augments its images with rayon; with `prefetch > 0`
//!   a background thread builds up to `prefetch` batches ahead through a bounded channel.
//! - **Mosaic** (off unless [`AugmentConfig::mosaic`] is above 0, and only with `random`): a
//!   second ChaCha8 stream of `(seed, s)`, apart from the augmentation's, decides with that
//!   probability whether sample `s` is a [`crate::mosaic`] and, if so, draws the annotation
//!   indices of its 3 partner images (uniformly over the list, as ultralytics does); sample `s`'s
//!   own image is the top-left one and the mosaic's draws come from the sample's stream. A
//!   sample that is not a mosaic is therefore the same as with mosaic off. A partner that cannot
//!   be read leaves the sample out, as a bad image does.
//! - **MixUp** (off unless [`AugmentConfig::mixup`] is above 0, and only with `random`): a third
//!   ChaCha8 stream of `(seed, s)` decides with that probability whether sample `s` (plain or
//!   mosaic) is blended with a partner drawn uniformly from the list, augmented by
//!   `get_random_data` from the same stream, which then draws the ratio and shuffles the boxes
//!   of both together (see [`crate::mixup_into`]). A partner that cannot be read leaves the
//!   sample out.
//! - **Multi-scale** (off unless [`LoaderConfig::multi_scale`] is set, and only with `random`):
//!   batch `step` is built at [`MultiScale::input_for_step`]'s size, the same for every
//!   `every` consecutive batches; images, boxes and targets all follow that size.
//! - **Bad images** (unreadable, undecodable) are left out of the batch and listed in
//!   [`Batch::skipped`]; the batch is then smaller (possibly empty), never a panic.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::anchors::Anchors;
use crate::annotation::{Annotation, BoxLabel};
use crate::augment::{get_random_data_uninit, AugmentConfig};
use crate::error::DataError;
use crate::image_io::load_rgb;
use crate::input_shape::InputShape;
use crate::mixup::{mixup_boxes, mixup_into, mixup_ratio};
use crate::mosaic::mosaic_uninit;
use crate::multi_scale::MultiScale;
use crate::true_boxes::{preprocess_true_boxes, YTrue};
use crate::uninit::as_uninit;

/// Loader settings; defaults are train_bottleneck.py's stage 1 (batch 16, 416x416, augmented).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Network input size.
    pub input: InputShape,
    /// `true`: augmentation (`get_random_data(random=True)`); `false`: letterbox only.
    pub random: bool,
    /// Seed of the shuffles and of every sample's augmentation.
    pub seed: u64,
    /// Augmentation settings (also `max_boxes` for the letterbox path).
    pub augment: AugmentConfig,
    /// Reshuffle the annotations on every pass (keras-yolo3 always does; off for evaluation).
    pub shuffle: bool,
    /// Batches built ahead on a background thread; 0 builds each batch when it is asked for.
    pub prefetch: usize,
    /// Multi-scale training: each batch's input size drawn from these sizes (see
    /// [`MultiScale`]), only with `random`; `None` (the default) keeps `input` throughout.
    pub multi_scale: Option<MultiScale>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 16,
            input: InputShape::square416(),
            random: true,
            seed: 0,
            augment: AugmentConfig::default(),
            shuffle: true,
            prefetch: 2,
            multi_scale: None,
        }
    }
}

/// One training batch.
#[derive(Debug)]
pub struct Batch {
    /// Images `(B, 3, h, w)` f32 in `[0, 1]` on the CPU; `B` excludes skipped images.
    pub images: Tensor,
    /// One `(B, gh, gw, A, 5 + C)` target per output layer (Keras layout, coarsest first).
    pub y_true: Vec<Tensor>,
    /// Per output layer, per image: the anchor slots of `y_true` that hold an object
    /// ([`crate::YTrue::object_slots`]), listed on the host so a GPU loss need not read them back.
    pub objects: Vec<Vec<Vec<u32>>>,
    /// Each image's boxes in input pixels, after augmentation.
    pub boxes: Vec<Vec<BoxLabel>>,
    /// Each image's path, in batch order.
    pub paths: Vec<PathBuf>,
    /// Images left out of this batch, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether every image of the batch was skipped.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

struct Inner {
    annotations: Vec<Annotation>,
    cfg: LoaderConfig,
    anchors: Anchors,
    num_classes: usize,
}

/// Shuffling, parallel, prefetching batch loader over annotation lines.
#[derive(Clone)]
pub struct BatchLoader {
    inner: Arc<Inner>,
}

/// Domain separation between the permutation streams and the per-sample streams.
const PERMUTATION_SALT: u64 = 0x7065_726d_7574_6521;
/// Domain separation of the per-sample mosaic streams (decision and partner indices).
const MOSAIC_SALT: u64 = 0x6d6f_7361_6963_2121;
/// Domain separation of the per-sample mixup streams (decision, partner, its augmentation).
const MIXUP_SALT: u64 = 0x6d69_7875_7021_2121;

impl BatchLoader {
    /// A loader over `annotations`; errors when the list is empty or the batch size is 0.
    pub fn new(
        annotations: Vec<Annotation>,
        cfg: LoaderConfig,
        anchors: Anchors,
        num_classes: usize,
    ) -> Result<Self, DataError> {
        if annotations.is_empty() {
            return Err(DataError::Config(
                "the loader has no annotation lines".into(),
            ));
        }
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if let Some(m) = &cfg.multi_scale {
            m.validate()?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                annotations,
                cfg,
                anchors,
                num_classes,
            }),
        })
    }

    /// Number of annotation lines.
    pub fn len(&self) -> usize {
        self.inner.annotations.len()
    }

    /// Always false: [`BatchLoader::new`] refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.inner.annotations.is_empty()
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }

    /// keras-yolo3's `max(1, n // batch_size)`.
    pub fn steps_per_epoch(&self) -> usize {
        (self.len() / self.inner.cfg.batch_size).max(1)
    }

    /// The batches of epoch `epoch` (`steps_per_epoch()` of them).
    pub fn epoch(&self, epoch: usize) -> EpochIter {
        let steps = self.steps_per_epoch();
        self.batches(epoch * steps, steps)
    }

    /// `count` batches starting at batch `first_step` of the endless stream (epoch `e` starts at
    /// step `e * steps_per_epoch()`). Useful for a single ordered pass: with `shuffle = false`,
    /// `batches(0, n.div_ceil(batch))` covers every image once (the last batch wraps around).
    pub fn batches(&self, first_step: usize, count: usize) -> EpochIter {
        let b = self.inner.cfg.batch_size as u64;
        let first = first_step as u64 * b;
        if self.inner.cfg.prefetch == 0 {
            return EpochIter {
                source: Source::Inline {
                    inner: self.inner.clone(),
                    next_step: 0,
                    count,
                    first_sample: first,
                    perm: PermCache::default(),
                },
            };
        }
        let (tx, rx) = crossbeam_channel::bounded(self.inner.cfg.prefetch);
        let inner = self.inner.clone();
        let handle = std::thread::spawn(move || {
            let mut perm = PermCache::default();
            for step in 0..count as u64 {
                let batch = inner.build(first + step * b, &mut perm);
                if tx.send(batch).is_err() {
                    break;
                }
            }
        });
        EpochIter {
            source: Source::Thread {
                rx: Some(rx),
                handle: Some(handle),
            },
        }
    }

    /// The annotation index of sample `s` of the endless stream (sample `s` also uses ChaCha8
    /// stream `s` of `seed` for its augmentation); for tools that replay one sample.
    pub fn sample_index(&self, s: u64) -> usize {
        self.inner.index_of(s, &mut PermCache::default())
    }
}

/// The permutation of the current pass, kept between batches.
#[derive(Default)]
struct PermCache {
    pass: Option<u64>,
    perm: Vec<usize>,
}

impl Inner {
    fn index_of(&self, s: u64, cache: &mut PermCache) -> usize {
        let n = self.annotations.len() as u64;
        let (pass, pos) = (s / n, (s % n) as usize);
        if !self.cfg.shuffle {
            return pos;
        }
        if cache.pass != Some(pass) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ PERMUTATION_SALT);
            rng.set_stream(pass);
            cache.perm = (0..n as usize).collect();
            cache.perm.shuffle(&mut rng);
            cache.pass = Some(pass);
        }
        cache.perm[pos]
    }

    /// Sample `s` of annotation `ann` (decoded as `image`) into `out` at `input`: a mosaic when
    /// its mosaic stream says so, else `get_random_data`. Returns its boxes, or the image to
    /// skip and why.
    fn sample_into(
        &self,
        s: u64,
        ann: &Annotation,
        image: &image::RgbImage,
        input: InputShape,
        rng: &mut ChaCha8Rng,
        out: &mut [std::mem::MaybeUninit<f32>],
    ) -> Result<Vec<BoxLabel>, (PathBuf, String)> {
        let cfg = &self.cfg;
        if cfg.random && cfg.augment.mosaic > 0.0 {
            let mut mrng = ChaCha8Rng::seed_from_u64(cfg.seed ^ MOSAIC_SALT);
            mrng.set_stream(s);
            if mrng.random::<f64>() < cfg.augment.mosaic {
                let n = self.annotations.len();
                let partners: [&Annotation; 3] =
                    std::array::from_fn(|_| &self.annotations[mrng.random_range(0..n)]);
                let mut loaded = Vec::with_capacity(3);
                for p in partners {
                    loaded.push(load_rgb(&p.path).map_err(|e| {
                        (
                            ann.path.clone(),
                            format!("mosaic partner {}: {e}", p.path.display()),
                        )
                    })?);
                }
                return Ok(mosaic_uninit(
                    [image, &loaded[0], &loaded[1], &loaded[2]],
                    [
                        &ann.boxes,
                        &partners[0].boxes,
                        &partners[1].boxes,
                        &partners[2].boxes,
                    ],
                    input,
                    &cfg.augment,
                    rng,
                    out,
                ));
            }
        }
        Ok(get_random_data_uninit(
            image,
            &ann.boxes,
            input,
            cfg.random,
            &cfg.augment,
            rng,
            out,
        ))
    }

    /// Whether sample `s` is mixed up, and if so the rest of its mixup stream (for the
    /// partner's augmentation, the ratio and the box shuffle) and its partner annotation.
    fn mixup_partner(&self, s: u64) -> Option<(ChaCha8Rng, &Annotation)> {
        let cfg = &self.cfg;
        if !(cfg.random && cfg.augment.mixup > 0.0) {
            return None;
        }
        let mut xrng = ChaCha8Rng::seed_from_u64(cfg.seed ^ MIXUP_SALT);
        xrng.set_stream(s);
        if xrng.random::<f64>() >= cfg.augment.mixup {
            return None;
        }
        let partner = &self.annotations[xrng.random_range(0..self.annotations.len())];
        Some((xrng, partner))
    }

    /// Builds the batch of samples `first .. first + batch_size`.
    fn build(&self, first: u64, perm: &mut PermCache) -> Result<Batch, DataError> {
        let cfg = &self.cfg;
        let jobs: Vec<(u64, usize)> = (first..first + cfg.batch_size as u64)
            .map(|s| (s, self.index_of(s, perm)))
            .collect();
        let input = match &cfg.multi_scale {
            Some(m) if cfg.random => {
                m.input_for_step(cfg.input, cfg.seed, first / cfg.batch_size as u64)
            }
            _ => cfg.input,
        };
        // Every sample writes its own slice of the batch tensor's buffer; the slices of skipped
        // images are squeezed out afterwards.
        let (h, w) = (input.h, input.w);
        let size = 3 * h * w;
        // Not zero-filled: each sample writes every value of its slice exactly once.
        let mut pixels: Vec<f32> = Vec::with_capacity(jobs.len() * size);
        let buf = &mut pixels.spare_capacity_mut()[..jobs.len() * size];
        let results: Vec<Result<Vec<BoxLabel>, (PathBuf, String)>> = buf
            .par_chunks_mut(size)
            .zip(jobs.par_iter())
            .map(|(out, &(s, idx))| {
                let ann = &self.annotations[idx];
                let image = load_rgb(&ann.path).map_err(|e| (ann.path.clone(), e.to_string()))?;
                let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
                rng.set_stream(s);
                let Some((mut xrng, partner)) = self.mixup_partner(s) else {
                    return self.sample_into(s, ann, &image, input, &mut rng, out);
                };
                let mut a = vec![0f32; size];
                let boxes_a =
                    self.sample_into(s, ann, &image, input, &mut rng, as_uninit(&mut a))?;
                let partner_image = load_rgb(&partner.path).map_err(|e| {
                    (
                        ann.path.clone(),
                        format!("mixup partner {}: {e}", partner.path.display()),
                    )
                })?;
                let mut b = vec![0f32; size];
                let boxes_b = get_random_data_uninit(
                    &partner_image,
                    &partner.boxes,
                    input,
                    true,
                    &cfg.augment,
                    &mut xrng,
                    as_uninit(&mut b),
                );
                let r = mixup_ratio(&mut xrng);
                mixup_into(&a, &b, r, out);
                Ok(mixup_boxes(
                    boxes_a,
                    boxes_b,
                    cfg.augment.max_boxes,
                    &mut xrng,
                ))
            })
            .collect();

        let mut boxes = Vec::new();
        let mut paths = Vec::new();
        let mut skipped = Vec::new();
        for (k, ((_, idx), r)) in jobs.iter().zip(results).enumerate() {
            match r {
                Ok(b) => {
                    let m = paths.len();
                    if m != k {
                        buf.copy_within(k * size..(k + 1) * size, m * size);
                    }
                    boxes.push(b);
                    paths.push(self.annotations[*idx].path.clone());
                }
                Err(skip) => skipped.push(skip),
            }
        }
        // SAFETY: the first `paths.len()` slices were written in full by successful samples
        // (moved down over the slices of skipped ones), and lie within the capacity.
        unsafe { pixels.set_len(paths.len() * size) };
        let m = paths.len();
        let images = Tensor::from_vec(pixels, (m, 3, h, w), &Device::Cpu)?;
        let targets = preprocess_true_boxes(&boxes, input, &self.anchors, self.num_classes)
            .map_err(|e| match e {
                DataError::BoxClassOutOfRange {
                    image,
                    class,
                    num_classes,
                    ..
                } => DataError::Config(format!(
                    "{}: class id {class} is out of range: there are {num_classes} classes",
                    paths[image].display()
                )),
                DataError::BoxOutsideGrid { image, .. } => {
                    DataError::Config(format!("{}: {e}", paths[image].display()))
                }
                other => other,
            })?;
        let objects = targets.iter().map(YTrue::object_slots).collect();
        let y_true = targets
            .into_iter()
            // Moved into the tensors, not copied (4 MB per batch of 16 at 416x416).
            .map(|y| Tensor::from_vec(y.data, y.shape.to_vec(), &Device::Cpu))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch {
            images,
            y_true,
            objects,
            boxes,
            paths,
            skipped,
        })
    }
}

enum Source {
    Inline {
        inner: Arc<Inner>,
        next_step: usize,
        count: usize,
        first_sample: u64,
        perm: PermCache,
    },
    Thread {
        rx: Option<crossbeam_channel::Receiver<Result<Batch, DataError>>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// Iterator over the batches of an epoch (see [`BatchLoader::epoch`]). Dropping it early stops
/// the prefetching thread.
pub struct EpochIter {
    source: Source,
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Inline {
                inner,
                next_step,
                count,
                first_sample,
                perm,
            } => {
                if *next_step >= *count {
                    return None;
                }
                let first = *first_sample + (*next_step * inner.cfg.batch_size) as u64;
                *next_step += 1;
                Some(inner.build(first, perm))
            }
            Source::Thread { rx, .. } => rx.as_ref()?.recv().ok(),
        }
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        if let Source::Thread { rx, handle } = &mut self.source {
            // Disconnect first so a producer blocked on a full channel wakes up and exits.
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}
