//! Where a model for `detect`, `eval` and `info` comes from, and what goes with it.
//!
//! A model is darknet `.weights` (with or without its `.cfg`), a safetensors checkpoint, or a
//! training run folder. Each of the things the detector needs besides the weights (variant,
//! classes, anchors, anchor masks, input size) is taken from the first source that has it, and
//! [`ModelSource::origins`] says which one it was:
//!
//! | | run folder | `.cfg` | weights file | fallback |
//! |---|---|---|---|---|
//! | variant | `config.toml` `tiny` | number of `[yolo]` sections | float count / tensor names | `--tiny` |
//! | classes | its classes file | `classes=` (count) | output conv size (count) | COCO's 80 names when 80 |
//! | anchors | its anchors file, else its darknet cfg's | `anchors=` | | keras-yolo3's defaults |
//! | masks | its darknet cfg's, else keras-yolo3's | `mask=` | | keras-yolo3's |
//! | input | `config.toml` `input` | `[net] width, height` | | 416 |
//!
//! `--classes`, `--anchors` and `--input-size` given by the user override all of these.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use yolo_data::{read_anchors, read_classes, Anchors, InputShape};
use yolo_model::darknet_cfg::{cfg_convs, check_cfg_matches, parse_cfg, CfgSection, SectionKind};
use yolo_model::{load_darknet_weights, Variant, YoloBody, YoloConfig};

use crate::convert::{
    checkpoint_class_count, checkpoint_header, darknet_class_count, WeightsFormat,
};
use crate::error::{Result, TrainError};
use crate::state::RunState;

/// What the user named: any of these may be absent, but a weights file or a run folder must be
/// given.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    /// `.weights` or `.safetensors` file; with a run folder, overrides the run's choice.
    pub weights: Option<PathBuf>,
    /// Darknet `.cfg` of a `.weights` file.
    pub cfg: Option<PathBuf>,
    /// Training run folder (`state.json`, `config.toml`).
    pub run: Option<PathBuf>,
    /// Classes file overriding every other source.
    pub classes: Option<PathBuf>,
    /// Anchors file overriding every other source.
    pub anchors: Option<PathBuf>,
    /// The model is tiny YOLOv3, when the weights cannot tell.
    pub tiny: bool,
    /// Square input size overriding every other source.
    pub input_size: Option<usize>,
}

/// Where each part of a [`ModelSource`] came from, as a phrase for `info` and `detect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    /// Of the variant and the class count.
    pub variant: String,
    /// Of the class names.
    pub classes: String,
    /// Of the anchors.
    pub anchors: String,
    /// Of the anchor masks.
    pub masks: String,
    /// Of the input size.
    pub input: String,
}

/// A resolved model: its weights file and everything the detector needs with it.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// The weights file to load.
    pub weights: PathBuf,
    /// Its format.
    pub format: WeightsFormat,
    /// Variant and class count.
    pub config: YoloConfig,
    /// Class names (`config.num_classes` of them).
    pub classes: Vec<String>,
    /// All anchors, (w, h) in input pixels.
    pub anchors: Anchors,
    /// Anchor indices per output layer, coarsest first.
    pub masks: Vec<Vec<usize>>,
    /// Network input.
    pub input: InputShape,
    /// Where each of the above came from.
    pub origins: Origins,
}

/// The weights a run folder stands for: `best.safetensors` when the run wrote one, else the
/// latest epoch's checkpoint while it is still there, else the last finished phase's weights.
pub fn run_weights(run: &Path, state: &RunState) -> Result<PathBuf> {
    let best = run.join(BEST_WEIGHTS);
    let latest = state.weights.as_ref().map(|w| run.join(w));
    let finished = state.completed.last().map(|p| run.join(p.weights_file()));
    [Some(best), latest, finished]
        .into_iter()
        .flatten()
        .find(|w| w.is_file())
        .ok_or_else(|| {
            TrainError::format(
                run,
                "the run has no weights yet (no best.safetensors, epoch checkpoint or finished \
                 phase); pass --weights",
            )
        })
}

