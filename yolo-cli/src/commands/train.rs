//! `yolo train`: keras-yolo3's train_bottleneck.py schedule (bottleneck → frozen → unfreeze).

use std::path::PathBuf;

use anyhow::Context;
use yolo_train::{stderr_log, toml_quote, PhaseKind, RunOutcome, TrainConfig, Trainer};

use super::precision_check::refuse_16_bit_on_cpu;

/// Options of `yolo train`. Every setting of the TOML config can also be given as `--set key=value`
/// (dotted keys, e.g. `--set frozen.epochs=10`); the named flags below are shorthands.
///
/// A phase's `epochs` is its own number of epochs (`--epochs unfreeze=10` and
/// `--set unfreeze.epochs=10` both run 10 unfreeze epochs). Keras' absolute numbering stays
/// available: each phase starts at its `initial_epoch` (unfreeze: 50) and ends before its
/// `end_epoch` (`initial_epoch + epochs`, shown by `--print-config`, settable with
/// `--set unfreeze.end_epoch=100`); `--set` given both `PHASE.initial_epoch` and `PHASE.epochs`
/// reads that `epochs` as Keras' end epoch, as `model.fit(initial_epoch=, epochs=)` does.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Phases: scratch (off by default), bottleneck, frozen, unfreeze. \
A phase's `epochs` is its own number of epochs: `--epochs unfreeze=10` and \
`--set unfreeze.epochs=10` both run 10 unfreeze epochs. Keras' absolute numbering: a phase runs \
epochs initial_epoch..end_epoch (defaults: bottleneck 0..30, frozen 0..50, unfreeze 50..100); \
`--set unfreeze.end_epoch=100` sets the end epoch, and `--set` naming both PHASE.initial_epoch \
and PHASE.epochs reads that `epochs` as the end epoch, as model.fit(initial_epoch, epochs) does. \
`max_seconds = inf` means no time budget. Settings apply in this order: the config file (with \
--resume: the run's stored config), the named flags, --set, then --epochs/--batch-size/--lr."
)]
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
    /// moments, LR and callback counters); `--set` may change e.g. `device` or `progress`. A
    /// finished run whose last phase is made longer (`--epochs unfreeze=+5`) trains the added
    /// epochs; with nothing left to train it says the run is complete and exits 0.
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
    /// Darknet model description (`yolov3.cfg`, `yolov3-tiny.cfg`): the variant, the anchors
    /// (unless --anchors), each output layer's anchor mask and (unless --input-size) the input
    /// size come from it, as darknet trains; the class count comes from --classes.
    #[arg(long, value_name = "FILE.cfg")]
    pub cfg: Option<PathBuf>,
    /// Initial weights: darknet `.weights`, a safetensors checkpoint, or a run folder (its
    /// best.safetensors, else latest epoch, else last finished phase); partial load, reported.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Run directory to write (default runs/train). When it already holds a run, the new run
    /// goes to the next free RUN_DIR2, RUN_DIR3, ... unless `--overwrite` is given.
    #[arg(long = "out", value_name = "RUN_DIR", alias = "run-dir")]
    pub run_dir: Option<PathBuf>,
    /// Start over in a run directory that holds a run: delete its config, state, metrics,
    /// weights and checkpoints first (the bottleneck cache is kept and checked).
    #[arg(long)]
    pub overwrite: bool,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long)]
    pub device: Option<String>,
    /// Compute precision: f32 (default), or bf16 / f16 mixed precision for GPUs (f32 weights,
    /// BatchNorm statistics and Adam moments; 16-bit convolutions; f16 with a dynamic loss
    /// scale). With --device cpu: bf16 only on CPUs with AMX (f32 tensors, bf16 convolution
    /// products on the AMX tiles), f16 never (16-bit matmuls are slower than f32 there).
    #[arg(long, value_parser = ["f32", "bf16", "f16"])]
    pub precision: Option<String>,
    /// Tiny YOLOv3.
    #[arg(long)]
    pub tiny: bool,
    /// Network input size: `N` or `HxW` (multiples of 32).
    #[arg(
        long = "input-size",
        visible_alias = "imgsz",
        alias = "input",
        alias = "size"
    )]
    pub input: Option<String>,
    /// Epochs of a phase: `PHASE=N` runs N epochs of it (its own count, not Keras' end epoch),
    /// `PHASE=+N` adds N; with `--resume` a finished run continues for the added epochs
    /// (repeatable; PHASE: scratch, bottleneck, frozen, unfreeze).
    #[arg(long = "epochs", value_name = "PHASE=N")]
    pub epochs: Vec<String>,
    /// Images per step of a phase: `PHASE=N` (repeatable).
    #[arg(long = "batch-size", value_name = "PHASE=N")]
    pub batch_size: Vec<String>,
    /// Initial Adam learning rate of a phase: `PHASE=X`, X > 0 (repeatable).
    #[arg(long = "lr", value_name = "PHASE=X")]
    pub lr: Vec<String>,
    /// Skip a phase (scratch, bottleneck, frozen, unfreeze; repeatable).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Stop after epoch E of PHASE (`PHASE:E`, 1-based within the phase as the log numbers it)
    /// as if killed; `--resume` continues.
    #[arg(long, value_name = "PHASE:E")]
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

