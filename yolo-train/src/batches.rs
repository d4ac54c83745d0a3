//! One batch source for every phase: the bottleneck cache's features or the loader's images,
//! handed to the training loop as device-ready batches with their `y_true` targets.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use yolo_data::{Annotation, AugmentConfig, BatchLoader, LoaderConfig};
use yolo_loss::ObjectSlots;
use yolo_model::{FreezeBody, YoloBody};

use crate::bottleneck::{cache_paths, ensure_cache, entry_boxes, epoch_batches, fingerprint};
use crate::cache::BottleneckCache;
use crate::config::TrainConfig;
use crate::dataset::{y_true_with_objects, Dataset};
use crate::error::Result;
use crate::schedule::{DataSource, PhasePlan};
use crate::trainer::Trainer;

/// Where a phase's batches come from (see [`crate::schedule::DataSource`]).
pub enum BatchSource {
    /// Cached bottleneck features of the training and validation images.
    Cache {
        /// Training features.
        train: Box<BottleneckCache>,
        /// Validation features.
        val: Box<BottleneckCache>,
    },
    /// Loaders of the training and validation images.
    Images {
        /// Training images (augmented and shuffled as the phase says).
        train: BatchLoader,
        /// Validation images (letterboxed, in order, unless `augmented_validation`).
        val: BatchLoader,
    },
}

/// What the model takes in.
pub enum Input {
    /// The bottleneck features: only the output convs run.
    Features(Vec<Tensor>),
    /// Images: the whole model runs.
    Images(Tensor),
}

/// A batch on the device: input, targets and the images' paths.
pub struct Batch {
    /// The model input.
    pub input: Input,
    /// One target per output layer.
    pub y_true: Vec<Tensor>,
    /// The targets' object slots, listed on the host where they were built (the loss's gather
    /// indices, so it reads nothing back from the device).
    pub objects: ObjectSlots,
    /// Each sample's image path, in batch order.
    pub paths: Vec<String>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// The model's outputs: a training step under `freeze` (BatchNorm in training mode outside
    /// the frozen part), or inference mode (`None`) for validation.
    pub fn forward(&self, model: &YoloBody, train: Option<FreezeBody>) -> Result<Vec<Tensor>> {
        Ok(match (&self.input, train) {
            (Input::Features(f), _) => model.forward_last(f)?,
            (Input::Images(x), Some(freeze)) => model.forward_t(x, true, freeze)?,
            (Input::Images(x), None) => model.forward(x)?,
        })
    }
}

/// One step of a training epoch: its index (empty batches count), the images the loader left
/// out, and the batch (`None` when every image was left out).
pub struct Step {
    /// 0-based step of the epoch.
    pub index: usize,
    /// Images left out, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// The batch, if any image is left.
    pub batch: Option<Batch>,
}

/// The batches' context: the data (input size, anchors, classes) and the device.
#[derive(Clone, Copy)]
pub struct Targets<'a> {
    /// The run's data.
    pub data: &'a Dataset,
    /// Where batches go.
    pub device: &'a Device,
}

impl Targets<'_> {
    /// The cached records `idx` of `cache` as a batch.
    fn cached(&self, cache: &BottleneckCache, idx: &[usize]) -> Result<Batch> {
        let entries = &cache.header().entries;
        let boxes: Vec<_> = idx.iter().map(|&i| entry_boxes(&entries[i])).collect();
        let (y_true, objects) = y_true_with_objects(
            &boxes,
            self.data.input,
            &self.data.anchors,
            self.data.num_classes(),
            self.device,
        )?;
        Ok(Batch {
            input: Input::Features(cache.batch(idx, self.device)?),
            y_true,
            objects,
            paths: idx.iter().map(|&i| entries[i].path.clone()).collect(),
        })
    }

    /// The first `m` images of a loader batch, moved to the device.
    fn images(&self, b: yolo_data::Batch, m: usize) -> Result<Batch> {
        let (mut x, mut y_true) = (b.images, b.y_true);
        if m < b.paths.len() {
            x = x.narrow(0, 0, m)?;
            y_true = y_true
                .iter()
                .map(|t| t.narrow(0, 0, m))
                .collect::<candle_core::Result<_>>()?;
        }
        Ok(Batch {
            input: Input::Images(x.to_device(self.device)?),
            y_true: y_true
                .iter()
                .map(|t| t.to_device(self.device))
                .collect::<candle_core::Result<_>>()?,
            objects: ObjectSlots::new(b.objects).first_images(m),
            paths: b.paths[..m]
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        })
    }
}

impl BatchSource {
    /// The image loaders of `plan`'s phase.
    pub fn images(cfg: &TrainConfig, plan: &PhasePlan, data: &Dataset) -> Result<Self> {
        let pc = &plan.config;
        let loader = |anns: Vec<Annotation>,
                      random: bool,
                      seed: u64,
                      augment: AugmentConfig,
                      shuffle: bool,
                      multi_scale: Option<yolo_data::MultiScale>| {
            BatchLoader::new(
                anns,
                LoaderConfig {
                    batch_size: pc.batch_size,
                    input: data.input,
                    random,
                    seed,
                    augment,
                    shuffle,
                    prefetch: cfg.prefetch,
                    multi_scale,
                },
                data.anchors.clone(),
                data.num_classes(),
            )
        };
        // The mosaic and multi-scale apply only where the phase augments (the loader checks
        // `random`); validation stays at the run's input.
        let mosaic = AugmentConfig {
            mosaic: cfg.mosaic,
            mixup: cfg.mixup,
            ..AugmentConfig::default()
        };
        let train = loader(
            data.train.clone(),
            pc.augment,
            plan.seed,
            mosaic,
            pc.shuffle,
            cfg.multi_scale(),
        )?;
        let val = loader(
            data.val.clone(),
            cfg.augmented_validation,
            plan.seed ^ 0x5641_4c00,
            AugmentConfig::default(),
            cfg.augmented_validation,
            None,
        )?;
        Ok(BatchSource::Images { train, val })
    }

