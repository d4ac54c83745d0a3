//! Safetensors checkpoints of every variable (BatchNorm moving statistics included) under the
//! names documented in [`crate::architecture`], and a partial loader that skips and reports shape
//! mismatches like Keras' `load_weights(by_name=True, skip_mismatch=True)`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::Tensor;
use candle_nn::VarMap;
use safetensors::tensor::SafeTensorError;
use safetensors::{Dtype, SafeTensors};

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
        // The permissions a plain new file gets (0666 less the umask). safetensors writes
        // through a private temporary file (0600) renamed over `tmp`, so they are put back.
        let perm = std::fs::File::create(&tmp)
            .and_then(|f| f.metadata())
            .map_err(|e| ModelError::io(&tmp, e))?
            .permissions();
        write(&tmp)?;
        std::fs::set_permissions(&tmp, perm).map_err(|e| ModelError::io(&tmp, e))?;
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

/// [`save_checkpoint`] of only the variables named in `names` (names not in `varmap` are
/// skipped): a checkpoint of the layers a phase trains, for phases whose other layers are frozen
/// at known values.
pub fn save_checkpoint_subset(
    varmap: &VarMap,
    names: &[String],
    path: &Path,
) -> Result<(), ModelError> {
    let tensors: HashMap<String, Tensor> = {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .filter_map(|k| data.get(k).map(|v| (k.clone(), v.as_tensor().clone())))
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
/// A tensor named like a variable but stored with a non-float dtype (an integer or boolean array
/// is never a weight) is an error naming it. Values are converted to each variable's dtype and
/// copied in place, so models built on the map see them.
pub fn load_checkpoint_partial(varmap: &VarMap, path: &Path) -> Result<LoadReport, ModelError> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let device = match data.values().next() {
        Some(v) => v.device().clone(),
        None => candle_core::Device::Cpu,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint not found"),
            ))
        }
        Err(e) => return Err(ModelError::io(path, e)),
    };
    let file = SafeTensors::deserialize(&bytes).map_err(|e| {
        ModelError::format(
            path,
            format!("not a readable safetensors file: {}", explain(&e, &bytes)),
        )
    })?;
    let mut report = LoadReport::default();
    for (name, var) in data.iter() {
        let Ok(view) = file.tensor(name) else {
            report.missing.push(name.clone());
            continue;
        };
        if !FLOAT_DTYPES.contains(&view.dtype()) {
            return Err(ModelError::Dtype {
                path: path.to_path_buf(),
                tensor: name.clone(),
                found: view.dtype().to_string(),
                expected: "F32, F16, BF16 or F64",
            });
        }
        if view.shape() != var.dims() {
            report
                .skipped_shape
                .push((name.clone(), var.dims().to_vec(), view.shape().to_vec()));
            continue;
        }
        let t = view.load(&device)?.to_dtype(var.dtype())?;
        var.set(&t)?;
        report.loaded.push(name.clone());
    }
    report.unexpected = file
        .names()
        .into_iter()
        .filter(|k| !data.contains_key(*k))
        .map(str::to_string)
        .collect();
    report.sort();
    Ok(report)
}

/// The dtypes a weight may be stored in.
const FLOAT_DTYPES: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64];

/// A safetensors error, with the tensor and sizes spelled out where the crate's message has none.
fn explain(e: &SafeTensorError, bytes: &[u8]) -> String {
    let detail = match e {
        SafeTensorError::TensorInvalidInfo
        | SafeTensorError::ValidationOverflow
        | SafeTensorError::MisalignedSlice
        | SafeTensorError::MetadataIncompleteBuffer => header_detail(bytes),
        _ => None,
    };
    match detail {
        Some(d) => format!("{e} ({d})"),
        None => e.to_string(),
    }
}

/// Re-reads the header (already known to be valid JSON of tensor entries) to find the first
/// tensor whose byte range does not match its dtype and shape, or how far the data falls short of
/// (or runs past) the declared tensors. `None` when nothing more can be said.
fn header_detail(bytes: &[u8]) -> Option<String> {
    let len_bytes: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let n = usize::try_from(u64::from_le_bytes(len_bytes)).ok()?;
    let header = std::str::from_utf8(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header).ok()?;
    let mut end = 0usize;
    for (name, v) in entries.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let dtype: Dtype = serde_json::from_value(v.get("dtype")?.clone()).ok()?;
        let shape: Vec<usize> = serde_json::from_value(v.get("shape")?.clone()).ok()?;
        let (s, e): (usize, usize) = serde_json::from_value(v.get("data_offsets")?.clone()).ok()?;
        let need = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|c| c.checked_mul(dtype.bitsize()));
        let Some(bits) = need else {
            return Some(format!(
                "{name}: {dtype} {shape:?} has more elements than fit in memory"
            ));
        };
        if e < s || bits % 8 != 0 || e - s != bits / 8 {
            return Some(format!(
                "{name}: {dtype} {shape:?} needs {} bytes, its data_offsets {s}..{e} give {}",
                bits.div_ceil(8),
                e.saturating_sub(s)
            ));
        }
        end = end.max(e);
    }
    let data = bytes.len().saturating_sub(8 + n);
    (data != end).then(|| {
        format!("the tensors end at data byte {end}, but the file holds {data} bytes of data")
    })
}
