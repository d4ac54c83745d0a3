//! The CLI's guard on mixed precision: `--precision bf16|f16` is for GPUs. On the CPU candle has
//! no bf16/f16 matrix-multiply kernel and widens every 16-bit matmul to f32 and back, so a 16-bit
//! run would train slower than f32 for nothing; `yolo train` and `yolo bench` refuse it there
//! instead of silently running slow. The library (`TrainConfig::precision`, `run_case`) allows it,
//! which the precision tests use.

use yolo_train::Precision;

/// Whether a `--device` string names the CPU (`cpu`, with any surrounding spaces).
fn is_cpu(device: &str) -> bool {
    let d = device.trim();
    d.split(':').next().unwrap_or(d).eq_ignore_ascii_case("cpu")
}

/// An error when `precision` is 16-bit and `device` is the CPU; Ok otherwise.
pub(crate) fn refuse_16_bit_on_cpu(precision: Precision, device: &str) -> anyhow::Result<()> {
    if precision.is_mixed() && is_cpu(device) {
        anyhow::bail!(
            "--precision {precision} on --device {}: on the CPU candle has no {precision} \
             matrix-multiply kernel and widens every {precision} matmul to f32, so this would \
             run slower than f32, not faster. Use --precision f32 on the CPU (the default), or \
             {precision} with --device cuda (or metal)",
            device.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_is_refused_on_the_cpu_only() {
        for p in [Precision::Bf16, Precision::F16] {
            let e = refuse_16_bit_on_cpu(p, "cpu").unwrap_err().to_string();
            assert!(
                e.contains(&format!("--precision {p} on --device cpu")) && e.contains("slower"),
                "{e}"
            );
            assert!(refuse_16_bit_on_cpu(p, " CPU ").is_err());
            assert!(refuse_16_bit_on_cpu(p, "cuda").is_ok());
            assert!(refuse_16_bit_on_cpu(p, "cuda:1").is_ok());
            assert!(refuse_16_bit_on_cpu(p, "metal").is_ok());
        }
        assert!(refuse_16_bit_on_cpu(Precision::F32, "cpu").is_ok());
    }
}
