//! Darknet `.cfg` files: a parser (with clear errors for unknown sections and bad values), the
//! conv layer list a cfg implies, a check that it matches this crate's model, and a generator
//! that writes the `yolov3.cfg` / `yolov3-tiny.cfg` layer structure for any class count (the
//! layer order is embedded here as code, not downloaded).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use candle_nn::VarMap;

use crate::architecture::{
    conv_table, ConvSpec, DARKNET53_STAGES, TINY_BACKBONE_FILTERS, V3_NECK_FILTERS,
};
use crate::checkpoint::LoadReport;
use crate::config::{Variant, YoloConfig};
use crate::darknet_weights::load_darknet_weights;
use crate::error::ModelError;

/// The section types a YOLOv3 cfg uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// `[net]` / `[network]`: input size and training options.
    Net,
    /// `[convolutional]`.
    Convolutional,
    /// `[shortcut]`: residual addition.
    Shortcut,
    /// `[route]`: concatenation / reference to earlier layers.
    Route,
    /// `[upsample]`.
    Upsample,
    /// `[maxpool]`.
    Maxpool,
    /// `[yolo]`: detection layer (no weights).
    Yolo,
}

impl SectionKind {
    /// The section's name as a cfg writes it (`convolutional`).
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Net => "net",
            SectionKind::Convolutional => "convolutional",
            SectionKind::Shortcut => "shortcut",
            SectionKind::Route => "route",
            SectionKind::Upsample => "upsample",
            SectionKind::Maxpool => "maxpool",
            SectionKind::Yolo => "yolo",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "net" | "network" => SectionKind::Net,
            "convolutional" | "conv" => SectionKind::Convolutional,
            "shortcut" => SectionKind::Shortcut,
            "route" => SectionKind::Route,
            "upsample" => SectionKind::Upsample,
            "maxpool" | "max" => SectionKind::Maxpool,
            "yolo" => SectionKind::Yolo,
            _ => return None,
        })
    }
}

impl std::fmt::Display for SectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One `[section]` of a cfg file with its `key=value` options.
#[derive(Debug, Clone, PartialEq)]
pub struct CfgSection {
    /// Section type.
    pub kind: SectionKind,
    /// 1-based line of the `[section]` header.
    pub line: usize,
    /// Options in file order of keys (sorted map; darknet forbids duplicates anyway).
    pub options: BTreeMap<String, String>,
}

/// A cfg error at a 1-based line (`usize`) or at none (`None`: the cfg as a whole).
fn cfg_err(path: &Path, line: impl Into<Option<usize>>, msg: impl Into<String>) -> ModelError {
    ModelError::Cfg {
        path: path.to_path_buf(),
        line: line.into(),
        msg: msg.into(),
    }
}

impl CfgSection {
    fn int(&self, key: &str, default: Option<i64>, path: &Path) -> Result<i64, ModelError> {
        match self.options.get(key) {
            Some(v) => v.trim().parse::<i64>().map_err(|_| {
                cfg_err(
                    path,
                    self.line,
                    format!("[{}] option {key}={v} is not an integer", self.kind),
                )
            }),
            None => default.ok_or_else(|| {
                cfg_err(
                    path,
                    self.line,
                    format!("[{}] section lacks required option {key}", self.kind),
                )
            }),
        }
    }
}