/// The file name of a run's best model.
pub const BEST_WEIGHTS: &str = "best.safetensors";

/// What a darknet cfg says about the detection layers.
#[derive(Debug, Clone, PartialEq)]
pub struct CfgModel {
    /// Variant, from the number of `[yolo]` sections (2: tiny, 3: YOLOv3).
    pub variant: Variant,
    /// `classes=` of the `[yolo]` sections.
    pub num_classes: usize,
    /// `anchors=` of the `[yolo]` sections.
    pub anchors: Anchors,
    /// `mask=` of each `[yolo]` section, in file order (coarsest grid first).
    pub masks: Vec<Vec<usize>>,
    /// `[net]` width and height.
    pub input: InputShape,
}

fn cfg_error(path: &Path, line: usize, msg: impl Into<String>) -> TrainError {
    TrainError::format(path, format!("line {line}: {}", msg.into()))
}

fn option<'a>(s: &'a CfgSection, key: &str, path: &Path) -> Result<&'a str> {
    s.options
        .get(key)
        .map(|v| v.trim())
        .ok_or_else(|| cfg_error(path, s.line, format!("[{}] lacks {key}=", s.kind)))
}

fn numbers<T: std::str::FromStr>(s: &CfgSection, key: &str, path: &Path) -> Result<Vec<T>> {
    option(s, key, path)?
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                cfg_error(
                    path,
                    s.line,
                    format!("[{}] {key}: `{v}` is not a number", s.kind),
                )
            })
        })
        .collect()
}

/// Reads the detection layers of a darknet cfg (see [`CfgModel`]); the `[yolo]` sections must
/// agree on classes and anchors, and their masks must index the anchors.
pub fn read_cfg_model(path: &Path) -> Result<CfgModel> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let sections = parse_cfg(yolo_data::strip_bom(&text), path)?;
    let yolo: Vec<&CfgSection> = sections
        .iter()
        .filter(|s| s.kind == SectionKind::Yolo)
        .collect();
    let variant = match yolo.len() {
        3 => Variant::YoloV3,
        2 => Variant::Tiny,
        n => {
            return Err(TrainError::format(
                path,
                format!(
                    "{n} [yolo] sections: YOLOv3 has 3 and tiny YOLOv3 2; other networks are not \
                     supported"
                ),
            ))
        }
    };
    let mut num_classes = None;
    let mut anchors: Option<Vec<f32>> = None;
    let mut masks = Vec::with_capacity(yolo.len());
    for s in &yolo {
        let c: usize = option(s, "classes", path)?.parse().map_err(|_| {
            cfg_error(
                path,
                s.line,
                "[yolo] classes= is not a whole number".to_string(),
            )
        })?;
        if *num_classes.get_or_insert(c) != c {
            return Err(cfg_error(
                path,
                s.line,
                "[yolo] sections disagree on classes=",
            ));
        }
        let a: Vec<f32> = numbers(s, "anchors", path)?;
        if !a.len().is_multiple_of(2) || a.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return Err(cfg_error(
                path,
                s.line,
                "[yolo] anchors= must be positive w,h pairs",
            ));
        }
        if anchors.as_ref().is_some_and(|prev| *prev != a) {
            return Err(cfg_error(
                path,
                s.line,
                "[yolo] sections disagree on anchors=",
            ));
        }
        let m: Vec<usize> = numbers(s, "mask", path)?;
        if let Some(bad) = m.iter().find(|&&i| 2 * i >= a.len()) {
            return Err(cfg_error(
                path,
                s.line,
                format!("[yolo] mask index {bad} but only {} anchors", a.len() / 2),
            ));
        }
        if m.len() != 3 {
            return Err(cfg_error(
                path,
                s.line,
                format!(
                    "[yolo] mask has {} anchors; this model uses 3 per layer",
                    m.len()
                ),
            ));
        }
        masks.push(m);
        anchors = Some(a);
    }
    let net = &sections[0];
    let dim = |key: &str| -> Result<usize> {
        match net.options.get(key) {
            None => Ok(416),
            Some(v) => v.trim().parse().map_err(|_| {
                cfg_error(
                    path,
                    net.line,
                    format!("[net] {key}={v} is not a whole number"),
                )
            }),
        }
    };
    let input = InputShape::new(dim("height")?, dim("width")?)
        .map_err(|e| TrainError::format(path, format!("[net] width/height: {e}")))?;
    let config = YoloConfig::new(variant, num_classes.unwrap_or(0));
    let convs = cfg_convs(&sections, path)?;
    check_cfg_matches(&config, &convs, path)?;
    Ok(CfgModel {
        variant,
        num_classes: config.num_classes,
        anchors: Anchors {
            custom_masks: None,
            wh: anchors
                .unwrap_or_default()
                .chunks(2)
                .map(|p| [p[0], p[1]])
                .collect(),
        },
        masks,
        input,
    })
}

