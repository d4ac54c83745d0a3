//! `yolo train`: keras-yolo3's train_bottleneck.py schedule (bottleneck → frozen → unfreeze).

use std::path::PathBuf;

use anyhow::Context;
use yolo_train::{RunOutcome, TrainConfig, Trainer};

/// Options of `yolo train`. Every setting of the TOML config can also be given as `--set key=value`
/// (dotted keys, e.g. `--set frozen.epochs=10`); the named flags below are shorthands.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML configuration file, laid over the train_bottleneck.py defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any setting: `key=value` (TOML value; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Continue the run in this directory from its state.json (same phase, epoch, optimizer
    /// moments, LR and callback counters); `--set` may change e.g. `device` or `progress`.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Annotation file (`path x1,y1,x2,y2,c ...`).
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// Class names file.
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Anchors file (defaults: YOLOv3 or tiny anchors).
    #[arg(long)]
    pub anchors: Option<PathBuf>,
    /// Initial weights: darknet `.weights` or a safetensors checkpoint (partial load, reported).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long)]
    pub device: Option<String>,
    /// Tiny YOLOv3.
    #[arg(long)]
    pub tiny: bool,
    /// Input size: `N` or `HxW` (multiples of 32).
    #[arg(long)]
    pub input: Option<String>,
    /// Skip a phase (scratch, bottleneck, frozen, unfreeze; repeatable).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Stop after `PHASE:EPOCH` (0-based Keras epoch) as if killed; `--resume` continues.
    #[arg(long, value_name = "PHASE:EPOCH")]
    pub stop_after: Option<String>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Also compute validation mAP@0.5 after every N-th epoch of each phase (0: only at the end of
    /// each phase).
    #[arg(long, value_name = "N")]
    pub map_every: Option<usize>,
    /// What the best checkpoint monitors: val_loss (lower is better, keras-yolo3) or map (higher is
    /// better; mAP is then computed on every epoch the checkpoint checks).
    #[arg(long, value_name = "MONITOR", value_parser = ["val_loss", "map"])]
    pub checkpoint_monitor: Option<String>,
    /// Drop the annotation lines with errors (as `yolo check-data` reports them) and list them in
    /// RUN_DIR/skipped_samples.txt, instead of stopping with the report.
    #[arg(long)]
    pub skip_bad: bool,
}

fn overrides(a: &Args) -> anyhow::Result<Vec<String>> {
    let q = |p: &PathBuf| format!("'{}'", p.display());
    let mut o = Vec::new();
    if let Some(p) = &a.annotations {
        o.push(format!("annotations={}", q(p)));
    }
    if let Some(p) = &a.classes {
        o.push(format!("classes={}", q(p)));
    }
    if let Some(p) = &a.anchors {
        o.push(format!("anchors={}", q(p)));
    }
    if let Some(p) = &a.weights {
        o.push(format!("weights={}", q(p)));
    }
    if let Some(p) = &a.run_dir {
        o.push(format!("run_dir={}", q(p)));
    }
    if let Some(d) = &a.device {
        o.push(format!("device='{d}'"));
    }
    if a.tiny {
        o.push("tiny=true".into());
    }
    if let Some(s) = &a.input {
        let (h, w) = match s.split_once(['x', 'X']) {
            Some((h, w)) => (h, w),
            None => (s.as_str(), s.as_str()),
        };
        let h: usize = h.trim().parse().with_context(|| format!("--input `{s}`"))?;
        let w: usize = w.trim().parse().with_context(|| format!("--input `{s}`"))?;
        o.push(format!("input=[{h}, {w}]"));
    }
    for p in &a.skip {
        o.push(format!("{p}.enabled=false"));
    }
    if let Some(s) = &a.stop_after {
        let (p, e) = s
            .split_once(':')
            .with_context(|| format!("--stop-after `{s}` is not PHASE:EPOCH"))?;
        let e: usize = e
            .parse()
            .with_context(|| format!("--stop-after `{s}`: epoch"))?;
        o.push(format!("stop_after={{ phase = '{p}', epoch = {e} }}"));
    }
    if a.quiet {
        o.push("progress=false".into());
    }
    if let Some(n) = a.map_every {
        o.push(format!("map_every={n}"));
    }
    if let Some(m) = &a.checkpoint_monitor {
        o.push(format!("checkpoint_monitor='{m}'"));
    }
    if a.skip_bad {
        o.push("skip_bad=true".into());
    }
    o.extend(a.set.iter().cloned());
    Ok(o)
}

/// Runs `yolo train`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let o = overrides(&a)?;
    let mut trainer = if let Some(dir) = &a.resume {
        if a.print_config {
            let s = yolo_train::RunState::load(dir)?;
            print!("{}", s.config.to_toml()?);
            return Ok(());
        }
        let t = Trainer::resume(dir, &o)?;
        let s = t.state();
        eprintln!(
            "resuming {}: phase {}, epoch {}, lr {:e}",
            dir.display(),
            s.phase,
            s.next_epoch + 1,
            s.lr
        );
        t
    } else {
        let cfg = TrainConfig::load(a.config.as_deref(), &o)?;
        if a.print_config {
            print!("{}", cfg.to_toml()?);
            return Ok(());
        }
        Trainer::new(cfg)?
    };
    let out = trainer.run()?;
    let dir = trainer.run_dir().display().to_string();
    match out {
        RunOutcome::Finished { weights } => {
            println!("training finished; run directory {dir}");
            if let Some(w) = weights {
                println!("final weights: {}", w.display());
            }
        }
        RunOutcome::Stopped { phase, epoch } => println!(
            "stopped after {phase} epoch {}; continue with `yolo train --resume {dir}`",
            epoch + 1
        ),
    }
    println!("metrics: {dir}/metrics.csv, loss plot: {dir}/loss.png");
    Ok(())
}