/// The named flags as `key=value` overrides, in front of the `--set` ones. Strings are written
/// as TOML literals ([`toml_quote`]), so a path keeps every character it has.
fn overrides(a: &Args) -> anyhow::Result<Vec<String>> {
    let mut o = Vec::new();
    // A run folder stands for the weights `detect --run` would use.
    let weights = match &a.weights {
        Some(w) if w.is_dir() => {
            let state = yolo_train::RunState::load(w)?;
            Some(yolo_train::run_weights(w, &state)?)
        }
        w => w.clone(),
    };
    let paths = [
        ("annotations", &a.annotations),
        ("classes", &a.classes),
        ("anchors", &a.anchors),
        ("weights", &weights),
        ("run_dir", &a.run_dir),
    ];
    for (key, p) in paths {
        if let Some(p) = p {
            let s = p.to_str().with_context(|| {
                format!(
                    "--{} {p:?}: the path is not valid UTF-8, which the run's config.toml cannot hold",
                    key.replace('_', "-")
                )
            })?;
            o.push(format!("{key}={}", toml_quote(s)));
        }
    }
    if let Some(d) = &a.device {
        o.push(format!("device={}", toml_quote(d)));
    }
    if let Some(p) = &a.precision {
        o.push(format!("precision={}", toml_quote(p)));
    }
    if a.overwrite {
        o.push("overwrite=true".into());
    }
    if let Some(p) = &a.cfg {
        let m = yolo_train::read_cfg_model(p)?;
        let tiny = m.variant == yolo_model::Variant::Tiny;
        if a.tiny && !tiny {
            anyhow::bail!(
                "--tiny was given, but {} describes YOLOv3 ({} [yolo] sections)",
                p.display(),
                m.masks.len()
            );
        }
        let s = p.to_str().with_context(|| {
            format!(
                "--cfg {p:?}: the path is not valid UTF-8, which the run's config.toml cannot hold"
            )
        })?;
        o.push(format!("darknet_cfg={}", toml_quote(s)));
        o.push(format!("variant={}", toml_quote(m.variant.key())));
        if a.input.is_none() {
            o.push(format!("input=[{}, {}]", m.input.h, m.input.w));
        }
    }
    if a.tiny {
        o.push("variant=\"tiny\"".into());
    }
    if let Some(s) = &a.input {
        let (h, w) = match s.split_once(['x', 'X']) {
            Some((h, w)) => (h, w),
            None => (s.as_str(), s.as_str()),
        };
        let h: usize = h
            .trim()
            .parse()
            .with_context(|| format!("--input-size `{s}`"))?;
        let w: usize = w
            .trim()
            .parse()
            .with_context(|| format!("--input-size `{s}`"))?;
        o.push(format!("input=[{h}, {w}]"));
    }
    for p in &a.skip {
        o.push(format!("{p}.enabled=false"));
    }
    if a.quiet {
        o.push("progress=false".into());
    }
    if let Some(n) = a.map_every {
        o.push(format!("map_every={n}"));
    }
    if let Some(m) = &a.checkpoint_monitor {
        o.push(format!("checkpoint_monitor={}", toml_quote(m)));
    }
    if a.skip_bad {
        o.push("skip_bad=true".into());
    }
    o.extend(a.set.iter().cloned());
    o.extend(schedule_overrides(a)?);
    Ok(o)
}