/// The variant a checkpoint holds: tiny when it has no third output conv `head.out2`. `None`
/// when the header cannot be read (the loader then says what is wrong).
fn checkpoint_variant(path: &Path) -> Result<Option<Variant>> {
    let Some(json) = checkpoint_header(path)? else {
        return Ok(None);
    };
    Ok(json.get("head.out0.bias").map(|_| {
        if json.get("head.out2.bias").is_some() {
            Variant::YoloV3
        } else {
            Variant::Tiny
        }
    }))
}

/// The variant and class count of a darknet file from its size alone; `tiny_flag` breaks the
/// (theoretical) tie of a size that fits both.
fn darknet_variant(path: &Path, tiny_flag: bool) -> Result<Option<(Variant, usize)>> {
    let v3 = darknet_class_count(path, false);
    let tiny = darknet_class_count(path, true);
    match (v3, tiny) {
        (Ok(Some(n)), _) if !tiny_flag => Ok(Some((Variant::YoloV3, n))),
        (_, Ok(Some(n))) => Ok(Some((Variant::Tiny, n))),
        (Ok(Some(n)), _) => Ok(Some((Variant::YoloV3, n))),
        (Ok(None), Ok(None)) => Ok(None),
        (Err(e), _) | (_, Err(e)) => Err(e.into()),
    }
}

/// keras-yolo3's `anchor_mask` for the variant's output layers.
fn keras_masks(v: Variant) -> Vec<Vec<usize>> {
    let layers = YoloConfig::new(v, 1).num_layers();
    yolo_loss::anchor_mask(layers)
        .map(|m| m.iter().map(|l| l.to_vec()).collect())
        .unwrap_or_default()
}