/// Parses cfg text (`path` is only used in error messages). Comments start with `#` or `;`.
/// Unknown sections, options before the first section, lines without `=` and duplicate keys are
/// errors naming the line.
pub fn parse_cfg(text: &str, path: &Path) -> Result<Vec<CfgSection>, ModelError> {
    let mut sections: Vec<CfgSection> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| {
                cfg_err(path, line_no, format!("section header `{line}` lacks `]`"))
            })?;
            let kind = SectionKind::from_name(name.trim()).ok_or_else(|| {
                cfg_err(
                    path,
                    line_no,
                    format!(
                        "unknown section [{name}] (supported: net, convolutional, shortcut, \
                         route, upsample, maxpool, yolo)"
                    ),
                )
            })?;
            sections.push(CfgSection {
                kind,
                line: line_no,
                options: BTreeMap::new(),
            });
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| cfg_err(path, line_no, format!("expected key=value, got `{line}`")))?;
        let sec = sections.last_mut().ok_or_else(|| {
            cfg_err(
                path,
                line_no,
                format!("option `{line}` before any [section]"),
            )
        })?;
        let key = k.trim().to_string();
        if sec
            .options
            .insert(key.clone(), v.trim().to_string())
            .is_some()
        {
            return Err(cfg_err(path, line_no, format!("duplicate option {key}")));
        }
    }
    match sections.first() {
        Some(s) if s.kind == SectionKind::Net => Ok(sections),
        Some(s) => Err(cfg_err(path, s.line, "a cfg must start with [net]")),
        None => Err(cfg_err(path, None, "no sections")),
    }
}

/// A convolution as a cfg describes it, with its input channels resolved through routes,
/// shortcuts, pools and upsampling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfgConv {
    /// Layer index (sections after `[net]`, from 0).
    pub layer: usize,
    /// 1-based line of the section.
    pub line: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub filters: usize,
    /// Kernel size.
    pub size: usize,
    /// Stride.
    pub stride: usize,
    /// Whether BatchNorm follows (`batch_normalize=1`).
    pub batch_norm: bool,
}

/// The convolutions of a parsed cfg, in order.
pub fn cfg_convs(sections: &[CfgSection], path: &Path) -> Result<Vec<CfgConv>, ModelError> {
    let net = sections
        .first()
        .ok_or_else(|| cfg_err(path, None, "no sections"))?;
    let input_c = net.int("channels", Some(3), path)? as usize;
    let mut out_c: Vec<usize> = Vec::new();
    let mut convs = Vec::new();
    for (layer, s) in sections[1..].iter().enumerate() {
        let prev = if layer == 0 {
            input_c
        } else {
            out_c[layer - 1]
        };
        let resolve = |v: i64| -> Result<usize, ModelError> {
            let idx = if v < 0 { layer as i64 + v } else { v };
            if idx < 0 || idx as usize >= layer {
                return Err(cfg_err(
                    path,
                    s.line,
                    format!("layer {layer} refers to layer {v}, which does not precede it"),
                ));
            }
            Ok(idx as usize)
        };
        let c = match s.kind {
            SectionKind::Net => {
                return Err(cfg_err(path, s.line, "[net] may only appear first"));
            }
            SectionKind::Convolutional => {
                let filters = s.int("filters", None, path)?;
                let size = s.int("size", Some(1), path)?;
                let stride = s.int("stride", Some(1), path)?;
                let bn = s.int("batch_normalize", Some(0), path)?;
                if filters <= 0 || size <= 0 || stride <= 0 {
                    return Err(cfg_err(
                        path,
                        s.line,
                        format!("bad conv: filters={filters} size={size} stride={stride}"),
                    ));
                }
                convs.push(CfgConv {
                    layer,
                    line: s.line,
                    c_in: prev,
                    filters: filters as usize,
                    size: size as usize,
                    stride: stride as usize,
                    batch_norm: bn != 0,
                });
                filters as usize
            }
            SectionKind::Shortcut => {
                resolve(s.int("from", None, path)?)?;
                prev
            }
            SectionKind::Route => {
                let list = s
                    .options
                    .get("layers")
                    .ok_or_else(|| cfg_err(path, s.line, "[route] lacks layers="))?;
                let mut sum = 0;
                for item in list.split(',') {
                    let v: i64 = item.trim().parse().map_err(|_| {
                        cfg_err(
                            path,
                            s.line,
                            format!("route layer `{item}` is not an integer"),
                        )
                    })?;
                    // Checked: huge `filters` values must not overflow the sum (found by proptest).
                    sum = usize::checked_add(sum, out_c[resolve(v)?]).ok_or_else(|| {
                        cfg_err(
                            path,
                            s.line,
                            format!("route layers {list} give more channels than fit in a usize"),
                        )
                    })?;
                }
                sum
            }
            SectionKind::Upsample | SectionKind::Maxpool | SectionKind::Yolo => prev,
        };
        out_c.push(c);
    }
    Ok(convs)
}