/// `--epochs`, `--batch-size` and `--lr` as `key=value` overrides (laid after `--set`). An
/// `--epochs` count is written as a TOML string (`"N"` or `"+N"`), which always counts the
/// phase's own epochs, even when `--set` also names the phase's `initial_epoch`.
fn schedule_overrides(a: &Args) -> anyhow::Result<Vec<String>> {
    let mut o = Vec::new();
    for s in &a.epochs {
        let (p, v) = super::phase_value("--epochs", s)?;
        let (plus, n) = match v.strip_prefix('+') {
            Some(n) => ("+", n),
            None => ("", v),
        };
        let n: u32 = n.parse().map_err(|_| {
            anyhow::anyhow!("--epochs `{s}`: `{v}` is not a number of epochs (N, or +N to add N)")
        })?;
        o.push(format!("{p}.epochs=\"{plus}{n}\""));
    }
    for s in &a.batch_size {
        let (p, v) = super::phase_value("--batch-size", s)?;
        match v.parse::<usize>() {
            Ok(n) if n >= 1 => o.push(format!("{p}.batch_size={n}")),
            _ => anyhow::bail!("--batch-size `{s}`: `{v}` is not a batch size (an integer >= 1)"),
        }
    }
    for s in &a.lr {
        let (p, v) = super::phase_value("--lr", s)?;
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => o.push(format!("{p}.lr={x:?}")),
            _ => anyhow::bail!("--lr `{s}`: `{v}` is not a learning rate (a number > 0)"),
        }
    }
    Ok(o)
}

/// The configuration a new run of `yolo train` with these options trains (`--config`, then the
/// flags and `--set`); `--resume` is not looked at. Shared with `yolo bench-train`, so its
/// trailing options mean exactly what they mean to `yolo train`.
pub(crate) fn config_from_args(a: &Args) -> anyhow::Result<TrainConfig> {
    let mut cfg = TrainConfig::load(a.config.as_deref(), &overrides(a)?)?;
    if let Some(stop) = stop_after(a, &cfg)? {
        cfg.stop_after = Some(stop);
    }
    Ok(cfg)
}

/// `--stop-after PHASE:E` as the Keras epoch `cfg` gives that phase's E-th epoch.
fn stop_after(a: &Args, cfg: &TrainConfig) -> anyhow::Result<Option<yolo_train::StopAfter>> {
    let Some(s) = &a.stop_after else {
        return Ok(None);
    };
    let (p, e) = s
        .split_once(':')
        .with_context(|| format!("--stop-after `{s}` is not PHASE:E"))?;
    let phase = PhaseKind::parse(p.trim())
        .with_context(|| format!("--stop-after `{s}`: unknown phase `{}`", p.trim()))?;
    let e: usize = match e.trim().parse() {
        Ok(e) if e >= 1 => e,
        _ => anyhow::bail!("--stop-after `{s}`: `{e}` is not an epoch (1, 2, ...)"),
    };
    Ok(Some(yolo_train::StopAfter {
        phase,
        epoch: cfg.phase(phase).initial_epoch + e - 1,
    }))
}

/// What `--resume` of a run with nothing left to train says.
fn complete_message(dir: &str, s: &yolo_train::RunState) -> String {
    let done: Vec<String> = PhaseKind::ALL
        .into_iter()
        .filter(|p| s.completed.contains(p))
        .map(|p| {
            let c = s.config.phase(p);
            format!(
                "{p} {} epochs (Keras epochs {}..{})",
                c.count(),
                c.initial_epoch,
                c.epochs
            )
        })
        .collect();
    let last = s.completed.last().copied().unwrap_or(PhaseKind::Unfreeze);
    format!(
        "run {dir} is complete ({}): nothing left to train. To train longer, make the schedule \
         longer, e.g. `yolo train --resume {dir} --epochs {last}=+10`",
        if done.is_empty() {
            "no phase has epochs".to_string()
        } else {
            done.join(", ")
        }
    )
}

/// Exit status of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const INTERRUPTED_EXIT: i32 = 130;