impl ModelSource {
    /// Resolves `req` (see the module documentation for which source wins).
    pub fn resolve(req: &ModelRequest) -> Result<Self> {
        let state = match &req.run {
            Some(run) => Some(RunState::load(run)?),
            None => None,
        };
        let weights = match (&req.weights, &req.run, &state) {
            (Some(w), _, _) => w.clone(),
            (None, Some(run), Some(state)) => run_weights(run, state)?,
            _ => {
                return Err(TrainError::Config {
                    origin: "model".into(),
                    msg: "give --weights FILE (.weights or .safetensors) or --run DIR".into(),
                })
            }
        };
        let format = WeightsFormat::of(&weights).map_err(|_| {
            TrainError::format(
                &weights,
                "model weights are darknet .weights or .safetensors files",
            )
        })?;
        if req.cfg.is_some() && format != WeightsFormat::Darknet {
            return Err(TrainError::format(
                &weights,
                "--cfg describes darknet .weights files; this is a safetensors checkpoint",
            ));
        }
        let cfg = match &req.cfg {
            Some(p) => Some((p, read_cfg_model(p)?)),
            None => None,
        };
        let name = |p: &Path| p.display().to_string();

        // Variant and class count.
        let (variant, file_classes, variant_origin) = match (&state, &cfg, format) {
            (Some(s), _, _) => (
                s.config.variant,
                None,
                format!(
                    "the run's config.toml (variant = \"{}\")",
                    s.config.variant.key()
                ),
            ),
            (None, Some((p, c)), _) => (
                c.variant,
                Some(c.num_classes),
                format!("{} ([yolo] sections, classes={})", name(p), c.num_classes),
            ),
            (None, None, WeightsFormat::Darknet) => match darknet_variant(&weights, req.tiny)? {
                Some((v, n)) => (v, Some(n), "the size of the .weights file".to_string()),
                None => (
                    Variant::from_tiny(req.tiny),
                    None,
                    "--tiny (the file size does not tell)".to_string(),
                ),
            },
            (None, None, WeightsFormat::Safetensors) => match checkpoint_variant(&weights)? {
                Some(v) => (
                    v,
                    checkpoint_class_count(&weights)?,
                    "the checkpoint's output convs".to_string(),
                ),
                None => (Variant::from_tiny(req.tiny), None, "--tiny".to_string()),
            },
        };
        if req.tiny && variant == Variant::YoloV3 && state.is_none() {
            return Err(TrainError::format(
                &weights,
                format!("--tiny was given, but this is a YOLOv3 model ({variant_origin})"),
            ));
        }

        // Class names.
        let (classes, classes_origin) = if let Some(p) = &req.classes {
            (read_classes(p)?, name(p))
        } else if let Some(s) = &state {
            (
                read_classes(&s.config.classes)?,
                format!("the run's classes file {}", name(&s.config.classes)),
            )
        } else {
            match file_classes {
                Some(80) => (
                    yolo_data::coco80_classes(),
                    "COCO's 80 names (built in; the model has 80 classes)".to_string(),
                ),
                Some(n) => (
                    (0..n).map(|i| format!("class{i}")).collect(),
                    format!("class0..class{} (no --classes given)", n - 1),
                ),
                None => {
                    return Err(TrainError::format(
                        &weights,
                        "cannot tell the number of classes from the file; pass --classes",
                    ))
                }
            }
        };
        if let Some(n) = file_classes {
            if n != classes.len() {
                return Err(TrainError::format(
                    &weights,
                    format!(
                        "the model has {n} classes, the classes ({classes_origin}) give {}",
                        classes.len()
                    ),
                ));
            }
        }
        let config = YoloConfig::new(variant, classes.len());

        // Anchors and masks; a run trained with a darknet cfg decodes with that cfg's.
        let run_cfg = match state.as_ref().and_then(|s| s.config.darknet_cfg.as_ref()) {
            Some(p) => Some((p, read_cfg_model(p)?)),
            None => None,
        };
        let (anchors, anchors_origin) = if let Some(p) = &req.anchors {
            (read_anchors(p)?, name(p))
        } else if let Some(s) = &state {
            match (&s.config.anchors, &run_cfg) {
                (Some(p), _) => (
                    read_anchors(p)?,
                    format!("the run's anchors file {}", name(p)),
                ),
                (None, Some((p, c))) => (
                    c.anchors.clone(),
                    format!("the run's darknet cfg {} (anchors=)", name(p)),
                ),
                (None, None) => default_anchors(variant),
            }
        } else if let Some((p, c)) = &cfg {
            (c.anchors.clone(), format!("{} (anchors=)", name(p)))
        } else {
            default_anchors(variant)
        };
        let (masks, masks_origin) = match cfg.as_ref().or(run_cfg.as_ref()) {
            Some((p, c)) => (
                c.masks.clone(),
                format!("{} (mask=): {:?}", name(p), c.masks),
            ),
            None => {
                let m = keras_masks(variant);
                let s = format!("keras-yolo3's anchor_mask: {m:?}");
                (m, s)
            }
        };
        if let Some(bad) = masks.iter().flatten().find(|&&i| i >= anchors.wh.len()) {
            return Err(TrainError::format(
                &weights,
                format!(
                    "the anchor masks use anchor {bad}, but {} has {} anchors ({} needs {})",
                    anchors_origin,
                    anchors.wh.len(),
                    variant.name(),
                    config.num_layers() * config.num_anchors
                ),
            ));
        }

        // Input size.
        let (input, input_origin) = if let Some(n) = req.input_size {
            (
                InputShape::new(n, n).map_err(TrainError::from)?,
                format!("--input-size {n}"),
            )
        } else if let Some(s) = &state {
            (
                InputShape::new(s.config.input[0], s.config.input[1])?,
                "the run's config.toml".to_string(),
            )
        } else if let Some((p, c)) = &cfg {
            (c.input, format!("{} ([net] width, height)", name(p)))
        } else {
            (InputShape::new(416, 416)?, "the default 416".to_string())
        };

        Ok(ModelSource {
            weights,
            format,
            config,
            classes,
            anchors,
            masks,
            input,
            origins: Origins {
                variant: variant_origin,
                classes: classes_origin,
                anchors: anchors_origin,
                masks: masks_origin,
                input: input_origin,
            },
        })
    }

