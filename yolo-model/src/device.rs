//! `--device cpu|cuda[:N]|metal`, with a clear error when the backend is not compiled in; used by
//! training and by detection alike.

use candle_core::Device;

use crate::error::ModelError;

/// Parses a device name and opens the device.
pub fn parse_device(name: &str) -> Result<Device, ModelError> {
    let name = name.trim();
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => {
            let n: usize = i.parse().map_err(|_| {
                ModelError::Device(format!("`{name}`: `{i}` is not a device index"))
            })?;
            (k, n)
        }
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !candle_core::utils::cuda_is_available() {
                return Err(ModelError::Device(format!(
                    "`{name}`: this binary was built without CUDA support (rebuild with `--features cuda`)"
                )));
            }
            Device::new_cuda(index).map_err(|e| ModelError::Device(format!("`{name}`: {e}")))
        }
        "metal" => {
            if !candle_core::utils::metal_is_available() {
                return Err(ModelError::Device(format!(
                    "`{name}`: this binary was built without Metal support (rebuild with `--features metal`)"
                )));
            }
            Device::new_metal(index).map_err(|e| ModelError::Device(format!("`{name}`: {e}")))
        }
        _ => Err(ModelError::Device(format!(
            "`{name}` is not one of cpu, cuda, cuda:N, metal"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_unknown_or_missing_backends_are_clear_errors() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("not one of"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a device index"), "{e}");
        if !candle_core::utils::cuda_is_available() {
            let e = parse_device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("without CUDA"), "{e}");
        }
        if !candle_core::utils::metal_is_available() {
            let e = parse_device("metal").unwrap_err().to_string();
            assert!(e.contains("without Metal"), "{e}");
        }
    }
}