/// Checks that the convs of a cfg are exactly those of the model `cfg` describes, in the same
/// order; the error names the first differing conv and its cfg line.
pub fn check_cfg_matches(
    cfg: &YoloConfig,
    convs: &[CfgConv],
    path: &Path,
) -> Result<(), ModelError> {
    let table = conv_table(cfg);
    for (i, (c, t)) in convs.iter().zip(&table).enumerate() {
        let got = (c.c_in, c.filters, c.size, c.stride, c.batch_norm);
        let want = (t.c_in, t.filters, t.size, t.stride, t.batch_norm);
        if got != want {
            return Err(cfg_err(
                path,
                c.line,
                format!(
                    "conv {i} is (c_in, filters, size, stride, batch_norm) = {got:?}, but {} \
                     needs {want:?} for {}",
                    t.name,
                    cfg.describe()
                ),
            ));
        }
    }
    if convs.len() != table.len() {
        // Extra convs: point at the first one; missing convs have no line to point at.
        let (line, extra) = match convs.get(table.len()) {
            Some(c) => (
                Some(c.line),
                format!(" (conv {} is the first extra one)", table.len()),
            ),
            None => (None, String::new()),
        };
        return Err(cfg_err(
            path,
            line,
            format!(
                "the cfg has {} convolutions, {} has {}{extra}",
                convs.len(),
                cfg.describe(),
                table.len()
            ),
        ));
    }
    Ok(())
}

/// Reads `cfg_path`, checks it describes the model `cfg` (see [`check_cfg_matches`]), then loads
/// `weights_path` with [`load_darknet_weights`].
pub fn load_darknet_weights_with_cfg(
    varmap: &VarMap,
    cfg: &YoloConfig,
    cfg_path: &Path,
    weights_path: &Path,
) -> Result<LoadReport, ModelError> {
    let text = std::fs::read_to_string(cfg_path).map_err(|e| ModelError::io(cfg_path, e))?;
    // A leading UTF-8 byte order mark (Windows editors) is not part of the first section name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let sections = parse_cfg(text, cfg_path)?;
    let convs = cfg_convs(&sections, cfg_path)?;
    check_cfg_matches(cfg, &convs, cfg_path)?;
    load_darknet_weights(varmap, cfg, weights_path)
}

/// keras-yolo3's default anchors (`model_data/yolo_anchors.txt`, `tiny_yolo_anchors.txt`).
fn default_anchors(variant: Variant) -> &'static str {
    match variant {
        Variant::YoloV3 => "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326",
        Variant::Tiny => "10,14, 23,27, 37,58, 81,82, 135,169, 344,319",
    }
}

/// Writes cfg sections; the `[convolutional]` ones take their filters, size, stride and
/// BatchNorm from [`conv_table`], in order, so the cfg cannot disagree with the model.
struct CfgWriter {
    text: String,
    layers: usize,
    convs: std::vec::IntoIter<ConvSpec>,
}

impl CfgWriter {
    fn section(&mut self, name: &str, options: &[(&str, String)]) -> usize {
        let _ = writeln!(self.text, "\n[{name}]");
        for (k, v) in options {
            let _ = writeln!(self.text, "{k}={v}");
        }
        self.layers += 1;
        self.layers - 1
    }

