//! Learning quality over seeds: the same training configuration run once per seed, each run's
//! model scored on the (fixed) validation split the way `yolo eval --run` scores it, with the CPU
//! and wall time each run took. One run's mAP says little about a change to the trainer; the mean
//! and spread over a few seeds do.
//!
//! Only the config's `seed` (data order, augmentation, weight initialisation) changes from run to
//! run: `split_seed` is kept as given, so every run trains and is scored on the same images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use yolo_model::load_checkpoint_partial;

use crate::error::{Result, TrainError};
use crate::evaluate::{map_params, validation_report};
use crate::model_source::BEST_WEIGHTS;
use crate::{RunOutcome, TrainConfig, Trainer};

/// Name of the study's JSON report in its output folder.
pub const STUDY_JSON: &str = "bench_train.json";
/// Name of the study's CSV report (one line per seed) in its output folder.
pub const STUDY_CSV: &str = "bench_train.csv";

/// The outcome of one seed's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedRun {
    /// The config's `seed` of this run.
    pub seed: u64,
    /// The run directory (`OUT/seed-K`, or the next free one if that already held a run).
    pub run_dir: PathBuf,
    /// The weights scored: the run's `best.safetensors`, else its final weights.
    pub weights: PathBuf,
    /// VOC mAP@0.5 (all-point), `report.voc.map_all_point`.
    pub voc_map50: f64,
    /// COCO mAP@[.5:.95] (`COCOeval.stats[0]`; NaN where COCO reports -1: no ground truth).
    pub coco_map: f64,
    /// Process CPU time (user + system, every thread) spent on the training run and its scoring.
    /// NaN where the platform gives no process CPU time (not Unix).
    pub cpu_seconds: f64,
    /// Wall time of the training run and its scoring.
    pub wall_seconds: f64,
    /// The validation images, in split order: the same for every seed (the split is fixed).
    pub val_images: Vec<String>,
}

/// Mean and sample standard deviation of some values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanSd {
    /// How many values.
    pub n: usize,
    /// Their mean (NaN for no value).
    pub mean: f64,
    /// Their sample standard deviation (divisor n - 1); NaN for fewer than two values, since one
    /// run says nothing about the spread (JSON writes it as `null`).
    pub sd: f64,
}

