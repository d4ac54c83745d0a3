//! `yolo convert`: darknet `.weights` <-> safetensors checkpoints.

use std::path::PathBuf;

use anyhow::Context;
use yolo_train::convert::GivenClasses;

/// Options of `yolo convert`. The direction follows the file extensions: `.weights` to
/// `.safetensors` or the reverse (any case).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input file (`.weights` or `.safetensors`).
    pub input: PathBuf,
    /// Output file (`.safetensors` or `.weights`).
    pub output: PathBuf,
    /// Number of classes of the model; read from the input file when not given (it must agree
    /// with the file when given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "classes")]
    pub num_classes: Option<u64>,
    /// Class names file (sets the number of classes, which must agree with the file).
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Tiny YOLOv3.
    #[arg(long)]
    pub tiny: bool,
}

/// Runs `yolo convert`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let given = match (&a.classes, a.num_classes) {
        (Some(p), _) => Some(GivenClasses {
            count: yolo_data::read_classes(p)?.len(),
            origin: format!("--classes {}", p.display()),
        }),
        (None, Some(n)) => Some(GivenClasses {
            count: usize::try_from(n).context("--num-classes is too large")?,
            origin: "--num-classes".into(),
        }),
        (None, None) => None,
    };
    let done = yolo_train::convert::convert_weights(&a.input, &a.output, given.as_ref(), a.tiny)
        .with_context(|| format!("converting {} -> {}", a.input.display(), a.output.display()))?;
    let how = if done.inferred {
        "read from the file"
    } else {
        "as given"
    };
    eprintln!(
        "{}: {} classes ({how}); {}",
        a.input.display(),
        done.num_classes,
        done.report
    );
    println!("wrote {}", a.output.display());
    Ok(())
}