    /// The next conv of the table as a `[convolutional]` section.
    fn conv(&mut self) -> usize {
        let c = self
            .convs
            .next()
            .expect("the cfg layout has no more convs than the conv table");
        let (filters, size, stride, bn) = (c.filters, c.size, c.stride, c.batch_norm);
        let mut o = vec![];
        if bn {
            o.push(("batch_normalize", "1".to_string()));
        }
        o.extend([
            ("filters", filters.to_string()),
            ("size", size.to_string()),
            ("stride", stride.to_string()),
            ("pad", "1".to_string()),
            (
                "activation",
                if bn { "leaky" } else { "linear" }.to_string(),
            ),
        ]);
        self.section("convolutional", &o)
    }

    fn yolo(&mut self, cfg: &YoloConfig, mask: &str) {
        let num = cfg.num_anchors * cfg.num_layers();
        self.section(
            "yolo",
            &[
                ("mask", mask.to_string()),
                ("anchors", default_anchors(cfg.variant).to_string()),
                ("classes", cfg.num_classes.to_string()),
                ("num", num.to_string()),
            ],
        );
    }
}

/// The darknet cfg of the model `cfg` describes (the layer structure of `yolov3.cfg` /
/// `yolov3-tiny.cfg` with `cfg.num_classes` classes and keras-yolo3's default anchors, 416x416
/// input, no training options). Used to export a `.weights` file darknet can read, and as the
/// embedded description of the layer order.
pub fn darknet_cfg(cfg: &YoloConfig) -> String {
    let mut w = CfgWriter {
        text: String::from("[net]\nwidth=416\nheight=416\nchannels=3\n"),
        layers: 0,
        convs: conv_table(cfg).into_iter(),
    };
    match cfg.variant {
        Variant::YoloV3 => {
            w.conv();
            // Layer index of each residual stage's last shortcut (its output).
            let mut stage_out = Vec::new();
            for &(_, n) in DARKNET53_STAGES.iter() {
                w.conv();
                let mut last = 0;
                for _ in 0..n {
                    w.conv();
                    w.conv();
                    let shortcut = [("from", "-3".into()), ("activation", "linear".into())];
                    last = w.section("shortcut", &shortcut);
                }
                stage_out.push(last);
            }
            let skips = [0, stage_out[3], stage_out[2]];
            let masks = ["6,7,8", "3,4,5", "0,1,2"];
            for l in 0..V3_NECK_FILTERS.len() {
                if l > 0 {
                    w.section("route", &[("layers", "-4".into())]);
                    w.conv();
                    w.section("upsample", &[("stride", "2".into())]);
                    w.section("route", &[("layers", format!("-1, {}", skips[l]))]);
                }
                // make_last_layers' five convs (1x1, 3x3, 1x1, 3x3, 1x1) and the 3x3 before the
                // output: three 1x1/3x3 pairs.
                for _ in 0..3 {
                    w.conv();
                    w.conv();
                }
                w.conv();
                w.yolo(cfg, masks[l]);
            }
        }
        Variant::Tiny => {
            // Convs 0..=4, each followed by a 2x2 stride-2 pool; conv 4 is layer 8, the route
            // target of the upsampling branch.
            for _ in TINY_BACKBONE_FILTERS {
                w.conv();
                w.section("maxpool", &[("size", "2".into()), ("stride", "2".into())]);
            }
            w.conv();
            w.section("maxpool", &[("size", "2".into()), ("stride", "1".into())]);
            w.conv();
            w.conv();
            w.conv();
            w.conv();
            w.yolo(cfg, "3,4,5");
            w.section("route", &[("layers", "-4".into())]);
            w.conv();
            w.section("upsample", &[("stride", "2".into())]);
            w.section("route", &[("layers", "-1, 8".into())]);
            w.conv();
            w.conv();
            w.yolo(cfg, "1,2,3");
        }
    }
    debug_assert!(
        w.convs.next().is_none(),
        "every conv of the table is written"
    );
    w.text
}
