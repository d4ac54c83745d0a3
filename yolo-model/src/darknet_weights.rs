//! Darknet `.weights` import and export.
//!
//! File layout: an int32 header `major, minor, revision`, then `seen` (images seen in training) as
//! an int64 when `major * 10 + minor >= 2` (and both are below 1000), else as an int32; then
//! float32 values, per convolution in cfg order ([`crate::conv_table`]):
//! with BatchNorm `beta, gamma, moving mean, moving variance` (each `filters` long), without
//! (the output convs) `bias`; then the kernel in `(filters, c_in, k, k)` order, which is candle's
//! OIHW layout (keras-yolo3's `convert.py` transposes it to Keras' `(k, k, c_in, filters)`).
//!
//! A file may also stop at a conv boundary before the end (e.g. `darknet53.conv.74`, which holds
//! exactly the 52 Darknet-53 convs): the covered convs are loaded and the rest reported as
//! missing.
//!
//! A full file trained with another class count (an 80-class `yolov3.weights` loaded into a
//! 1-class model, as keras-yolo3 users do with `convert.py` then
//! `load_weights(by_name=True, skip_mismatch=True)`) is recognised by its float count: everything
//! but the output convs is fixed by the network, and each output conv takes
//! `filters * (c_in + 1)` floats with `filters = A * (5 + C_file)`, so `C_file` is solved for
//! ([`infer_file_filters`]). The body is loaded and the output convs are skipped and reported in
//! [`LoadReport::skipped_shape`] with both shapes. A file whose count no class count explains, that
//! ends inside a conv, or is longer than the model, is an error that states the expected and found
//! float counts.

use std::path::Path;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::architecture::{conv_table, ConvSpec};
use crate::checkpoint::{write_atomic, write_bytes, LoadReport};
use crate::config::{Variant, YoloConfig};
use crate::error::ModelError;

/// The header of a darknet `.weights` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DarknetHeader {
    /// Format major version.
    pub major: i32,
    /// Format minor version.
    pub minor: i32,
    /// Format revision.
    pub revision: i32,
    /// Images seen during training.
    pub seen: u64,
}

impl DarknetHeader {
    /// Whether `seen` is stored as an int64 (`major * 10 + minor >= 2`, both below 1000).
    pub fn seen_is_i64(&self) -> bool {
        // In i64: `major * 10` overflows i32 for versions above 214748364 (found by proptest).
        self.major as i64 * 10 + self.minor as i64 >= 2 && self.major < 1000 && self.minor < 1000
    }

    /// Header size in bytes: 20 with an int64 `seen`, 16 otherwise.
    pub fn len_bytes(&self) -> usize {
        if self.seen_is_i64() {
            20
        } else {
            16
        }
    }

    /// Reads the header at the start of `bytes` (`path` names the file in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ModelError> {
        let int = |i: usize| -> Option<i32> {
            let b = bytes.get(4 * i..4 * i + 4)?;
            Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let too_short = || {
            ModelError::format(
                path,
                format!(
                    "{} bytes is too short for a darknet weights header",
                    bytes.len()
                ),
            )
        };
        let (major, minor, revision) = match (int(0), int(1), int(2)) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(too_short()),
        };
        if major < 0 || minor < 0 {
            return Err(ModelError::format(
                path,
                format!("bad darknet header: version {major}.{minor}.{revision}"),
            ));
        }
        let mut h = DarknetHeader {
            major,
            minor,
            revision,
            seen: 0,
        };
        h.seen = if h.seen_is_i64() {
            let b = bytes.get(12..20).ok_or_else(too_short)?;
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        } else {
            int(3).ok_or_else(too_short)? as u32 as u64
        };
        Ok(h)
    }

    /// The header bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(&self.major.to_le_bytes());
        v.extend_from_slice(&self.minor.to_le_bytes());
        v.extend_from_slice(&self.revision.to_le_bytes());
        if self.seen_is_i64() {
            v.extend_from_slice(&self.seen.to_le_bytes());
        } else {
            v.extend_from_slice(&(self.seen as u32).to_le_bytes());
        }
        v
    }
}