/// The first Ctrl-C / SIGTERM asks the trainer to stop at the next step (its last completed
/// epoch is already committed); a second one ends the process at once.
fn install_interrupt_handler() {
    let handler = || {
        if yolo_train::stop_requested() {
            eprintln!("\nsecond interrupt: quitting now");
            std::process::exit(INTERRUPTED_EXIT);
        }
        eprintln!("\ninterrupt: stopping after the current step (again to quit at once)");
        yolo_train::request_stop();
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("warning: no Ctrl-C handler ({e}); an interrupt ends the run without a message");
    }
}

/// What an interrupted run tells the user: what is saved and how to go on.
fn interrupted_message(
    dir: &str,
    during: &str,
    saved: Option<(PhaseKind, usize)>,
    cfg: &TrainConfig,
) -> String {
    match saved {
        Some((phase, epoch)) => format!(
            "interrupted during {during}: the run is saved up to {phase} epoch {} ({dir}/state.json); \
             continue with `yolo train --resume {dir}`",
            cfg.phase(phase).describe_epoch(epoch)
        ),
        None => format!(
            "interrupted during {during}: no epoch had finished, so nothing was saved in {dir}; \
             start again with the same command"
        ),
    }
}

/// Runs `yolo train`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut o = overrides(&a)?;
    let mut trainer = if let Some(dir) = &a.resume {
        // The stored configuration, then the flags: what Trainer::resume will run.
        let mut s = yolo_train::RunState::load(dir)?;
        let stored = s.config.clone();
        if !o.is_empty() {
            s.config = stored.with_overrides(&o)?;
        }
        if let Some(stop) = stop_after(&a, &s.config)? {
            o.push(format!(
                "stop_after={{ phase = {}, epoch = {} }}",
                toml_quote(stop.phase.name()),
                stop.epoch
            ));
            s.config.stop_after = Some(stop);
        }
        s.config.run_dir = dir.clone();
        if a.print_config {
            print!("{}", s.config.to_toml()?);
            return Ok(());
        }
        for p in s.unextendable(&stored) {
            eprintln!(
                "note: {p} is longer now but cannot be extended: later phases already ran on \
                 from its weights (start a new run to change it)"
            );
        }
        s.reopen_if_extended(&stored);
        if !s.has_work() {
            println!("{}", complete_message(&dir.display().to_string(), &s));
            return Ok(());
        }
        refuse_16_bit_on_cpu(s.config.precision, &s.config.device)?;
        let t = Trainer::resume(dir, &o, stderr_log())?;
        let s = t.state();
        eprintln!(
            "resuming {}: phase {}, epoch {}, lr {:e}",
            dir.display(),
            s.phase,
            s.config.phase(s.phase).describe_epoch(s.next_epoch),
            s.lr
        );
        t
    } else {
        let cfg = config_from_args(&a)?;
        if a.print_config {
            print!("{}", cfg.to_toml()?);
            return Ok(());
        }
        refuse_16_bit_on_cpu(cfg.precision, &cfg.device)?;
        Trainer::new(cfg, stderr_log())?
    };
    install_interrupt_handler();
    let out = trainer.run()?;
    let dir = trainer.run_dir().display().to_string();
    match out {
        RunOutcome::Finished { weights } => {
            println!("training finished; run directory {dir}");
            if let Some(w) = weights {
                println!("final weights: {}", w.display());
            }
            if let Some(b) = &trainer.state().best {
                println!(
                    "best model: {} ({})",
                    trainer.run_dir().join(yolo_train::BEST_WEIGHTS).display(),
                    b.describe()
                );
            }
        }
        RunOutcome::Stopped { phase, epoch } => println!(
            "stopped after {phase} epoch {}; continue with `yolo train --resume {dir}`",
            trainer.state().config.phase(phase).describe_epoch(epoch)
        ),
        RunOutcome::Interrupted { during, saved } => {
            eprintln!(
                "{}",
                interrupted_message(&dir, &during, saved, &trainer.state().config)
            );
            std::process::exit(INTERRUPTED_EXIT);
        }
    }
    println!("metrics: {dir}/metrics.csv, loss plot: {dir}/loss.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("train").chain(argv.iter().copied()))
            .expect("test flags parse")
            .args
    }

    /// The configuration the flags give, after a trip through config.toml and state.json as a
    /// run and its `--resume` make it.
    fn through_run_files(argv: &[&str]) -> (TrainConfig, TrainConfig) {
        let cfg = TrainConfig::load(None, &overrides(&args(argv)).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("config.toml");
        std::fs::write(&toml, cfg.to_toml().unwrap()).unwrap();
        let reread = TrainConfig::load(Some(&toml), &[]).unwrap();
        yolo_train::RunState::new(reread, PhaseKind::Frozen)
            .save(dir.path())
            .unwrap();
        let resumed = yolo_train::RunState::load(dir.path()).unwrap().config;
        (cfg, resumed)
    }

    #[test]
    fn a_darknet_cfg_sets_variant_and_input_and_survives_the_run_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_file = dir.path().join("my tiny.cfg");
        let text = yolo_model::darknet_cfg::darknet_cfg(&yolo_model::YoloConfig::new(
            yolo_model::Variant::Tiny,
            80,
        ));
        std::fs::write(&cfg_file, text.replace("width=416", "width=320")).unwrap();
        let f = cfg_file.to_str().unwrap();
        let (cfg, resumed) = through_run_files(&["--cfg", f]);
        assert_eq!(cfg.darknet_cfg.as_deref(), Some(cfg_file.as_path()));
        assert_eq!(cfg.variant, yolo_model::Variant::Tiny);
        assert_eq!(cfg.input, [416, 320]);
        assert_eq!(resumed, cfg);
        // --input-size wins over the cfg's [net] size.
        let (cfg, _) = through_run_files(&["--cfg", f, "--input-size", "160"]);
        assert_eq!(cfg.input, [160, 160]);

        let v3 = dir.path().join("yolov3.cfg");
        let text = yolo_model::darknet_cfg::darknet_cfg(&yolo_model::YoloConfig::new(
            yolo_model::Variant::YoloV3,
            80,
        ));
        std::fs::write(&v3, text).unwrap();
        let v3 = v3.to_str().unwrap();
        let (cfg, _) = through_run_files(&["--cfg", v3]);
        assert_eq!(cfg.variant, yolo_model::Variant::YoloV3);
        let e = overrides(&args(&["--cfg", v3, "--tiny"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--tiny was given, but")
                && e.contains("describes YOLOv3 (3 [yolo] sections)"),
            "{e}"
        );
        let e = overrides(&args(&["--cfg", "missing.cfg"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.cfg"), "{e}");
    }

    #[test]
    fn an_apostrophe_in_a_path_is_kept_exactly() {
        let (cfg, resumed) = through_run_files(&[
            "--out",
            "/tmp/x/bob's run",
            "--annotations",
            "data/it's \"quoted\" \\ back.txt",
        ]);
        assert_eq!(cfg.run_dir, PathBuf::from("/tmp/x/bob's run"));
        assert_eq!(
            cfg.annotations,
            PathBuf::from("data/it's \"quoted\" \\ back.txt")
        );
        assert_eq!(resumed, cfg);
    }

    #[test]
    fn a_run_folder_as_weights_stands_for_its_best_model() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        yolo_train::RunState::new(TrainConfig::default(), PhaseKind::Frozen)
            .save(&run)
            .unwrap();
        let weights = |a: &[&str]| {
            TrainConfig::load(None, &overrides(&args(a)).unwrap())
                .unwrap()
                .weights
        };
        let run_s = run.to_str().unwrap();
        // No weights in the run yet: a clear error.
        let e = overrides(&args(&["--weights", run_s]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the run has no weights yet"), "{e}");
        std::fs::write(run.join("trained_weights_stage_1.safetensors"), b"").unwrap();
        let mut state = yolo_train::RunState::load(&run).unwrap();
        state.completed = vec![PhaseKind::Frozen];
        state.save(&run).unwrap();
        assert_eq!(
            weights(&["--weights", run_s]),
            Some(run.join("trained_weights_stage_1.safetensors"))
        );
        std::fs::write(run.join("best.safetensors"), b"").unwrap();
        assert_eq!(
            weights(&["--weights", run_s]),
            Some(run.join("best.safetensors"))
        );
    }

    #[test]
    fn overwrite_flag_and_quoted_device_reach_the_config() {
        let cfg = TrainConfig::load(
            None,
            &overrides(&args(&["--overwrite", "--device", "cpu"])).unwrap(),
        )
        .unwrap();
        assert!(cfg.overwrite);
        assert_eq!(cfg.device, "cpu");
        let plain = TrainConfig::load(None, &overrides(&args(&[])).unwrap()).unwrap();
        assert!(!plain.overwrite);
    }

    #[test]
    fn precision_flag_reaches_the_config_and_16_bit_is_refused_where_the_cpu_lacks_it() {
        let cfg =
            TrainConfig::load(None, &overrides(&args(&["--precision", "bf16"])).unwrap()).unwrap();
        assert_eq!(cfg.precision, yolo_train::Precision::Bf16);
        let plain = TrainConfig::load(None, &overrides(&args(&[])).unwrap()).unwrap();
        assert_eq!(plain.precision, yolo_train::Precision::F32);
        // Refused before any data is read (there is no train.txt here), except bf16 on a CPU
        // with AMX, which runs and then fails on the missing data.
        for p in ["bf16", "f16"] {
            let e = run(args(&["--precision", p, "--device", "cpu"]))
                .unwrap_err()
                .to_string();
            let refused =
                e.contains(&format!("--precision {p} on --device cpu")) && e.contains("slower");
            let runs = p == "bf16" && yolo_train::Precision::Bf16.runs_on_cpu();
            assert_eq!(refused, !runs, "{e}");
        }
        // The same through --set, and for the default device (the CPU).
        let e = run(args(&["--set", "precision=\"f16\""]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--precision f16 on --device cpu"), "{e}");
    }

    #[test]
    fn stop_after_counts_epochs_within_the_phase() {
        let cfg = TrainConfig::default();
        let stop = |v: &str| stop_after(&args(&["--stop-after", v]), &cfg);
        let s = stop("unfreeze:1").unwrap().unwrap();
        // The default unfreeze phase runs Keras epochs 50..100: its first is 50.
        assert_eq!((s.phase, s.epoch), (PhaseKind::Unfreeze, 50));
        assert_eq!(stop("frozen:3").unwrap().unwrap().epoch, 2);
        let e = |v: &str| stop(v).unwrap_err().to_string();
        assert_eq!(
            e("frozen:0"),
            "--stop-after `frozen:0`: `0` is not an epoch (1, 2, ...)"
        );
        assert_eq!(
            e("froze:1"),
            "--stop-after `froze:1`: unknown phase `froze`"
        );
        assert_eq!(e("frozen"), "--stop-after `frozen` is not PHASE:E");
    }

    #[test]
    fn interrupted_message_says_what_is_saved_and_how_to_resume() {
        assert_eq!(
            interrupted_message(
                "runs/a b",
                "frozen epoch 4/50",
                Some((PhaseKind::Frozen, 2)),
                &TrainConfig::default()
            ),
            "interrupted during frozen epoch 4/50: the run is saved up to frozen epoch 3/50 \
             (runs/a b/state.json); continue with `yolo train --resume runs/a b`"
        );
        assert_eq!(
            interrupted_message(
                "r",
                "bottleneck epoch 1/30",
                None,
                &TrainConfig::default()
            ),
            "interrupted during bottleneck epoch 1/30: no epoch had finished, so nothing was saved \
             in r; start again with the same command"
        );
    }

    #[test]
    fn schedule_flags_become_overrides_after_set_and_count_per_phase() {
        let a = args(&[
            "--set",
            "unfreeze.initial_epoch=2",
            "--set",
            "unfreeze.epochs=4",
            "--epochs",
            "frozen=3",
            "--epochs",
            "unfreeze=+5",
            "--batch-size",
            "unfreeze=2",
            "--lr",
            "bottleneck=3e-5",
            "--lr",
            "frozen=0.01",
        ]);
        let o = overrides(&a).unwrap();
        assert_eq!(
            o,
            [
                "unfreeze.initial_epoch=2",
                "unfreeze.epochs=4",
                "frozen.epochs=\"3\"",
                "unfreeze.epochs=\"+5\"",
                "unfreeze.batch_size=2",
                "bottleneck.lr=3e-5",
                "frozen.lr=0.01",
            ]
        );
        let c = TrainConfig::load(None, &o).unwrap();
        // --set's pair is Keras' (2..4, 2 epochs); --epochs adds 5 of the phase's own.
        assert_eq!(
            (
                c.unfreeze.initial_epoch,
                c.unfreeze.epochs,
                c.unfreeze.count()
            ),
            (2, 9, 7)
        );
        assert_eq!((c.frozen.initial_epoch, c.frozen.epochs), (0, 3));
        assert_eq!(
            (c.unfreeze.batch_size, c.bottleneck.lr, c.frozen.lr),
            (2, 3e-5, 0.01)
        );
        // The default unfreeze (Keras 50..100) given 10 epochs runs 50..60.
        let c = TrainConfig::load(
            None,
            &overrides(&args(&["--epochs", "unfreeze=10"])).unwrap(),
        )
        .unwrap();
        assert_eq!((c.unfreeze.initial_epoch, c.unfreeze.epochs), (50, 60));
    }

    #[test]
    fn bad_schedule_flags_are_errors_naming_flag_and_value() {
        let e = |argv: &[&str]| overrides(&args(argv)).unwrap_err().to_string();
        assert_eq!(
            e(&["--epochs", "warmup=3"]),
            "--epochs `warmup=3`: unknown phase `warmup` (phases: scratch, bottleneck, frozen, unfreeze)"
        );
        assert_eq!(
            e(&["--epochs", "frozen=3.5"]),
            "--epochs `frozen=3.5`: `3.5` is not a number of epochs (N, or +N to add N)"
        );
        assert_eq!(
            e(&["--epochs", "frozen=+"]),
            "--epochs `frozen=+`: `+` is not a number of epochs (N, or +N to add N)"
        );
        assert_eq!(e(&["--epochs", "3"]), "--epochs `3` is not PHASE=VALUE");
        assert_eq!(
            e(&["--batch-size", "frozen=-4"]),
            "--batch-size `frozen=-4`: `-4` is not a batch size (an integer >= 1)"
        );
        assert_eq!(
            e(&["--lr", "unfreeze=0"]),
            "--lr `unfreeze=0`: `0` is not a learning rate (a number > 0)"
        );
        assert_eq!(
            e(&["--lr", "unfreeze=nan"]),
            "--lr `unfreeze=nan`: `nan` is not a learning rate (a number > 0)"
        );
        assert_eq!(
            e(&["--lr", "scratch=inf"]),
            "--lr `scratch=inf`: `inf` is not a learning rate (a number > 0)"
        );
    }

    #[test]
    fn a_complete_run_says_so_and_how_to_extend_it() {
        let cfg = TrainConfig::load(None, &["unfreeze.epochs=\"2\"".into()]).unwrap();
        let mut s = yolo_train::RunState::new(cfg, PhaseKind::Bottleneck);
        s.completed = vec![
            PhaseKind::Bottleneck,
            PhaseKind::Frozen,
            PhaseKind::Unfreeze,
        ];
        assert_eq!(
            complete_message("runs/a", &s),
            "run runs/a is complete (bottleneck 30 epochs (Keras epochs 0..30), frozen 50 epochs \
             (Keras epochs 0..50), unfreeze 2 epochs (Keras epochs 50..52)): nothing left to \
             train. To train longer, make the schedule longer, e.g. \
             `yolo train --resume runs/a --epochs unfreeze=+10`"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any path string (quotes, backslashes, spaces, control and non-ASCII characters)
        /// survives the flags, config.toml and the resumed state unchanged.
        #[test]
        fn any_path_round_trips_through_the_run_configuration(
            run in "[^\u{0}]{1,40}",
            ann in "[^\u{0}]{1,40}",
        ) {
            // clap takes a leading '-' for a flag, as a shell user would need `--out=-x`.
            let run_flag = format!("--out={run}");
            let ann_flag = format!("--annotations={ann}");
            let (cfg, resumed) = through_run_files(&[&run_flag, &ann_flag]);
            prop_assert_eq!(&cfg.run_dir, &PathBuf::from(&run));
            prop_assert_eq!(&cfg.annotations, &PathBuf::from(&ann));
            prop_assert_eq!(resumed, cfg);
        }
    }
}
