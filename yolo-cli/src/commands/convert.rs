//! `yolo convert`: darknet `.weights` <-> safetensors checkpoints.

use std::path::PathBuf;

use anyhow::Context;
use yolo_model::weights_io::GivenClasses;

/// Options of `yolo convert`. The direction follows the file extensions: `.weights` to
/// `.safetensors` or the reverse (any case).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input file (`.weights` or `.safetensors`), or a run folder (its best model, as
    /// `detect --run` picks it; variant from the run).
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
    /// Tiny YOLOv3 (implied by a tiny run folder or `--cfg`).
    #[arg(long)]
    pub tiny: bool,
    /// darknet .cfg of the model: checked against the layers, and gives variant and class count.
    #[arg(long)]
    pub cfg: Option<PathBuf>,
}

/// Runs `yolo convert`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let (input, run_tiny) = if a.input.is_dir() {
        let state = yolo_train::RunState::load(&a.input)?;
        let w = yolo_train::run_weights(&a.input, &state)?;
        (w, state.config.variant == yolo_model::Variant::Tiny)
    } else {
        (a.input.clone(), false)
    };
    let cfg = match &a.cfg {
        Some(p) => Some((p, yolo_train::read_cfg_model(p)?)),
        None => None,
    };
    let cfg_tiny = cfg
        .as_ref()
        .is_some_and(|(_, m)| m.variant == yolo_model::Variant::Tiny);
    let tiny = a.tiny || run_tiny || cfg_tiny;
    let mut given = match (&a.classes, a.num_classes) {
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
    if let Some((p, m)) = &cfg {
        if given.as_ref().is_some_and(|g| g.count != m.num_classes) {
            anyhow::bail!(
                "{} gives {} classes, {} gives {}",
                p.display(),
                m.num_classes,
                given.as_ref().map_or(String::new(), |g| g.origin.clone()),
                given.as_ref().map_or(0, |g| g.count)
            );
        }
        given = Some(GivenClasses {
            count: m.num_classes,
            origin: format!("--cfg {}", p.display()),
        });
    }
    let done = yolo_model::weights_io::convert_weights(&input, &a.output, given.as_ref(), tiny)
        .with_context(|| format!("converting {} -> {}", input.display(), a.output.display()))?;
    let how = if done.inferred {
        "read from the file"
    } else {
        "as given"
    };
    eprintln!(
        "{}: {} classes ({how}); {}",
        input.display(),
        done.num_classes,
        done.report
    );
    println!("wrote {}", a.output.display());
    Ok(())
}
