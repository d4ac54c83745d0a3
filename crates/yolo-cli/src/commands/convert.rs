//! `yolo convert`: darknet `.weights` <-> safetensors checkpoints.

use std::path::PathBuf;

use anyhow::Context;

/// Options of `yolo convert`. The direction follows the file extensions: `.weights` to
/// `.safetensors` or the reverse.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input file (`.weights` or `.safetensors`).
    pub input: PathBuf,
    /// Output file (`.safetensors` or `.weights`).
    pub output: PathBuf,
    /// Number of classes of the model (80 for the COCO darknet weights).
    #[arg(long, default_value_t = 80)]
    pub num_classes: usize,
    /// Class names file (sets the number of classes).
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Tiny YOLOv3.
    #[arg(long)]
    pub tiny: bool,
}

/// Runs `yolo convert`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let num_classes = match &a.classes {
        Some(p) => yolo_data::read_classes(p)?.len(),
        None => a.num_classes,
    };
    let report = yolo_train::convert::convert_weights(&a.input, &a.output, num_classes, a.tiny)
        .with_context(|| format!("converting {} -> {}", a.input.display(), a.output.display()))?;
    eprintln!("{}: {report}", a.input.display());
    println!("wrote {}", a.output.display());
    Ok(())
}
