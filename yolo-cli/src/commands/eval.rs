//! `yolo eval`: VOC AP@0.5 (all-point, or 11-point with `--voc11`) and COCO mAP@[.5:.95], either of
//! a model on an annotation file (`--weights ... --annotations FILE`), of a training run's model on
//! its validation split (`--run DIR`), or of a results file against ground truth
//! (`--detections RESULTS.json --ground-truth GT`).

use std::path::{Path, PathBuf};

use super::model_args::ModelArgs;
use anyhow::{bail, Context};
use yolo_eval::{
    draw_pr_curve, evaluate_map, read_coco_results, read_ground_truth, save_png, EvalParams,
    MapReport,
};

/// Options of `yolo eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// keras-yolo3 annotation file to evaluate --weights on (with --run: the run's validation
    /// split is used instead).
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// COCO results file (`image_id` an integer id or a file name), evaluated without a model.
    #[arg(long, requires = "ground_truth")]
    pub detections: Option<PathBuf>,
    /// Ground truth for --detections: an annotation file, a VOC folder (both need --classes; results'
    /// category_id is the 0-based line of the classes file) or a COCO instances JSON.
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Score threshold in model mode (low: mAP needs the whole ranking).
    #[arg(long, default_value_t = 0.001, value_parser = super::unit_interval)]
    pub score: f32,
    /// IoU threshold of the per-class NMS in model mode.
    #[arg(long, default_value_t = 0.45, value_parser = super::unit_interval)]
    pub iou: f32,
    /// Most boxes per class and image in model mode.
    #[arg(long, default_value_t = 100)]
    pub max_boxes: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_size: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one precision-recall curve PNG per class (VOC, IoU 0.5) into this folder.
    #[arg(long)]
    pub pr_curves: Option<PathBuf>,
    /// Show the VOC2007 11-point AP in the table instead of the all-point AP.
    #[arg(long)]
    pub voc11: bool,
}

/// A file-name-safe version of a class name.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Evaluates `model` on `annotations` (read from `source`) with the thresholds of `args`.
fn evaluate_model(
    args: &Args,
    model: &super::detect::LoadedModel,
    annotations: &[yolo_data::Annotation],
    source: &Path,
) -> anyhow::Result<MapReport> {
    let detector = model.detector(EvalParams {
        score_threshold: args.score,
        iou_threshold: args.iou,
        max_boxes: args.max_boxes,
    });
    Ok(evaluate_map(
        annotations,
        model.classes(),
        source,
        args.batch_size,
        |imgs| detector.detect(imgs),
    )?)
}

/// `--run DIR`: the run's validation split, with the model `--run` resolves to.
fn evaluate_run(args: &Args, run: &Path) -> anyhow::Result<MapReport> {
    let state = yolo_train::RunState::load(run)?;
    let data = yolo_train::Dataset::load(&state.config)?;
    let model = super::detect::LoadedModel::load(&args.model)?;
    println!(
        "evaluating {} on {} validation images of {}",
        model.source.weights.display(),
        data.val.len(),
        state.config.annotations.display()
    );
    evaluate_model(args, &model, &data.val, &state.config.annotations)
}

/// The ground truth's classes for --detections: --classes when given.
fn given_classes(args: &Args) -> anyhow::Result<Option<Vec<String>>> {
    Ok(match &args.model.classes {
        Some(c) => Some(yolo_data::read_classes(c)?),
        None => None,
    })
}

fn evaluate(args: &Args) -> anyhow::Result<MapReport> {
    if args.model.given() && args.detections.is_some() {
        bail!("--detections evaluates a results file without a model: drop --weights / --run");
    }
    if let Some(run) = &args.model.run {
        if args.annotations.is_some() {
            bail!("--run evaluates on the run's validation split: drop --annotations (or use --weights with --annotations)");
        }
        evaluate_run(args, run)
    } else if args.model.weights.is_some() {
        let Some(ann) = &args.annotations else {
            bail!("--weights needs --annotations FILE to evaluate on");
        };
        let model = super::detect::LoadedModel::load(&args.model)?;
        for line in model.source.describe() {
            println!("{line}");
        }
        let annotations = yolo_data::read_annotations(ann)?;
        evaluate_model(args, &model, &annotations, ann)
    } else if let Some(det_path) = &args.detections {
        let gt_path = args
            .ground_truth
            .as_ref()
            .context("--detections needs --ground-truth")?;
        let classes = given_classes(args)?;
        let gt = read_ground_truth(gt_path, classes.as_deref())?;
        let mut set = gt.set.clone();
        set.detections = read_coco_results(det_path, &gt)?;
        Ok(MapReport::evaluate(&set))
    } else {
        bail!("give either --weights W --annotations FILE, --run DIR, or --detections RESULTS.json --ground-truth GT");
    }
}

/// Runs the evaluation, prints the per-class table and writes the requested files.
pub fn run(args: Args) -> anyhow::Result<()> {
    let report = evaluate(&args)?;
    print!("{}", report.table(args.voc11));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.pr_curves {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
        for (k, name) in report.classes.iter().enumerate() {
            let c = &report.voc.per_class[k];
            let (Some(rec), Some(prec), Some(ap)) = (&c.recall, &c.precision, c.ap_all_point)
            else {
                continue; // no non-difficult object: no curve
            };
            let img = draw_pr_curve(rec, prec, &format!("{name} AP {ap:.3}"));
            let path = dir.join(format!("pr_{k}_{}.png", safe_name(name)));
            save_png(&img, &path)?;
        }
        println!("wrote PR curves to {}", dir.display());
    }
    Ok(())
}