fn lookup<'a>(
    data: &'a std::collections::HashMap<String, Var>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<&'a Var, ModelError> {
    let var = data.get(name).ok_or_else(|| {
        ModelError::format(
            path,
            format!("the VarMap has no variable {name}: build the model on this VarMap first"),
        )
    })?;
    if var.dims() != shape {
        return Err(ModelError::format(
            path,
            format!(
                "variable {name} has shape {:?} but the darknet layout needs {shape:?}; \
                 was the model built with another configuration?",
                var.dims()
            ),
        ));
    }
    Ok(var)
}

/// The output-conv filter count (`A * (5 + C_file)`) of a full darknet file of `found` floats for
/// the network of `table` trained with another class count, or `None` when no class count explains
/// `found` (or it is the model's own).
///
/// Every conv with BatchNorm has a size independent of the class count; the output convs take
/// `filters * (c_in * k * k + 1)` floats each, so `found - fixed` must be a whole multiple of
/// `sum(c_in * k * k + 1)`, and the multiple must be `num_anchors * (5 + C)` with `C >= 1`.
pub fn infer_file_filters(table: &[ConvSpec], num_anchors: usize, found: usize) -> Option<usize> {
    let fixed: usize = table
        .iter()
        .filter(|c| c.batch_norm)
        .map(|c| c.darknet_floats())
        .sum();
    let per_filter: usize = table
        .iter()
        .filter(|c| !c.batch_norm)
        .map(|c| c.c_in * c.size * c.size + 1)
        .sum();
    let model_filters = table.iter().find(|c| !c.batch_norm)?.filters;
    let rest = found.checked_sub(fixed)?;
    if per_filter == 0 || num_anchors == 0 || !rest.is_multiple_of(per_filter) {
        return None;
    }
    let filters = rest / per_filter;
    let explained = filters.is_multiple_of(num_anchors) && filters / num_anchors > 5;
    (explained && filters != model_filters).then_some(filters)
}

/// Loads a darknet `.weights` file into the variables of the model `cfg` describes (the model must
/// have been built on `varmap`). Full files (`yolov3.weights`, `yolov3-tiny.weights`) and files
/// that stop at a conv boundary (`darknet53.conv.74`) are accepted; the report lists the covered
/// variables as loaded and the rest as missing. A full file with another class count loads every
/// conv but the output convs, which are listed in `skipped_shape` (model shape, file shape) and
/// keep their current values.
pub fn load_darknet_weights(
    varmap: &VarMap,
    cfg: &YoloConfig,
    weights_path: &Path,
) -> Result<LoadReport, ModelError> {
    let bytes = std::fs::read(weights_path).map_err(|e| ModelError::io(weights_path, e))?;
    let header = DarknetHeader::parse(&bytes, weights_path)?;
    let hb = header.len_bytes();
    let body = &bytes[hb.min(bytes.len())..];
    let found = body.len() / 4;
    let table = conv_table(cfg);
    let expected: usize = table.iter().map(|c| c.darknet_floats()).sum();
    let size_error = |detail: String| ModelError::WeightsSize {
        path: weights_path.to_path_buf(),
        header_bytes: hb,
        expected,
        found,
        model: cfg.describe(),
        detail,
    };
    if body.len() % 4 != 0 {
        return Err(size_error(format!(
            " (plus {} stray bytes: not a float32 weights file?)",
            body.len() % 4
        )));
    }
    // A full file of another class count: the body is this network's, the output convs differ.
    let file_filters = if found == expected {
        None
    } else {
        infer_file_filters(&table, cfg.num_anchors, found)
    };
    if let Some(filters) = file_filters {
        let file_table: Vec<ConvSpec> = table
            .iter()
            .map(|c| {
                let mut f = c.clone();
                if !c.batch_norm {
                    f.filters = filters;
                }
                f
            })
            .collect();
        return load_convs(varmap, &table, &file_table, body, weights_path);
    }
    // Exactly the size of the other variant's file: say so rather than where the file ends.
    let other = YoloConfig {
        variant: match cfg.variant {
            Variant::YoloV3 => Variant::Tiny,
            Variant::Tiny => Variant::YoloV3,
        },
        ..*cfg
    };
    let other_floats: usize = conv_table(&other).iter().map(|c| c.darknet_floats()).sum();
    if found == other_floats {
        return Err(size_error(format!(
            "; that is exactly the size of a {} file: weights of the other variant?",
            other.describe()
        )));
    }
    if found > expected {
        return Err(size_error(format!(
            "; the file is {} floats too long (another class count or network?)",
            found - expected
        )));
    }
    // Number of convs the file covers; it must end exactly at a conv boundary.
    let mut covered = 0;
    let mut offset = 0;
    for spec in &table {
        if offset == found {
            break;
        }
        let next = offset + spec.darknet_floats();
        if next > found {
            let upto = |last: usize| match last {
                0 => "conv 0".to_string(),
                _ => format!("convs 0 to {last}"),
            };
            let boundaries = if covered == 0 {
                format!("the first of which is at {next} floats (conv 0)")
            } else {
                format!(
                    "the nearest being {offset} floats ({}) and {next} floats ({})",
                    upto(covered - 1),
                    upto(covered)
                )
            };
            return Err(size_error(format!(
                "; the file ends inside darknet conv {covered} ({}), which spans floats \
                 {offset}..{next}; a partial file must end at a conv boundary, {boundaries}",
                spec.name
            )));
        }
        offset = next;
        covered += 1;
    }
    if covered == 0 {
        return Err(size_error("; the file holds no weights".into()));
    }

    load_convs(
        varmap,
        &table[..covered],
        &table[..covered],
        body,
        weights_path,
    )
}

