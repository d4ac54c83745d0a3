//! Weight conversion between darknet `.weights` and safetensors checkpoints (`yolo convert`).
//!
//! The direction follows the extensions, `.weights` (darknet) or `.safetensors` (any case); any
//! other extension, or two files of the same format, is an error. The class count is read from
//! the input when not given: a darknet file's float count fixes its output convs' filter count
//! (see [`yolo_model::infer_file_filters`]), a checkpoint stores `head.out0.bias`. A count that is
//! given must agree with the file's.

use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use yolo_model::{
    conv_table, infer_file_filters, load_checkpoint_partial, load_darknet_weights, save_checkpoint,
    save_darknet_weights, DarknetHeader, LoadReport, Variant, YoloConfig,
};

use crate::error::{Result, TrainError};

/// The two weight formats `yolo convert` reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// Darknet `.weights`.
    Darknet,
    /// A safetensors checkpoint (`.safetensors`).
    Safetensors,
}

impl WeightsFormat {
    /// The format of `path` from its extension, `.weights` or `.safetensors` in any case; any
    /// other extension (or none) is an error naming it and the accepted ones.
    pub fn of(path: &Path) -> Result<Self> {
        let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
        match ext.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("weights") => Ok(WeightsFormat::Darknet),
            Some("safetensors") => Ok(WeightsFormat::Safetensors),
            _ => Err(TrainError::format(
                path,
                format!(
                    "{}: yolo convert reads and writes .weights (darknet) and .safetensors files",
                    match &ext {
                        Some(e) => format!("unsupported extension `.{e}`"),
                        None => "no file extension".to_string(),
                    }
                ),
            )),
        }
    }

    /// The extension as written in messages.
    fn name(self) -> &'static str {
        match self {
            WeightsFormat::Darknet => ".weights",
            WeightsFormat::Safetensors => ".safetensors",
        }
    }
}

/// A class count given by the user, with where it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenClasses {
    /// The number of classes.
    pub count: usize,
    /// Where it came from, e.g. `--num-classes` or `--classes coco.names`.
    pub origin: String,
}

/// What [`convert_weights`] did.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The load of the input into the model (variables left at initial values are listed).
    pub report: LoadReport,
    /// The class count of the written model.
    pub num_classes: usize,
    /// True when the class count was read from the input file rather than given.
    pub inferred: bool,
}

/// Converts `input` to `output` (see the module documentation). `classes` is the class count
/// the user gave, if any; without it the count is read from `input`, and a darknet file that
/// stops early (e.g. `darknet53.conv.74`) then needs it. Darknet files may stop early: the report
/// lists the variables left at their initial values. A safetensors file must cover the whole model.
pub fn convert_weights(
    input: &Path,
    output: &Path,
    classes: Option<&GivenClasses>,
    tiny: bool,
) -> Result<Converted> {
    let from = WeightsFormat::of(input)?;
    let to = WeightsFormat::of(output)?;
    if from == to {
        return Err(TrainError::format(
            output,
            format!(
                "the input {} is a {} file too; yolo convert converts .weights to .safetensors \
                 or back",
                input.display(),
                from.name()
            ),
        ));
    }
    let in_file = match from {
        WeightsFormat::Darknet => darknet_class_count(input, tiny)?,
        WeightsFormat::Safetensors => checkpoint_class_count(input)?,
    };
    let (num_classes, inferred) = match (classes, in_file) {
        (Some(g), Some(n)) if g.count != n => {
            return Err(TrainError::format(
                input,
                format!(
                    "the file holds a model with {}, but {} gives {}",
                    classes_str(n),
                    g.origin,
                    classes_str(g.count)
                ),
            ))
        }
        (Some(g), _) => (g.count, false),
        (None, Some(n)) => (n, true),
        (None, None) => {
            return Err(TrainError::format(
                input,
                "cannot tell the number of classes from the file (a darknet file that stops \
                 before the output convs, or a checkpoint without head.out0.bias); pass \
                 --num-classes or --classes",
            ))
        }
    };
    let cfg = YoloConfig::new(variant_of(tiny), num_classes);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    // YoloBody::new dispatches on the variant.
    yolo_model::YoloBody::new(&cfg, vb)?;
    let report = match from {
        WeightsFormat::Darknet => load_darknet_weights(&varmap, &cfg, input)?,
        WeightsFormat::Safetensors => {
            let report = load_checkpoint_partial(&varmap, input)?;
            if !report.is_complete() {
                return Err(TrainError::format(
                    input,
                    format!("does not match {}: {report}", cfg.describe()),
                ));
            }
            report
        }
    };
    if let Some(d) = output.parent() {
        if !d.as_os_str().is_empty() {
            std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
        }
    }
    match to {
        WeightsFormat::Safetensors => save_checkpoint(&varmap, output)?,
        WeightsFormat::Darknet => save_darknet_weights(&varmap, &cfg, output)?,
    }
    Ok(Converted {
        report,
        num_classes,
        inferred,
    })
}

