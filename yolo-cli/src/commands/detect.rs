//! `yolo detect`: run a model (darknet .weights, a checkpoint or a run folder) on images, write
//! them with their boxes drawn and a COCO results file `detections.json` (its `image_id` is each
//! image's path as given). Video files and cameras are not read.

use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::Device;
use yolo_eval::{coco_results_json, draw_detections, Detector, EvalParams, ImageRef};
use yolo_model::YoloBody;
use yolo_train::ModelSource;

use super::model_args::ModelArgs;

/// Options of `yolo detect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Score threshold (objectness x class probability).
    #[arg(long, default_value_t = 0.3, value_parser = super::unit_interval)]
    pub score: f32,
    /// IoU threshold of the per-class non-max suppression.
    #[arg(long, default_value_t = 0.45, value_parser = super::unit_interval)]
    pub iou: f32,
    /// Most boxes kept per class.
    #[arg(long, default_value_t = 20)]
    pub max_boxes: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_size: usize,
    /// Image files, or folders whose .jpg/.jpeg/.png files are all used.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output folder for the drawn images and detections.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// A loaded network with what its detector needs (see [`ModelSource`]).
pub(crate) struct LoadedModel {
    pub body: YoloBody,
    pub source: ModelSource,
    pub device: Device,
}

impl LoadedModel {
    /// Resolves and loads the model `args` name, on `args.device`.
    pub(crate) fn load(args: &ModelArgs) -> anyhow::Result<Self> {
        if !args.given() {
            bail!("give --weights FILE (.weights or .safetensors) or --run DIR");
        }
        let source = ModelSource::resolve(&args.request())?;
        let device = yolo_model::parse_device(&args.device)?;
        let body = source.load(&device)?;
        Ok(LoadedModel {
            body,
            source,
            device,
        })
    }

    /// The class names.
    pub(crate) fn classes(&self) -> &[String] {
        &self.source.classes
    }

    /// The [`Detector`] running this network at its input size with `params`.
    pub(crate) fn detector(
        &self,
        params: EvalParams,
    ) -> Detector<impl Fn(&candle_core::Tensor) -> candle_core::Result<Vec<candle_core::Tensor>> + '_>
    {
        Detector {
            forward: |x: &candle_core::Tensor| self.body.forward(x),
            anchors: self.source.anchors.wh.clone(),
            masks: Some(self.source.masks.clone()),
            num_classes: self.source.classes.len(),
            input: self.source.input,
            params,
            device: self.device.clone(),
        }
    }
}

/// Expands folders into their image files (sorted, not recursive); files are kept as given.
pub(crate) fn collect_images(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot list the folder", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension().is_some_and(|e| {
                        let e = e.to_string_lossy().to_ascii_lowercase();
                        e == "jpg" || e == "jpeg" || e == "png"
                    })
                })
                .collect();
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such image file or folder", p.display());
        }
    }
    if out.is_empty() {
        bail!("no images found in the given paths");
    }
    Ok(out)
}

/// Runs detection and writes the outputs.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = LoadedModel::load(&args.model)?;
    for line in model.source.describe() {
        println!("{line}");
    }
    let images = collect_images(&args.images)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output folder", args.out.display()))?;
    let detector = model.detector(EvalParams {
        score_threshold: args.score,
        iou_threshold: args.iou,
        max_boxes: args.max_boxes,
    });
    let mut results = Vec::with_capacity(images.len());
    let mut used_names = std::collections::HashSet::new();
    // An unreadable image is reported and left out; the others are still detected and written.
    let mut unreadable = Vec::new();
    for chunk in images.chunks(args.batch_size) {
        let mut paths = Vec::with_capacity(chunk.len());
        let mut loaded = Vec::with_capacity(chunk.len());
        for p in chunk {
            match yolo_data::load_rgb(p) {
                Ok(img) => {
                    paths.push(p);
                    loaded.push(img);
                }
                Err(e) => {
                    eprintln!("skipped: {e}");
                    unreadable.push(p.display().to_string());
                }
            }
        }
        if loaded.is_empty() {
            continue;
        }
        let dets = detector.detect(&loaded)?;
        for ((path, mut img), d) in paths.into_iter().zip(loaded).zip(dets) {
            draw_detections(&mut img, &d, model.classes());
            let stem = path
                .file_stem()
                .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned());
            let mut name = format!("{stem}.png");
            let mut k = 1;
            while !used_names.insert(name.clone()) {
                name = format!("{stem}_{k}.png");
                k += 1;
            }
            let out = args.out.join(&name);
            yolo_eval::save_png(&img, &out)?;
            println!(
                "{}: {} objects -> {}",
                path.display(),
                d.len(),
                out.display()
            );
            results.push((ImageRef::Name(path.display().to_string()), d));
        }
    }
    let ids: Vec<i64> = (0..model.classes().len() as i64).collect();
    let json_path = args.out.join("detections.json");
    let text = serde_json::to_string_pretty(&coco_results_json(&results, &ids))?;
    std::fs::write(&json_path, text)
        .with_context(|| format!("{}: cannot write", json_path.display()))?;
    println!("wrote {}", json_path.display());
    if !unreadable.is_empty() {
        anyhow::bail!(
            "{} of {} images could not be read: {}",
            unreadable.len(),
            images.len(),
            unreadable.join(", ")
        );
    }
    Ok(())
}
