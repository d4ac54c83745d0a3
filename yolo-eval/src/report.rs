//! Both evaluations together: the JSON document written by `yolo eval --json` and the per-class
//! AP table it prints.
//!
//! JSON shape: `{"voc": {"map", "map_11", "ap": {class: x}, "ap_11": {...}}, "coco": {"stats": [12],
//! "ap": {...}, "ap50": {...}}}`. VOC APs of classes without non-difficult objects are `null`;
//! COCO values of classes without non-crowd objects are `-1`, as COCOeval reports them.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::coco::{coco_evaluate, CocoResult, STATS_NAMES};
use crate::dataset::EvalSet;
use crate::voc::{voc_evaluate, VocResult};

/// VOC (IoU 0.5) and COCO results for one evaluation set.
#[derive(Debug, Clone, PartialEq)]
pub struct MapReport {
    /// Class names, indexed by class id.
    pub classes: Vec<String>,
    /// PASCAL VOC results at IoU 0.5.
    pub voc: VocResult,
    /// COCOeval results.
    pub coco: CocoResult,
}

impl MapReport {
    /// Runs both evaluators on `set`.
    pub fn evaluate(set: &EvalSet) -> Self {
        let classes = (0..set.num_classes()).map(|k| set.class_name(k)).collect();
        MapReport {
            classes,
            voc: voc_evaluate(set, 0.5),
            coco: coco_evaluate(set),
        }
    }

    /// The JSON document described in the module docs.
    pub fn to_json(&self) -> Value {
        let per_class = |f: &dyn Fn(usize) -> Value| -> Value {
            let mut m = Map::new();
            for (k, name) in self.classes.iter().enumerate() {
                m.insert(name.clone(), f(k));
            }
            Value::Object(m)
        };
        json!({
            "voc": {
                "map": self.voc.map_all_point,
                "map_11": self.voc.map_11_point,
                "ap": per_class(&|k| json!(self.voc.per_class[k].ap_all_point)),
                "ap_11": per_class(&|k| json!(self.voc.per_class[k].ap_11_point)),
            },
            "coco": {
                "stats": self.coco.stats.to_vec(),
                "ap": per_class(&|k| json!(self.coco.per_class[k].ap)),
                "ap50": per_class(&|k| json!(self.coco.per_class[k].ap50)),
            }
        })
    }

    /// A plain-text table: one row per class with its object count, VOC AP (all-point or 11-point
    /// as chosen), COCO AP and AP50; then the means and COCO's 12 statistics.
    pub fn table(&self, voc11: bool) -> String {
        let voc_name = if voc11 { "VOC AP50 (11pt)" } else { "VOC AP50" };
        let width = self
            .classes
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<width$}  {:>6}  {:>15}  {:>9}  {:>9}",
            "class", "objects", voc_name, "COCO AP", "COCO AP50"
        );
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        let fmt_coco = |v: f64| {
            if v < 0.0 {
                "-".to_string()
            } else {
                format!("{v:.4}")
            }
        };
        for (k, name) in self.classes.iter().enumerate() {
            let v = &self.voc.per_class[k];
            let c = &self.coco.per_class[k];
            let ap = if voc11 { v.ap_11_point } else { v.ap_all_point };
            let _ = writeln!(
                s,
                "{:<width$}  {:>7}  {:>15}  {:>9}  {:>9}",
                name,
                v.npos,
                fmt(ap),
                fmt_coco(c.ap),
                fmt_coco(c.ap50)
            );
        }
        let map = if voc11 {
            self.voc.map_11_point
        } else {
            self.voc.map_all_point
        };
        let _ = writeln!(
            s,
            "{:<width$}  {:>7}  {:>15}  {:>9}  {:>9}",
            "mAP",
            "",
            format!("{map:.4}"),
            fmt_coco(self.coco.stats[0]),
            fmt_coco(self.coco.stats[1])
        );
        let _ = writeln!(s);
        for (name, v) in STATS_NAMES.iter().zip(self.coco.stats.iter()) {
            let _ = writeln!(s, "COCO {name:<6} {v:.4}");
        }
        s
    }
}
