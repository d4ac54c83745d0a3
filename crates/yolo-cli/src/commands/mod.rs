//! Subcommands: one file each; this module only declares and dispatches them.
//!
//! To add a command: a file `name.rs` with `#[derive(clap::Args)] pub struct Args` and
//! `pub fn run(args: Args) -> anyhow::Result<()>`, then one line in each of the three lists below.

use clap::{Parser, Subcommand};

// -- list 1: modules
mod anchors;
mod bench;
mod check_data;
mod coco2txt;
mod convert;
mod dataset_out;
mod demo;
mod detect;
mod eval;
mod info;
mod model_args;
mod synth;
mod train;
mod voc2txt;

/// Train and use YOLOv3 detectors: a Rust re-creation of keras-yolo3's training pipeline.
#[derive(Parser, Debug)]
#[command(name = "yolo", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of `yolo`.
#[derive(Subcommand, Debug)]
pub enum Command {
    // -- list 2: variants
    /// Train with keras-yolo3's train_bottleneck.py schedule (bottleneck, frozen, unfreeze).
    Train(train::Args),
    /// Generate synthetic data, train a tiny model through every phase, report held-out mAP.
    Demo(demo::Args),
    /// Convert darknet .weights <-> safetensors.
    Convert(convert::Args),
    /// k-means anchors over the boxes of an annotation file (keras-yolo3's kmeans.py).
    Anchors(anchors::Args),
    /// Check an annotation file and its images: every bad line, token and image, with counts.
    CheckData(check_data::Args),
    /// Convert a COCO instances JSON file to an annotation file and a classes file.
    Coco2txt(coco2txt::Args),
    /// Generate the synthetic shapes dataset (images, annotation file, classes file).
    Synth(synth::Args),
    /// Convert a Pascal VOC folder to an annotation file and a classes file.
    Voc2txt(voc2txt::Args),
    /// Detect objects in images: draw the boxes and write a COCO results file.
    Detect(detect::Args),
    /// VOC and COCO mAP of a model on annotations, or of a results file against ground truth.
    Eval(eval::Args),
    /// Quick speed figures: training steps of each phase next to the machine's GEMM rate.
    Bench(bench::Args),
    /// Print the version and the devices this build supports.
    Info(info::Args),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        // -- list 3: dispatch
        Command::Train(a) => train::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Anchors(a) => anchors::run(a),
        Command::CheckData(a) => check_data::run(a),
        Command::Coco2txt(a) => coco2txt::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Voc2txt(a) => voc2txt::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info(a) => info::run(a),
    }
}

/// A clap value parser for thresholds: a number in [0, 1].
pub(crate) fn unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .parse()
        .map_err(|e| format!("`{s}` is not a number: {e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in [0, 1]"))
    }
}
