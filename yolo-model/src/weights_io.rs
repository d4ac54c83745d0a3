//! Weight files without training: the format of a path, the class count a darknet `.weights` or
//! safetensors file holds, conversion between the two formats (`yolo convert`), and the check
//! that a checkpoint given as initial weights fits the model ([`check_weights_fit`]).
//!
//! Conversion: the direction follows the extensions, `.weights` (darknet) or `.safetensors` (any
//! case); any other extension, or two files of the same format, is an error. The class count is
//! read from the input when not given: a darknet file's float count fixes its output convs'
//! filter count (see [`crate::infer_file_filters`]), a checkpoint stores `head.out0.bias`. A count
//! that is given must agree with the file's.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use crate::architecture::{conv_table, model_variables};
use crate::checkpoint::{load_checkpoint_partial, save_checkpoint, LoadReport};
use crate::config::{Variant, YoloConfig};
use crate::darknet_weights::{
    infer_file_filters, load_darknet_weights, save_darknet_weights, DarknetHeader,
};
use crate::error::ModelError;
use crate::yolo_body::YoloBody;
use candle_core::Device;

type Result<T> = std::result::Result<T, ModelError>;

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
            _ => Err(ModelError::format(
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
        return Err(ModelError::format(
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
            return Err(ModelError::format(
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
            return Err(ModelError::format(
                input,
                "cannot tell the number of classes from the file (a darknet file that stops \
                 before the output convs, or a checkpoint without head.out0.bias); pass \
                 --num-classes or --classes",
            ))
        }
    };
    let cfg = YoloConfig::new(Variant::from_tiny(tiny), num_classes);
    let (varmap, _) = YoloBody::build(&cfg, 0, &Device::Cpu)?;
    let report = match from {
        WeightsFormat::Darknet => load_darknet_weights(&varmap, &cfg, input)?,
        WeightsFormat::Safetensors => {
            let report = load_checkpoint_partial(&varmap, input)?;
            if !report.is_complete() {
                return Err(ModelError::format(
                    input,
                    format!("does not match {}: {report}", cfg.describe()),
                ));
            }
            report
        }
    };
    if let Some(d) = output.parent() {
        if !d.as_os_str().is_empty() {
            std::fs::create_dir_all(d).map_err(|e| ModelError::io(d, e))?;
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
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = f.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut head = Vec::with_capacity(20);
    (&mut f)
        .take(20)
        .read_to_end(&mut head)
        .map_err(|e| ModelError::io(path, e))?;
    let header = DarknetHeader::parse(&head, path)?;
    let body = len.saturating_sub(header.len_bytes() as u64);
    if body % 4 != 0 {
        return Ok(None);
    }
    let found = usize::try_from(body / 4).unwrap_or(usize::MAX);
    let classes_of = |tiny: bool| {
        let cfg = YoloConfig::new(Variant::from_tiny(tiny), 1);
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
        return Err(ModelError::format(
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
pub fn checkpoint_header(path: &Path) -> Result<Option<serde_json::Value>> {
    /// Headers larger than this are not read here (the loader reports them).
    const MAX_HEADER: u64 = 100 << 20;
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
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

fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::YoloV3 => "yolov3",
        Variant::Tiny => "yolov3-tiny",
    }
}

/// Decides whether a safetensors checkpoint given as initial weights (`--weights`) fits the model
/// `model_cfg`, from the report of its partial load. The rule:
///
/// - nothing loaded (no tensor matches a variable by name and shape): an error;
/// - fewer than half of the model's variables loaded *and* more of the file's tensor names belong
///   to the other variant (YOLOv3 / tiny) than to this one: an error saying which variant the file
///   looks like and which setting to change;
/// - anything else is a deliberate partial initialisation and is accepted (and reported by the
///   caller): another class count loads all but the output convs, a backbone-only file loads the
///   backbone.
///
/// The names come from [`model_variables`], so no model of the other variant is built.
pub fn check_weights_fit(report: &LoadReport, model_cfg: &YoloConfig, path: &Path) -> Result<()> {
    let loaded = report.loaded.len();
    let skipped = report.skipped_shape.len();
    let model_vars = loaded + skipped + report.missing.len();
    let file_tensors = loaded + skipped + report.unexpected.len();
    let other = YoloConfig {
        variant: model_cfg.variant.other(),
        ..*model_cfg
    };
    let other_names: HashSet<String> = model_variables(&other)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let in_other = report
        .loaded
        .iter()
        .chain(report.skipped_shape.iter().map(|s| &s.0))
        .chain(&report.unexpected)
        .filter(|n| other_names.contains(*n))
        .count();
    let looks_other = in_other > loaded + skipped;
    if loaded > 0 && (2 * loaded >= model_vars || !looks_other) {
        return Ok(());
    }
    let head = if loaded == 0 {
        "none".to_string()
    } else {
        format!("only {loaded}")
    };
    let verb = if loaded == 1 { "loads" } else { "load" };
    let mut msg = format!(
        "{head} of the {model_vars} variables of the {} model {verb} from its {file_tensors} \
         tensors ({skipped} names match with another shape, {} names the model lacks)",
        model_cfg.describe(),
        report.unexpected.len()
    );
    let other_name = variant_name(other.variant);
    if looks_other {
        let fix = match other.variant {
            Variant::Tiny => "use --tiny (variant = \"tiny\")",
            Variant::YoloV3 => "drop --tiny (variant = \"yolov3\")",
        };
        msg.push_str(&format!(
            "; it looks like a {other_name} checkpoint ({in_other} of its {file_tensors} names \
             are {other_name}'s): {fix}"
        ));
    } else if file_tensors == 0 {
        msg.push_str("; the file holds no tensors");
    } else {
        let examples: Vec<&str> = report
            .unexpected
            .iter()
            .take(3)
            .map(String::as_str)
            .collect();
        msg.push_str(&format!(
            "; expected a checkpoint of this model as `yolo train` or `yolo convert` write it \
             (names such as {}), found names such as {}",
            model_variables(model_cfg)
                .iter()
                .take(2)
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            examples.join(", ")
        ));
    }
    Err(ModelError::WrongWeights {
        path: path.to_path_buf(),
        msg,
    })
}

/// True when `p` looks like a darknet weights file rather than safetensors (any name not ending
/// in `.safetensors`, in any case).
pub fn is_darknet_weights(p: &Path) -> bool {
    !p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
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
        let (vm, _) = YoloBody::build(&cfg, 5, &Device::Cpu).unwrap();
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