/// The class count of a full darknet `.weights` file of the variant `tiny` selects, solved from
/// its float count; `None` when no count explains it (a file that stops early, or a malformed
/// one, which the loader then reports). A file that is exactly a full file of the other variant
/// is an error saying so.
pub fn darknet_class_count(path: &Path, tiny: bool) -> Result<Option<usize>> {
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let len = f.metadata().map_err(|e| TrainError::io(path, e))?.len();
    let mut head = Vec::with_capacity(20);
    (&mut f)
        .take(20)
        .read_to_end(&mut head)
        .map_err(|e| TrainError::io(path, e))?;
    let header = DarknetHeader::parse(&head, path)?;
    let body = len.saturating_sub(header.len_bytes() as u64);
    if body % 4 != 0 {
        return Ok(None);
    }
    let found = usize::try_from(body / 4).unwrap_or(usize::MAX);
    let classes_of = |tiny: bool| {
        let cfg = YoloConfig::new(variant_of(tiny), 1);
        let table = conv_table(&cfg);
        let one: usize = table.iter().map(|c| c.darknet_floats()).sum();
        if found == one {
            Some(1)
        } else {
            infer_file_filters(&table, cfg.num_anchors, found).map(|f| f / cfg.num_anchors - 5)
        }
    };
    if let Some(n) = classes_of(tiny) {
        return Ok(Some(n));
    }
    if let Some(n) = classes_of(!tiny) {
        let (file, asked, hint) = if tiny {
            ("YOLOv3", "tiny YOLOv3", "drop --tiny")
        } else {
            ("tiny YOLOv3", "YOLOv3", "pass --tiny")
        };
        return Err(TrainError::format(
            path,
            format!(
                "{found} floats after the header: the size of a full {file} file with {}, \
                 not of a {asked} one; {hint}",
                classes_str(n)
            ),
        ));
    }
    Ok(None)
}

/// The variant a `--tiny` flag selects.
fn variant_of(tiny: bool) -> Variant {
    if tiny {
        Variant::Tiny
    } else {
        Variant::YoloV3
    }
}

/// `1 class`, `N classes`.
fn classes_str(n: usize) -> String {
    if n == 1 {
        "1 class".into()
    } else {
        format!("{n} classes")
    }
}

/// The JSON header of a safetensors file (tensor names, dtypes, shapes), read without the data;
/// `None` when it cannot be read or parsed (the loader then reports what is wrong). Only an
/// unopenable file is an error.
pub(crate) fn checkpoint_header(path: &Path) -> Result<Option<serde_json::Value>> {
    /// Headers larger than this are not read here (the loader reports them).
    const MAX_HEADER: u64 = 100 << 20;
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return Ok(None);
    }
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Ok(None);
    }
    let mut header = Vec::new();
    if (&mut f).take(n).read_to_end(&mut header).is_err() || header.len() as u64 != n {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&header).ok())
}