/// [`MeanSd`] of `xs`: the mean, and the sample standard deviation (n - 1 divisor), NaN when
/// `xs` has fewer than two values. A NaN value makes both NaN.
pub fn mean_sd(xs: &[f64]) -> MeanSd {
    let n = xs.len();
    if n == 0 {
        return MeanSd {
            n,
            mean: f64::NAN,
            sd: f64::NAN,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let sd = if n < 2 {
        f64::NAN
    } else {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    MeanSd { n, mean, sd }
}

impl MeanSd {
    /// `mean ± sd` with `prec` decimals; `± n/a` when the spread is undefined.
    pub fn describe(&self, prec: usize) -> String {
        if self.sd.is_nan() {
            format!("{:.prec$} ± n/a", self.mean)
        } else {
            format!("{:.prec$} ± {:.prec$}", self.mean, self.sd)
        }
    }
}

/// Mean ± sample SD of each measure over the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StudySummary {
    /// VOC mAP@0.5.
    pub voc_map50: MeanSd,
    /// COCO mAP@[.5:.95].
    pub coco_map: MeanSd,
    /// CPU seconds per run.
    pub cpu_seconds: MeanSd,
    /// Wall seconds per run.
    pub wall_seconds: MeanSd,
}

/// The summary of `runs`.
pub fn summarize(runs: &[SeedRun]) -> StudySummary {
    let of = |f: fn(&SeedRun) -> f64| mean_sd(&runs.iter().map(f).collect::<Vec<_>>());
    StudySummary {
        voc_map50: of(|r| r.voc_map50),
        coco_map: of(|r| r.coco_map),
        cpu_seconds: of(|r| r.cpu_seconds),
        wall_seconds: of(|r| r.wall_seconds),
    }
}

/// Process CPU time so far (user + system, all threads), in seconds; NaN off Unix.
#[cfg(unix)]
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable `rusage` that outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Process CPU time so far; NaN: this platform's is not read.
#[cfg(not(unix))]
pub fn process_cpu_seconds() -> f64 {
    f64::NAN
}

/// One line of a seed's results, as the CLI prints it.
pub fn describe_run(r: &SeedRun) -> String {
    format!(
        "seed {}: VOC mAP@0.5 {:.4}, COCO mAP {:.4}, CPU {:.1} s, wall {:.1} s ({})",
        r.seed,
        r.voc_map50,
        r.coco_map,
        r.cpu_seconds,
        r.wall_seconds,
        r.weights.display()
    )
}

/// The summary's lines, as the CLI prints them.
pub fn describe_summary(s: &StudySummary) -> Vec<String> {
    vec![
        format!(
            "over {} seed{} (mean ± sample SD):",
            s.voc_map50.n,
            if s.voc_map50.n == 1 { "" } else { "s" }
        ),
        format!("  VOC mAP@0.5   {}", s.voc_map50.describe(4)),
        format!("  COCO mAP      {}", s.coco_map.describe(4)),
        format!("  CPU seconds   {}", s.cpu_seconds.describe(1)),
        format!("  wall seconds  {}", s.wall_seconds.describe(1)),
    ]
}

/// Trains `base` once per seed into `out/seed-K` (only `seed` and `run_dir` changed) and scores
/// each run's best model (else its final weights) on the validation split with `yolo eval`'s
/// settings (score threshold 0.001). `log` receives the trainers' messages; `on_seed` each
/// result as soon as it is known. A run that does not finish (stopped, interrupted) is an error.
pub fn run_seed_study(
    base: &TrainConfig,
    seeds: &[u64],
    out: &Path,
    log: impl Fn(&str) + Clone + 'static,
    mut on_seed: impl FnMut(&SeedRun),
) -> Result<Vec<SeedRun>> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let mut runs = Vec::with_capacity(seeds.len());
    for &seed in seeds {
        let mut cfg = base.clone();
        cfg.seed = seed;
        cfg.run_dir = out.join(format!("seed-{seed}"));
        let cpu0 = process_cpu_seconds();
        let t0 = Instant::now();
        let mut trainer = Trainer::new(cfg, log.clone())?;
        let final_weights = match trainer.run()? {
            RunOutcome::Finished { weights } => weights,
            other => {
                return Err(TrainError::Dataset(format!(
                    "seed {seed}: the run in {} did not finish: {other:?}",
                    trainer.run_dir().display()
                )))
            }
        };
        let best = trainer.run_dir().join(BEST_WEIGHTS);
        let weights = if best.exists() {
            let report = load_checkpoint_partial(trainer.varmap(), &best)?;
            if !report.is_complete() {
                return Err(TrainError::format(
                    &best,
                    format!("incomplete checkpoint: {report}"),
                ));
            }
            best
        } else {
            // The model holds the final weights already.
            final_weights.unwrap_or_else(|| trainer.run_dir().to_path_buf())
        };
        let data = trainer.data();
        let cfg = &trainer.state().config;
        let report = validation_report(
            trainer.model(),
            &data.val,
            &data.anchors,
            &data.classes,
            data.input,
            map_params(0.001),
            &cfg.annotations,
            trainer.device(),
        )?;
        let coco = report.coco.stats[0];
        let r = SeedRun {
            seed,
            run_dir: trainer.run_dir().to_path_buf(),
            weights,
            voc_map50: report.voc.map_all_point,
            coco_map: if coco < 0.0 { f64::NAN } else { coco },
            cpu_seconds: process_cpu_seconds() - cpu0,
            wall_seconds: t0.elapsed().as_secs_f64(),
            val_images: data
                .val
                .iter()
                .map(|a| a.path.display().to_string())
                .collect(),
        };
        on_seed(&r);
        runs.push(r);
    }
    Ok(runs)
}

/// Writes `out/bench_train.json` (`runs` and their summary) and `out/bench_train.csv` (one line
/// per seed); returns both paths.
pub fn write_study(out: &Path, runs: &[SeedRun]) -> Result<(PathBuf, PathBuf)> {
    let json = serde_json::json!({
        "runs": runs,
        "summary": summarize(runs),
    });
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| TrainError::Dataset(format!("cannot write {STUDY_JSON}: {e}")))?;
    let jp = out.join(STUDY_JSON);
    crate::atomic::atomic_write(&jp, text.as_bytes())?;
    let mut csv =
        String::from("seed,voc_map50,coco_map,cpu_seconds,wall_seconds,run_dir,weights\n");
    for r in runs {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            r.seed,
            r.voc_map50,
            r.coco_map,
            r.cpu_seconds,
            r.wall_seconds,
            csv_field(&r.run_dir.display().to_string()),
            csv_field(&r.weights.display().to_string()),
        ));
    }
    let cp = out.join(STUDY_CSV);
    crate::atomic::atomic_write(&cp, csv.as_bytes())?;
    Ok((jp, cp))
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_sd_is_the_mean_and_the_n_minus_1_standard_deviation() {
        let m = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m.n, 8);
        assert!((m.mean - 5.0).abs() < 1e-12);
        // Sum of squares 32, divided by 7.
        assert!((m.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        let two = mean_sd(&[0.25, 0.75]);
        assert_eq!(two.mean, 0.5);
        assert!((two.sd - 0.125f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn one_value_has_no_spread_and_none_has_no_mean() {
        let one = mean_sd(&[0.3]);
        assert_eq!((one.n, one.mean), (1, 0.3));
        assert!(one.sd.is_nan());
        assert_eq!(one.describe(2), "0.30 ± n/a");
        let none = mean_sd(&[]);
        assert_eq!(none.n, 0);
        assert!(none.mean.is_nan() && none.sd.is_nan());
        assert_eq!(mean_sd(&[1.0, 1.0, 1.0]).sd, 0.0);
        assert_eq!(mean_sd(&[1.0, 3.0]).describe(3), "2.000 ± 1.414");
    }

    #[test]
    fn csv_fields_with_commas_are_quoted() {
        assert_eq!(csv_field("runs/a"), "runs/a");
        assert_eq!(csv_field("a,b\"c"), "\"a,b\"\"c\"");
    }
}