/// Reads the convs `file_table` describes from `body` (which holds exactly them) into the model
/// convs `model_table` (same length and order): a conv whose file shape differs from the model's
/// is skipped and reported with both shapes.
fn load_convs(
    varmap: &VarMap,
    model_table: &[ConvSpec],
    file_table: &[ConvSpec],
    body: &[u8],
    weights_path: &Path,
) -> Result<LoadReport, ModelError> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut report = LoadReport::default();
    let mut pos = 0usize;
    for (spec, file_spec) in model_table.iter().zip(file_table) {
        let vars = spec.variables().into_iter().zip(file_spec.variables());
        for ((name, shape), (_, file_shape)) in vars {
            let var = lookup(&data, &name, &shape, weights_path)?;
            let len: usize = file_shape.iter().product();
            if file_shape != shape {
                pos += len;
                report.skipped_shape.push((name, shape, file_shape));
                continue;
            }
            let values: Vec<f32> = body[4 * pos..4 * (pos + len)]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            pos += len;
            let t = Tensor::from_vec(values, shape, var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
            report.loaded.push(name);
        }
    }
    report.missing = data
        .keys()
        .filter(|k| !report.loaded.contains(k) && !report.skipped_shape.iter().any(|s| &s.0 == *k))
        .cloned()
        .collect();
    report.sort();
    Ok(report)
}

/// Writes the model `cfg` describes (built on `varmap`) as a darknet `.weights` file (version
/// 0.2.0, `seen` = 0 as an int64), atomically.
pub fn save_darknet_weights(
    varmap: &VarMap,
    cfg: &YoloConfig,
    path: &Path,
) -> Result<(), ModelError> {
    let header = DarknetHeader {
        major: 0,
        minor: 2,
        revision: 0,
        seen: 0,
    };
    let table = conv_table(cfg);
    let expected: usize = table.iter().map(|c| c.darknet_floats()).sum();
    let mut bytes = header.to_bytes();
    bytes.reserve(4 * expected);
    {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for spec in &table {
            for (name, shape) in spec.variables() {
                let var = lookup(&data, &name, &shape, path)?;
                let values = var
                    .as_tensor()
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for v in values {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    write_atomic(path, |tmp| write_bytes(tmp, &bytes))
}