/// The class count of a safetensors checkpoint, from the shape of `head.out0.bias`
/// (`3 * (5 + classes)`), read from the file's header only; `None` when the header cannot be read
/// or the tensor is absent or of another size (the loader then reports what is wrong).
pub fn checkpoint_class_count(path: &Path) -> Result<Option<usize>> {
    let Some(json) = checkpoint_header(path)? else {
        return Ok(None);
    };
    let filters = json
        .get("head.out0.bias")
        .and_then(|t| t.get("shape"))
        .and_then(|s| s.as_array())
        .filter(|s| s.len() == 1)
        .and_then(|s| s[0].as_u64())
        .and_then(|f| usize::try_from(f).ok());
    let anchors = YoloConfig::tiny(1).num_anchors;
    Ok(filters
        .filter(|f| f.is_multiple_of(anchors) && f / anchors > 5)
        .map(|f| f / anchors - 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(count: usize) -> GivenClasses {
        GivenClasses {
            count,
            origin: "--num-classes".into(),
        }
    }

    /// A seeded tiny model of `classes` saved to `path`.
    fn tiny_checkpoint(path: &Path, classes: usize) {
        let cfg = YoloConfig::tiny(classes);
        let vm = VarMap::new();
        yolo_model::tiny_yolo_body(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))
            .unwrap();
        crate::init::seeded_glorot_init(&vm, 5).unwrap();
        save_checkpoint(&vm, path).unwrap();
    }

    #[test]
    fn safetensors_to_darknet_and_back_is_lossless() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.safetensors");
        tiny_checkpoint(&a, 2);
        let w = dir.path().join("m.weights");
        let c = convert_weights(&a, &w, Some(&given(2)), true).unwrap();
        assert_eq!((c.num_classes, c.inferred), (2, false));
        let b = dir.path().join("b.safetensors");
        let c = convert_weights(&w, &b, Some(&given(2)), true).unwrap();
        assert!(c.report.is_complete(), "{}", c.report);
        let ta = candle_core::safetensors::load(&a, &Device::Cpu).unwrap();
        let tb = candle_core::safetensors::load(&b, &Device::Cpu).unwrap();
        assert_eq!(ta.len(), tb.len());
        for (k, v) in &ta {
            let d = (v - &tb[k])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{k}");
        }
    }

    #[test]
    fn the_class_count_is_read_from_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.safetensors");
        tiny_checkpoint(&a, 1);
        assert_eq!(checkpoint_class_count(&a).unwrap(), Some(1));
        let w = dir.path().join("one.WEIGHTS");
        let c = convert_weights(&a, &w, None, true).unwrap();
        assert_eq!((c.num_classes, c.inferred), (1, true));
        assert_eq!(darknet_class_count(&w, true).unwrap(), Some(1));
        let b = dir.path().join("b.SafeTensors");
        let c = convert_weights(&w, &b, None, true).unwrap();
        assert_eq!((c.num_classes, c.inferred), (1, true));
        assert!(c.report.is_complete(), "{}", c.report);
        assert_eq!(checkpoint_class_count(&b).unwrap(), Some(1));
        // The tiny file read as YOLOv3.
        assert_eq!(
            darknet_class_count(&w, false).unwrap_err().to_string(),
            format!(
                "{}: 8676244 floats after the header: the size of a full tiny YOLOv3 file \
                 with 1 class, not of a YOLOv3 one; pass --tiny",
                w.display()
            )
        );
    }

    #[test]
    fn a_given_class_count_must_match_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.safetensors");
        tiny_checkpoint(&a, 2);
        let out = dir.path().join("x.weights");
        let e = convert_weights(&a, &out, Some(&given(3)), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: the file holds a model with 2 classes, but --num-classes gives 3 classes",
                a.display()
            )
        );
        assert!(!out.exists());
    }

    #[test]
    fn extensions_and_directions_are_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.weights");
        let onnx = dir.path().join("x.onnx");
        assert_eq!(
            convert_weights(&missing, &onnx, None, false)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: unsupported extension `.onnx`: yolo convert reads and writes .weights \
                 (darknet) and .safetensors files",
                onnx.display()
            )
        );
        let bare = dir.path().join("model");
        assert_eq!(
            convert_weights(&bare, &missing, None, false)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: no file extension: yolo convert reads and writes .weights (darknet) and \
                 .safetensors files",
                bare.display()
            )
        );
        let other = dir.path().join("b.Weights");
        assert_eq!(
            convert_weights(&missing, &other, None, false)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: the input {} is a .weights file too; yolo convert converts .weights to \
                 .safetensors or back",
                other.display(),
                missing.display()
            )
        );
    }

    #[test]
    fn a_darknet_file_that_stops_early_needs_a_class_count() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.safetensors");
        tiny_checkpoint(&a, 1);
        let w = dir.path().join("full.weights");
        convert_weights(&a, &w, None, true).unwrap();
        // Keep the header and the first conv only (16 filters of 3x3x3 with BatchNorm).
        let bytes = std::fs::read(&w).unwrap();
        let cut = dir.path().join("cut.weights");
        std::fs::write(&cut, &bytes[..20 + 4 * (4 * 16 + 16 * 27)]).unwrap();
        assert_eq!(darknet_class_count(&cut, true).unwrap(), None);
        let out = dir.path().join("cut.safetensors");
        assert_eq!(
            convert_weights(&cut, &out, None, true)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: cannot tell the number of classes from the file (a darknet file that stops \
                 before the output convs, or a checkpoint without head.out0.bias); pass \
                 --num-classes or --classes",
                cut.display()
            )
        );
        let c = convert_weights(&cut, &out, Some(&given(4)), true).unwrap();
        assert_eq!((c.num_classes, c.report.loaded.len()), (4, 5));
        assert_eq!(checkpoint_class_count(&out).unwrap(), Some(4));
    }
}
