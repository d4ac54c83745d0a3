//! `yolo demo`: synthetic data → tiny YOLOv3 through every training phase → held-out mAP.

use std::path::PathBuf;

use yolo_train::PhaseKind;
use yolo_train::{run_demo, DemoConfig};

/// Options of `yolo demo`; with none it runs the default demo into `runs/demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Epochs of a phase, `PHASE=N` as in `yolo train` (repeatable; PHASE: scratch,
    /// bottleneck, frozen, unfreeze; 0 skips the phase).
    #[arg(long = "epochs", value_name = "PHASE=N")]
    pub epochs: Vec<String>,
    /// Initial learning rate of the scratch or frozen phase, `PHASE=X` (repeatable).
    #[arg(long = "lr", value_name = "PHASE=X")]
    pub lr: Vec<String>,
    /// Training + validation images.
    #[arg(long)]
    pub train_images: Option<usize>,
    /// Held-out test images.
    #[arg(long)]
    pub test_images: Option<usize>,
    /// Old spelling of `--epochs scratch=N`.
    #[arg(long, hide = true)]
    pub scratch_epochs: Option<usize>,
    /// Old spelling of `--epochs bottleneck=N`.
    #[arg(long, hide = true)]
    pub bottleneck_epochs: Option<usize>,
    /// Old spelling of `--epochs frozen=N`.
    #[arg(long, hide = true)]
    pub frozen_epochs: Option<usize>,
    /// Old spelling of `--epochs unfreeze=N`.
    #[arg(long, hide = true)]
    pub unfreeze_epochs: Option<usize>,
    /// Image and network input size (multiple of 32).
    #[arg(long, visible_alias = "imgsz", alias = "size", alias = "input")]
    pub input_size: Option<u32>,
    /// Old spelling of `--lr scratch=X`.
    #[arg(long, hide = true)]
    pub scratch_lr: Option<f64>,
    /// Augment images in the from-scratch phase.
    #[arg(long)]
    pub augment_scratch: bool,
    /// Wall-time budget of the from-scratch phase, seconds.
    #[arg(long)]
    pub scratch_seconds: Option<f64>,
    /// Wall-time budget of the unfreeze phase, seconds.
    #[arg(long)]
    pub unfreeze_seconds: Option<f64>,
    /// Old spelling of `--lr frozen=X`.
    #[arg(long, hide = true)]
    pub frozen_lr: Option<f64>,
    /// Smallest and largest object side as fractions of the image side, e.g. `0.125,0.375`.
    #[arg(long, value_delimiter = ',')]
    pub object_size: Option<Vec<f64>>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `yolo demo`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut d = DemoConfig {
        out_dir: a.out.clone(),
        progress: !a.quiet,
        ..DemoConfig::default()
    };
    let set = |slot: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut d.train_images, a.train_images);
    set(&mut d.test_images, a.test_images);
    set(&mut d.scratch_epochs, a.scratch_epochs);
    set(&mut d.bottleneck_epochs, a.bottleneck_epochs);
    set(&mut d.frozen_epochs, a.frozen_epochs);
    set(&mut d.unfreeze_epochs, a.unfreeze_epochs);
    if let Some(s) = a.input_size {
        d.size = s;
    }
    if let Some(lr) = a.scratch_lr {
        d.scratch_lr = lr;
    }
    d.augment_scratch |= a.augment_scratch;
    if let Some(s) = a.scratch_seconds {
        d.scratch_seconds = s;
    }
    if let Some(s) = a.unfreeze_seconds {
        d.unfreeze_seconds = s;
    }
    if let Some(lr) = a.frozen_lr {
        d.frozen_lr = lr;
    }
    for s in &a.epochs {
        let (p, v) = super::phase_value("--epochs", s)?;
        let n: usize = v
            .parse()
            .map_err(|_| anyhow::anyhow!("--epochs `{s}`: `{v}` is not a number of epochs"))?;
        *match p {
            PhaseKind::Scratch => &mut d.scratch_epochs,
            PhaseKind::Bottleneck => &mut d.bottleneck_epochs,
            PhaseKind::Frozen => &mut d.frozen_epochs,
            PhaseKind::Unfreeze => &mut d.unfreeze_epochs,
        } = n;
    }
    for s in &a.lr {
        let (p, v) = super::phase_value("--lr", s)?;
        let x = match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => x,
            _ => anyhow::bail!("--lr `{s}`: `{v}` is not a learning rate (a number > 0)"),
        };
        match p {
            PhaseKind::Scratch => d.scratch_lr = x,
            PhaseKind::Frozen => d.frozen_lr = x,
            other => anyhow::bail!(
                "--lr `{s}`: the demo sets the learning rate of scratch and frozen only, not {other}"
            ),
        }
    }
    if let Some(o) = a.object_size {
        let [lo, hi] = o[..] else {
            anyhow::bail!("--object-size takes two fractions, MIN,MAX; got {o:?}");
        };
        d.object_size = [lo, hi];
    }
    let r = run_demo(&d, |m| eprintln!("{m}"))?;
    let run = r.run_dir.display();
    println!("demo finished in {:.1}s", r.seconds);
    println!("held-out test mAP@0.5: {:.4}", r.test_map);
    println!("dataset:      {}", d.out_dir.join("data").display());
    println!("run:          {run} (config.toml, state.json, checkpoints/)");
    println!("metrics:      {run}/metrics.csv");
    println!("loss plot:    {run}/loss.png");
    println!("final model:  {}", r.weights.display());
    for p in &r.drawn {
        println!("detections:   {}", p.display());
    }
    Ok(())
}