    /// Builds the network on `device` and loads the weights into it.
    pub fn load(&self, device: &Device) -> Result<YoloBody> {
        match self.format {
            WeightsFormat::Darknet => {
                let varmap = VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
                let body = YoloBody::new(&self.config, vb)?;
                let report = load_darknet_weights(&varmap, &self.config, &self.weights)?;
                if !report.is_complete() {
                    return Err(TrainError::format(
                        &self.weights,
                        format!(
                            "does not hold the whole {}: {report}",
                            self.config.describe()
                        ),
                    ));
                }
                Ok(body)
            }
            WeightsFormat::Safetensors => {
                // SAFETY: the checkpoint is memory-mapped read-only; nothing in this process
                // writes it while the model lives.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(&[&self.weights], DType::F32, device)
                }?;
                YoloBody::new(&self.config, vb).map_err(|e| {
                    TrainError::format(
                        &self.weights,
                        format!(
                            "weights do not fit {} with {} classes: {e}",
                            self.config.describe(),
                            self.classes.len()
                        ),
                    )
                })
            }
        }
    }

    /// The lines `info` and `detect` print: what the model is and where each part came from.
    pub fn describe(&self) -> Vec<String> {
        let anchors = self.anchors.to_file_string();
        vec![
            format!(
                "model: {} ({}), {} classes, from {}",
                self.config.variant.name(),
                match self.format {
                    WeightsFormat::Darknet => "darknet .weights",
                    WeightsFormat::Safetensors => "safetensors",
                },
                self.classes.len(),
                self.weights.display()
            ),
            format!("  variant: {}", self.origins.variant),
            format!("  classes: {}", self.origins.classes),
            format!("  anchors: {anchors} from {}", self.origins.anchors),
            format!("  masks: {}", self.origins.masks),
            format!(
                "  input: {}x{} from {}",
                self.input.w, self.input.h, self.origins.input
            ),
        ]
    }
}

