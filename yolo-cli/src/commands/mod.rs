//! Subcommands: one file each; this module only declares and dispatches them.
//!
//! To add a command: a file `name.rs` with `#[derive(clap::Args)] pub struct Args` and
//! `pub fn run(args: Args) -> anyhow::Result<()>`, then one line in each of the three lists below.

use clap::{Parser, Subcommand};

// -- list 1: modules
mod anchors;
mod bench;
mod bench_train;
mod check_data;
mod coco2txt;
mod convert;
mod dataset_out;
mod demo;
mod detect;
mod eval;
mod info;
mod model_args;
mod precision_check;
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
    /// Train the same configuration once per seed; mean ± SD of validation mAP and CPU time.
    BenchTrain(bench_train::Args),
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
        Command::BenchTrain(a) => bench_train::run(a),
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

/// Splits a `PHASE=VALUE` option value (`--epochs frozen=10`), checking the phase name; `flag`
/// names the option in errors.
pub(crate) fn phase_value<'a>(
    flag: &str,
    s: &'a str,
) -> anyhow::Result<(yolo_train::PhaseKind, &'a str)> {
    use anyhow::Context;
    let (p, v) = s
        .split_once('=')
        .with_context(|| format!("{flag} `{s}` is not PHASE=VALUE"))?;
    let names: Vec<&str> = yolo_train::PhaseKind::ALL
        .iter()
        .map(|p| p.name())
        .collect();
    let phase = yolo_train::PhaseKind::parse(p.trim()).with_context(|| {
        format!(
            "{flag} `{s}`: unknown phase `{}` (phases: {})",
            p.trim(),
            names.join(", ")
        )
    })?;
    Ok((phase, v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The rendered `--help` of `yolo <path...>`.
    fn help(path: &[&str]) -> String {
        let mut cmd = Cli::command();
        for p in path {
            cmd = cmd
                .find_subcommand(p)
                .unwrap_or_else(|| panic!("no subcommand {p}"))
                .clone();
        }
        cmd.render_long_help().to_string()
    }

    #[test]
    fn top_level_help_lists_every_command() {
        let top = help(&[]);
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(names.len(), 13, "{names:?}");
        for n in &names {
            assert!(
                top.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{n} "))),
                "{n} missing from\n{top}"
            );
        }
        // The description does not pretend to list the commands.
        assert!(!top.contains("train, demo, detect"), "{top}");
    }

    #[test]
    fn one_spelling_per_concept_old_ones_parse_hidden() {
        // The network input is --input-size everywhere it is an option.
        for cmd in [
            "train", "demo", "detect", "eval", "info", "bench", "anchors",
        ] {
            let h = help(&[cmd]);
            assert!(h.contains("--input-size"), "{cmd}:\n{h}");
            assert!(
                !h.contains("--input ") && !h.contains("--size "),
                "{cmd}:\n{h}"
            );
        }
        // Output folders are --out; the old train spelling still parses.
        assert!(help(&["train"]).contains("--out <RUN_DIR>"));
        assert!(!help(&["train"]).contains("--run-dir"));
        assert!(!help(&["check-data"]).contains("--images-root"));
        assert!(!help(&["demo"]).contains("--frozen-epochs"));
        let old = Cli::try_parse_from([
            "yolo",
            "train",
            "--run-dir",
            "r",
            "--input",
            "320",
            "--print-config",
        ])
        .expect("old spellings parse");
        let Command::Train(t) = old.command else {
            panic!("not train")
        };
        assert_eq!(t.run_dir.as_deref(), Some(std::path::Path::new("r")));
        assert_eq!(t.input.as_deref(), Some("320"));
        for argv in [
            &["yolo", "bench", "--size", "64"][..],
            &["yolo", "demo", "--size", "64", "--frozen-epochs", "2"],
            &[
                "yolo",
                "detect",
                "--weights",
                "w.weights",
                "--input",
                "320",
                "--out",
                "o",
                "x.jpg",
            ],
            &[
                "yolo",
                "check-data",
                "a.txt",
                "--classes",
                "1",
                "--images-root",
                "d",
            ],
        ] {
            Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
    }
}
