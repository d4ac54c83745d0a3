//! `yolo bench-train`: learning quality over seeds. The `yolo train` options after `--` are run
//! once per seed into `OUT/seed-K`, each run's best model scored on the fixed validation split as
//! `yolo eval --run` scores it; prints one line per seed and mean ± sample SD of VOC mAP@0.5,
//! COCO mAP, CPU and wall seconds, and writes `OUT/bench_train.json` and `OUT/bench_train.csv`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use yolo_train::TrainConfig;
use yolo_train::{describe_run, describe_summary};

use super::train;

/// Options of `yolo bench-train`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: yolo bench-train --seeds 5 --out runs/study -- --annotations a.txt \
--classes c.txt --tiny --epochs frozen=10. Only the config's `seed` changes from run to run \
(seeds FIRST..FIRST+N); `split_seed` stays as given, so every run is scored on the same \
validation images. CPU seconds are the process's user + system time (all threads, Unix)."
)]
pub struct Args {
    /// Number of seeds (training runs).
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub seeds: u64,
    /// The first seed; the runs use FIRST, FIRST+1, ...
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Folder of the study: one run folder `seed-K` per seed, bench_train.json and .csv.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// `yolo train` options, after `--` (e.g. `-- --annotations a.txt --classes c.txt --tiny`).
    #[arg(last = true, value_name = "TRAIN_OPTIONS")]
    pub train_args: Vec<String>,
}

/// The trailing options parsed by `yolo train`'s parser.
#[derive(clap::Parser, Debug)]
#[command(name = "yolo train")]
struct TrainCli {
    #[command(flatten)]
    args: train::Args,
}

/// The base configuration the trailing `yolo train` options give; the options that make no sense
/// for a study of fresh runs are refused.
fn base_config(train_args: &[String]) -> anyhow::Result<TrainConfig> {
    let a = TrainCli::try_parse_from(
        std::iter::once("yolo train".to_string()).chain(train_args.iter().cloned()),
    )
    .map_err(|e| {
        let msg = e.to_string();
        let msg = msg.strip_prefix("error: ").unwrap_or(&msg).trim_end();
        anyhow::anyhow!("in the `yolo train` options after `--`: {msg}")
    })?
    .args;
    if a.resume.is_some() {
        bail!("bench-train starts a fresh run per seed: --resume is not allowed among the train options");
    }
    if a.print_config {
        bail!("--print-config is not allowed among bench-train's train options (use `yolo train --print-config ...`)");
    }
    if a.run_dir.is_some() {
        bail!("the runs go to bench-train's --out DIR (DIR/seed-K): drop --out from the train options");
    }
    let cfg = train::config_from_args(&a)?;
    super::precision_check::refuse_16_bit_on_cpu(cfg.precision, &cfg.device)?;
    Ok(cfg)
}

/// Runs `yolo bench-train`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let base = base_config(&a.train_args)?;
    let seeds: Vec<u64> = (0..a.seeds)
        .map(|k| a.first_seed.checked_add(k).context("seed overflows u64"))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "bench-train: {} run{} (seeds {}..={}) into {}; validation split seed {}",
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" },
        seeds[0],
        seeds[seeds.len() - 1],
        a.out.display(),
        base.split_seed
    );
    let runs = yolo_train::run_seed_study(
        &base,
        &seeds,
        &a.out,
        |m| eprintln!("{m}"),
        |r| println!("{}", describe_run(r)),
    )?;
    for line in describe_summary(&yolo_train::summarize(&runs)) {
        println!("{line}");
    }
    let (json, csv) = yolo_train::write_study(&a.out, &runs)?;
    println!("wrote {} and {}", json.display(), csv.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn train_options_parse_as_yolo_train_parses_them() {
        let c = base_config(&argv(&[
            "--tiny",
            "--input-size",
            "64",
            "--epochs",
            "frozen=2",
            "--set",
            "split_seed=7",
        ]))
        .unwrap();
        assert_eq!(c.variant, yolo_model::Variant::Tiny);
        assert_eq!(c.input, [64, 64]);
        assert_eq!((c.frozen.initial_epoch, c.frozen.epochs), (0, 2));
        assert_eq!(c.split_seed, 7);
    }

    #[test]
    fn resume_print_config_and_out_are_refused() {
        let e = |v: &[&str]| base_config(&argv(v)).unwrap_err().to_string();
        assert!(e(&["--resume", "r"]).contains("--resume is not allowed"));
        assert!(e(&["--print-config"]).contains("--print-config is not allowed"));
        assert!(e(&["--out", "r"]).contains("drop --out"));
        assert!(e(&["--no-such-flag"]).contains("after `--`"));
    }

    #[test]
    fn trailing_options_come_after_the_double_dash() {
        let cli = super::super::Cli::try_parse_from([
            "yolo",
            "bench-train",
            "--seeds",
            "2",
            "--out",
            "d",
            "--",
            "--tiny",
            "--seed-like",
        ])
        .unwrap();
        let super::super::Command::BenchTrain(a) = cli.command else {
            panic!("not bench-train")
        };
        assert_eq!((a.seeds, a.first_seed), (2, 0));
        assert_eq!(a.train_args, ["--tiny", "--seed-like"]);
        assert!(super::super::Cli::try_parse_from([
            "yolo",
            "bench-train",
            "--seeds",
            "0",
            "--out",
            "d"
        ])
        .is_err());
    }
}