/// keras-yolo3's built-in anchors of the variant, with where they come from.
pub(crate) fn default_anchors(v: Variant) -> (Anchors, String) {
    match v {
        Variant::YoloV3 => (
            Anchors::yolo_default(),
            "keras-yolo3's yolo_anchors.txt (built in)".to_string(),
        ),
        Variant::Tiny => (
            Anchors::tiny_default(),
            "keras-yolo3's tiny_yolo_anchors.txt (built in)".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_model::darknet_cfg::darknet_cfg;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_cfg_gives_variant_classes_anchors_masks_and_input() {
        let dir = tempfile::tempdir().unwrap();
        let text = darknet_cfg(&YoloConfig::tiny(3))
            .replace("mask=1,2,3", "mask=0,1,2")
            .replace("width=416", "width=320");
        let p = write(dir.path(), "t.cfg", &text);
        let m = read_cfg_model(&p).unwrap();
        assert_eq!(m.variant, Variant::Tiny);
        assert_eq!(m.num_classes, 3);
        assert_eq!(m.masks, vec![vec![3, 4, 5], vec![0, 1, 2]]);
        assert_eq!(m.anchors, Anchors::tiny_default());
        assert_eq!((m.input.h, m.input.w), (416, 320));
        let v3 = write(dir.path(), "v3.cfg", &darknet_cfg(&YoloConfig::v3(20)));
        let m = read_cfg_model(&v3).unwrap();
        assert_eq!((m.variant, m.num_classes), (Variant::YoloV3, 20));
        assert_eq!(m.masks, vec![vec![6, 7, 8], vec![3, 4, 5], vec![0, 1, 2]]);
    }

    #[test]
    fn bad_cfg_detection_layers_are_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = darknet_cfg(&YoloConfig::tiny(3));
        let line_of = |text: &str, needle: &str| {
            // The [yolo] header line of the section holding `needle`.
            let at = text.find(needle).unwrap();
            let header = text[..at].rfind("[yolo]").unwrap();
            text[..header].lines().count() + 1
        };
        for (from, to, msg) in [
            (
                "mask=1,2,3",
                "mask=1,2,9",
                "mask index 9 but only 6 anchors",
            ),
            (
                "mask=1,2,3",
                "mask=1,2",
                "mask has 2 anchors; this model uses 3 per layer",
            ),
            ("mask=1,2,3", "mask=1,x,3", "mask: `x` is not a number"),
        ] {
            let text = good.replace(from, to);
            let p = write(dir.path(), "bad.cfg", &text);
            let e = read_cfg_model(&p).unwrap_err().to_string();
            let line = line_of(&text, to);
            assert!(e.contains(&format!("line {line}: [yolo] {msg}")), "{e}");
            assert!(e.contains("bad.cfg"), "{e}");
        }
        // Sections that disagree on the class count.
        let mut text = good.clone();
        let second = text.rfind("classes=3").unwrap();
        text.replace_range(second..second + 9, "classes=4");
        let p = write(dir.path(), "bad.cfg", &text);
        let e = read_cfg_model(&p).unwrap_err().to_string();
        assert!(e.contains("[yolo] sections disagree on classes="), "{e}");
    }

    #[test]
    fn a_checkpoint_tells_its_variant_and_classes_and_names_default_to_class_n() {
        let dir = tempfile::tempdir().unwrap();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        yolo_model::tiny_yolo_body(&YoloConfig::tiny(2), vb).unwrap();
        let w = dir.path().join("w.safetensors");
        yolo_model::save_checkpoint(&varmap, &w).unwrap();
        let src = ModelSource::resolve(&ModelRequest {
            weights: Some(w.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(src.config.variant, Variant::Tiny);
        assert_eq!(src.classes, vec!["class0", "class1"]);
        assert_eq!(src.masks, vec![vec![3, 4, 5], vec![1, 2, 3]]);
        assert_eq!(src.origins.variant, "the checkpoint's output convs");
        src.load(&Device::Cpu).unwrap();
        // A classes file of another size is refused, naming both counts.
        let c = write(dir.path(), "c.txt", "a\nb\nc\n");
        let e = ModelSource::resolve(&ModelRequest {
            weights: Some(w.clone()),
            classes: Some(c),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("the model has 2 classes, the classes"), "{e}");
        assert!(e.contains("give 3"), "{e}");
        // Neither weights nor run.
        let e = ModelSource::resolve(&ModelRequest::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("give --weights FILE"), "{e}");
    }
}
