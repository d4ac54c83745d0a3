//! `yolo detect`: run a trained model on images, write them with their boxes drawn and a COCO
//! results file `detections.json` (its `image_id` is each image's path as given).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use yolo_data::{read_anchors, read_classes, InputShape};
use yolo_eval::{coco_results_json, draw_detections, Detector, EvalParams, ImageRef};
use yolo_model::{YoloBody, YoloConfig};

/// Options of `yolo detect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model weights (safetensors checkpoint written by `yolo train`).
    #[arg(long)]
    pub weights: PathBuf,
    /// Classes file, one name per line.
    #[arg(long)]
    pub classes: PathBuf,
    /// Anchors file (9 anchors, or 6 with --tiny).
    #[arg(long)]
    pub anchors: PathBuf,
    /// The model is tiny YOLOv3.
    #[arg(long)]
    pub tiny: bool,
    /// Network input size (square, a multiple of 32).
    #[arg(long, default_value_t = 416)]
    pub input_size: usize,
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
    /// Device: cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Image files, or folders whose .jpg/.jpeg/.png files are all used.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output folder for the drawn images and detections.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// A loaded network with its anchors and classes, ready for [`Detector`].
pub(crate) struct LoadedModel {
    pub body: YoloBody,
    pub anchors: Vec<[f32; 2]>,
    pub classes: Vec<String>,
    pub device: Device,
}

impl LoadedModel {
    /// The [`Detector`] running this network at `input` with `params`.
    pub(crate) fn detector(
        &self,
        input: InputShape,
        params: EvalParams,
    ) -> Detector<impl Fn(&candle_core::Tensor) -> candle_core::Result<Vec<candle_core::Tensor>> + '_>
    {
        Detector {
            forward: |x: &candle_core::Tensor| self.body.forward(x),
            anchors: self.anchors.clone(),
            num_classes: self.classes.len(),
            input,
            params,
            device: self.device.clone(),
        }
    }
}

/// Reads classes and anchors files and builds the network (see [`build_model`]).
pub(crate) fn load_model(
    weights: &Path,
    classes: &Path,
    anchors: &Path,
    tiny: bool,
    device: &str,
) -> anyhow::Result<LoadedModel> {
    build_model(
        weights,
        read_classes(classes)?,
        read_anchors(anchors)?.wh,
        tiny,
        device,
    )
}

/// Checks the anchor count against the variant and builds the network on the checkpoint's tensors.
pub(crate) fn build_model(
    weights: &Path,
    classes: Vec<String>,
    anchors: Vec<[f32; 2]>,
    tiny: bool,
    device: &str,
) -> anyhow::Result<LoadedModel> {
    let cfg = if tiny {
        YoloConfig::tiny(classes.len())
    } else {
        YoloConfig::v3(classes.len())
    };
    let want = cfg.num_layers() * cfg.num_anchors;
    if anchors.len() != want {
        bail!(
            "{} anchors in the anchors file, {} needs {want}{}",
            anchors.len(),
            if tiny { "tiny YOLOv3" } else { "YOLOv3" },
            if tiny {
                ""
            } else {
                " (pass --tiny for a tiny model)"
            }
        );
    }
    let device = yolo_train::parse_device(device)?;
    // SAFETY: the checkpoint is memory-mapped read-only; it must not be modified while we run.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
        .with_context(|| format!("{}: cannot read the weights", weights.display()))?;
    let body = YoloBody::new(&cfg, vb).with_context(|| {
        format!(
            "{}: weights do not fit {} with {} classes",
            weights.display(),
            cfg.describe(),
            classes.len()
        )
    })?;
    Ok(LoadedModel {
        body,
        anchors,
        classes,
        device,
    })
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
    let input = InputShape::new(args.input_size, args.input_size)?;
    let model = load_model(
        &args.weights,
        &args.classes,
        &args.anchors,
        args.tiny,
        &args.device,
    )?;
    let images = collect_images(&args.images)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output folder", args.out.display()))?;
    let detector = model.detector(
        input,
        EvalParams {
            score_threshold: args.score,
            iou_threshold: args.iou,
            max_boxes: args.max_boxes,
        },
    );
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
            draw_detections(&mut img, &d, &model.classes);
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
    let ids: Vec<i64> = (0..model.classes.len() as i64).collect();
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
