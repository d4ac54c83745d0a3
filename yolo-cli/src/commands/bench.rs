//! `yolo bench`: quick training-step figures next to the machine's GEMM rate and keras-yolo3's
//! TensorFlow figures.

use anyhow::Context;
use yolo_train::{default_cases, gemm_reference_gflops, run_case};

/// Options of `yolo bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Square input size (the TensorFlow reference figures are for 416).
    #[arg(
        long,
        default_value_t = 416,
        visible_alias = "imgsz",
        alias = "size",
        alias = "input"
    )]
    input_size: usize,
    /// Timed steps per case (the median is reported).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Untimed warm-up steps per case.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Cases to run, comma-separated: last, bottleneck, tiny, v3, v3-frozen.
    #[arg(long, default_value = "last,bottleneck,tiny,v3,v3-frozen")]
    cases: String,
    /// Size of the square GEMM used as the reference rate.
    #[arg(long, default_value_t = 4096)]
    gemm_n: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Where the steps run: cpu, cuda, cuda:N or metal (the GEMM reference always runs on the
    /// CPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per step for every selected case, instead of each case's keras-yolo3 batch (the
    /// TensorFlow ratio is then left out, its figures being for those batches).
    #[arg(long)]
    batch: Option<usize>,
    /// Skip the CPU GEMM reference (its ratio column is then left out).
    #[arg(long)]
    no_gemm: bool,
    /// Compute precision of the steps: f32, or bf16 / f16 mixed precision (f16 with the
    /// training loop's dynamic loss scale). With --device cpu: bf16 only on CPUs with AMX (f32
    /// tensors, bf16 convolution products on the AMX tiles), f16 never (candle widens 16-bit
    /// matmuls to f32 there, slower than f32).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    precision: String,
}

/// Runs the GEMM reference, then each selected case, printing one row per case.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut all = default_cases(args.input_size);
    if let Some(b) = args.batch {
        anyhow::ensure!(b > 0, "--batch must be at least 1");
        for c in &mut all {
            c.batch = b;
            c.tf_seconds = None;
        }
    }
    let precision: yolo_train::Precision = args.precision.parse()?;
    super::precision_check::refuse_16_bit_on_cpu(precision, &args.device)?;
    let device = yolo_model::parse_device(&args.device)?;
    let wanted: Vec<&str> = args.cases.split(',').map(str::trim).collect();
    if let Some(bad) = wanted.iter().find(|w| !all.iter().any(|c| &c.name == *w)) {
        anyhow::bail!("unknown bench case `{bad}` (known: last, bottleneck, tiny, v3, v3-frozen)");
    }
    let gemm = if args.no_gemm {
        None
    } else {
        let g = gemm_reference_gflops(args.gemm_n, 5)?;
        println!(
            "GEMM reference ({n}x{n} f32, candle/gemm, {t} threads): {g:.1} GFLOP/s",
            n = args.gemm_n,
            t = cpu_threads()
        );
        Some(g)
    };
    println!("device: {}, precision: {precision}", args.device);
    println!(
        "{:<11} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "case", "batch", "s/step", "img/s", "GFLOP/s", "/GEMM", "/TF", "RSS GB"
    );
    let mut results = Vec::new();
    for case in all.iter().filter(|c| wanted.contains(&c.name.as_str())) {
        let r = run_case(case, args.steps, args.warmup, gemm, &device, precision)?;
        let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |x| format!("{x:.p$}"));
        println!(
            "{:<11} {:>5} {:>10.3} {:>9.2} {:>9.1} {:>9} {:>9} {:>8}",
            case.name,
            case.batch,
            r.seconds,
            r.images_per_s,
            r.gflops,
            opt(r.gemm_ratio, 2),
            opt(r.tf_ratio, 2),
            opt(r.peak_rss_gb, 2)
        );
        let steps: Vec<String> = r.step_seconds.iter().map(|t| format!("{t:.3}")).collect();
        let loss = opt(r.first_loss, 4);
        let skipped = if r.skipped_steps > 0 {
            format!(
                "; {} step(s) skipped by the f16 loss scale",
                r.skipped_steps
            )
        } else {
            String::new()
        };
        println!(
            "{:<11} steps (s): {}; first loss {loss}{skipped}",
            "",
            steps.join(" ")
        );
        results.push(r);
    }
    println!(
        "(bottleneck: seconds per image; /TF: our time over keras-yolo3 on TensorFlow 2.21 from a \
         stored run on a 2-core EPYC, 2026-11-28: a hint only, side_by_side.sh compares in one run)"
    );
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "gemm_gflops": gemm,
            "results": results,
        }))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
