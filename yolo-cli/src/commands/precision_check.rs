//! The CLI's guard on mixed precision on the CPU. candle has no bf16/f16 matrix-multiply kernel
//! there and widens every 16-bit matmul to f32 and back, so 16-bit tensors would train slower
//! than f32 for nothing. bf16 runs on CPUs with AMX, as f32 tensors whose convolution products
//! take bf16 operands on the AMX tiles ([`Precision::runs_on_cpu`]); f16, and bf16 elsewhere, are
//! refused instead of silently running slow. The library (`TrainConfig::precision`, `run_case`)
//! allows every precision, which the precision tests use.

use yolo_train::Precision;

/// Whether a `--device` string names the CPU (`cpu`, with any surrounding spaces).
fn is_cpu(device: &str) -> bool {
    let d = device.trim();
    d.split(':').next().unwrap_or(d).eq_ignore_ascii_case("cpu")
}

/// An error when `precision` does not run on the CPU and `device` is the CPU; Ok otherwise.
pub(crate) fn refuse_16_bit_on_cpu(precision: Precision, device: &str) -> anyhow::Result<()> {
    check(precision, device, precision.runs_on_cpu())
}

/// [`refuse_16_bit_on_cpu`] with the CPU's answer given, so both answers can be tested anywhere.
fn check(precision: Precision, device: &str, runs_on_cpu: bool) -> anyhow::Result<()> {
    if !is_cpu(device) || runs_on_cpu {
        return Ok(());
    }
    let why = match precision {
        Precision::Bf16 => {
            "this CPU has no AMX-BF16 (Intel Sapphire Rapids or later), which bf16 on the CPU \
             uses; without it candle widens every bf16 matmul to f32"
        }
        _ => {
            "on the CPU candle has no f16 matrix-multiply kernel and widens every f16 matmul to f32"
        }
    };
    anyhow::bail!(
        "--precision {precision} on --device {}: {why}, so this would run slower than f32, not \
         faster. Use --precision f32 on this CPU (the default), or {precision} with --device cuda \
         (or metal)",
        device.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_is_refused_on_the_cpu_only_where_it_does_not_run() {
        for p in [Precision::Bf16, Precision::F16] {
            let e = check(p, "cpu", false).unwrap_err().to_string();
            assert!(
                e.contains(&format!("--precision {p} on --device cpu")) && e.contains("slower"),
                "{e}"
            );
            assert!(check(p, " CPU ", false).is_err());
            assert!(check(p, "cuda", false).is_ok());
            assert!(check(p, "cuda:1", false).is_ok());
            assert!(check(p, "metal", false).is_ok());
            assert!(check(p, "cpu", true).is_ok());
        }
        assert!(check(Precision::Bf16, "cpu", false)
            .unwrap_err()
            .to_string()
            .contains("AMX-BF16"));
        assert!(check(Precision::F32, "cpu", true).is_ok());
        // What this machine's CPU answers: f32 always runs, f16 never does.
        assert!(refuse_16_bit_on_cpu(Precision::F32, "cpu").is_ok());
        assert!(refuse_16_bit_on_cpu(Precision::F16, "cpu").is_err());
        assert_eq!(
            refuse_16_bit_on_cpu(Precision::Bf16, "cpu").is_ok(),
            Precision::Bf16.runs_on_cpu()
        );
    }
}