    /// Optimizer steps per training epoch (batches, empty ones included).
    pub fn steps_per_epoch(&self, batch_size: usize) -> usize {
        match self {
            BatchSource::Cache { train, .. } => {
                epoch_batches(train.len(), batch_size, 0, 0, false).len()
            }
            BatchSource::Images { train, .. } => train.steps_per_epoch(),
        }
    }

    /// The steps of training epoch `epoch` of `plan`'s phase.
    pub fn train_epoch<'a>(
        &'a self,
        t: Targets<'a>,
        plan: &PhasePlan,
        epoch: usize,
    ) -> Box<dyn Iterator<Item = Result<Step>> + 'a> {
        let pc = &plan.config;
        match self {
            BatchSource::Cache { train, .. } => {
                let batches =
                    epoch_batches(train.len(), pc.batch_size, plan.seed, epoch, pc.shuffle);
                Box::new(batches.into_iter().enumerate().map(move |(index, idx)| {
                    Ok(Step {
                        index,
                        skipped: Vec::new(),
                        batch: Some(t.cached(train, &idx)?),
                    })
                }))
            }
            BatchSource::Images { train, .. } => {
                Box::new(train.epoch(epoch).enumerate().map(move |(index, b)| {
                    let b = b?;
                    let skipped = b.skipped.clone();
                    let m = b.len();
                    let batch = if m == 0 { None } else { Some(t.images(b, m)?) };
                    Ok(Step {
                        index,
                        skipped,
                        batch,
                    })
                }))
            }
        }
    }

    /// The validation batches after training epoch `epoch`: every validation sample once, in
    /// order, unless `augmented` (keras-yolo3's augmented, sampled validation). Empty batches are
    /// left out.
    pub fn validation<'a>(
        &'a self,
        t: Targets<'a>,
        batch_size: usize,
        epoch: usize,
        augmented: bool,
    ) -> Box<dyn Iterator<Item = Result<Batch>> + 'a> {
        match self {
            BatchSource::Cache { val, .. } => {
                let all: Vec<usize> = (0..val.len()).collect();
                let chunks: Vec<Vec<usize>> =
                    all.chunks(batch_size).map(<[usize]>::to_vec).collect();
                Box::new(chunks.into_iter().map(move |idx| t.cached(val, &idx)))
            }
            BatchSource::Images { val, .. } => {
                let nval = val.len();
                let iter = if augmented {
                    val.epoch(epoch)
                } else {
                    val.batches(0, nval.div_ceil(batch_size))
                };
                let mut seen = 0usize;
                Box::new(iter.filter_map(move |b| {
                    let b = match b {
                        Ok(b) => b,
                        Err(e) => return Some(Err(e.into())),
                    };
                    let mut m = b.len();
                    if m == 0 {
                        return None;
                    }
                    if !augmented && seen + m > nval {
                        // The last ordered batch wraps around: keep each image once.
                        m = nval - seen;
                    }
                    seen += m;
                    Some(t.images(b, m))
                }))
            }
        }
    }
}

impl Trainer {
    /// The data and device batches are built for.
    pub(crate) fn targets(&self) -> Targets<'_> {
        Targets {
            data: &self.data,
            device: &self.device,
        }
    }

    /// The batch source of `plan`'s phase: the bottleneck caches (built, or reused when their
    /// fingerprint matches) or the image loaders.
    pub(crate) fn batch_source(&mut self, plan: &PhasePlan) -> Result<BatchSource> {
        match plan.data {
            DataSource::Images => BatchSource::images(self.cfg(), plan, &self.data),
            DataSource::BottleneckCache => {
                let (train, val) = self.prepare_cache()?;
                Ok(BatchSource::Cache {
                    train: Box::new(train),
                    val: Box::new(val),
                })
            }
        }
    }

    fn prepare_cache(&mut self) -> Result<(BottleneckCache, BottleneckCache)> {
        let cfg = self.cfg().clone();
        let (tp, vp) = cache_paths(&self.run_dir);
        let mut out = Vec::new();
        for (label, anns, path) in [("train", &self.data.train, tp), ("val", &self.data.val, vp)] {
            // Features computed in 16 bits differ from f32 ones: a cache of the other precision
            // is rebuilt. f32 keeps its fingerprint of old.
            let fp_label = match cfg.precision {
                yolo_model::Precision::F32 => label.to_string(),
                p => format!("{label} precision={p}"),
            };
            let fp = fingerprint(
                &self.varmap,
                anns,
                self.data.input,
                &self.data.anchors,
                cfg.cache_dtype,
                cfg.variant == yolo_model::Variant::Tiny,
                &fp_label,
            )?;
            let t = Instant::now();
            let (c, rebuilt) = ensure_cache(
                &path,
                &self.model,
                anns,
                &fp,
                self.data.input,
                cfg.cache_dtype,
                cfg.seed,
                &self.device,
            )?;
            (self.log)(&format!(
                "bottleneck cache {label}: {} ({} images, {}, {:.1}s)",
                path.display(),
                c.len(),
                if rebuilt {
                    "built"
                } else {
                    "reused: fingerprint matches"
                },
                t.elapsed().as_secs_f64()
            ));
            out.push(c);
        }
        let v = out.pop().expect("two caches");
        let t = out.pop().expect("two caches");
        Ok((t, v))
    }
}
