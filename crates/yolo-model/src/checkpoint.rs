//! Safetensors checkpoints of every variable (BatchNorm moving statistics included) under the
//! names documented in [`crate::architecture`], and a partial loader that skips and reports shape
//! mismatches like Keras' `load_weights(by_name=True, skip_mismatch=True)`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarMap;

use crate::error::ModelError;

/// What a load did, variable by variable (all lists sorted by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables whose values were replaced.
    pub loaded: Vec<String>,
    /// Variables present in the file with another shape: `(name, model shape, file shape)`; left
    /// at their current values.
    pub skipped_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Model variables the file does not cover (left at their current values).
    pub missing: Vec<String>,
    /// File tensors the model has no variable for (ignored).
    pub unexpected: Vec<String>,
}

impl LoadReport {
    /// True when every model variable was loaded and nothing was skipped or left over.
    pub fn is_complete(&self) -> bool {
        self.skipped_shape.is_empty() && self.missing.is_empty() && self.unexpected.is_empty()
    }

    pub(crate) fn sort(&mut self) {
        self.loaded.sort();
        self.skipped_shape.sort();
        self.missing.sort();
        self.unexpected.sort();
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} variables, skipped {} (shape mismatch), {} missing, {} unexpected",
            self.loaded.len(),
            self.skipped_shape.len(),
            self.missing.len(),
            self.unexpected.len()
        )?;
        for (name, model, file) in &self.skipped_shape {
            write!(f, "\n  skipped {name}: model {model:?}, file {file:?}")?;
        }
        const SHOW: usize = 8;
        for (label, list) in [("missing", &self.missing), ("unexpected", &self.unexpected)] {
            for name in list.iter().take(SHOW) {
                write!(f, "\n  {label} {name}")?;
            }
            if list.len() > SHOW {
                write!(f, "\n  ... and {} more {label}", list.len() - SHOW)?;
            }
        }
        Ok(())
    }
}

/// Writes `path` atomically through `write` (which fills a temporary file in the same folder), fsync,
/// rename over `path`, then fsync of the folder (best effort), so a crash never leaves a
/// half-written file under `path`.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| ModelError::format(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        write(&tmp)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| ModelError::io(&tmp, e))?;
        f.sync_all().map_err(|e| ModelError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes raw bytes to `path` (used by `write_atomic` callers).
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut f = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    f.write_all(bytes).map_err(|e| ModelError::io(path, e))
}

/// Saves every variable of `varmap` (BatchNorm moving statistics included) to a safetensors file,
/// atomically (temporary file + fsync + rename).
pub fn save_checkpoint(varmap: &VarMap, path: &Path) -> Result<(), ModelError> {
    let tensors: HashMap<String, Tensor> = {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    write_atomic(path, |tmp| {
        candle_core::safetensors::save(&tensors, tmp)
            .map_err(|e| ModelError::format(tmp, format!("writing safetensors: {e}")))
    })
}

/// Loads a safetensors checkpoint into `varmap` by name. Tensors whose shape differs from the
/// variable's are skipped and reported (so an 80-class checkpoint initialises a 1-class model
/// everywhere but the output convs); names on one side only are reported as missing/unexpected.
/// Values are converted to each variable's dtype and copied in place, so models built on the map
/// see them.
pub fn load_checkpoint_partial(varmap: &VarMap, path: &Path) -> Result<LoadReport, ModelError> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let device = match data.values().next() {
        Some(v) => v.device().clone(),
        None => candle_core::Device::Cpu,
    };
    if !path.exists() {
        return Err(ModelError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint not found"),
        ));
    }
    let file = candle_core::safetensors::load(path, &device)
        .map_err(|e| ModelError::format(path, format!("not a readable safetensors file: {e}")))?;
    let mut report = LoadReport::default();
    for (name, var) in data.iter() {
        match file.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => {
                report
                    .skipped_shape
                    .push((name.clone(), var.dims().to_vec(), t.dims().to_vec()))
            }
            Some(t) => {
                let t = t.to_dtype(var.dtype())?;
                var.set(&t)?;
                report.loaded.push(name.clone());
            }
        }
    }
    report.unexpected = file
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    report.sort();
    Ok(report)
}
