//! Per-epoch metrics: one row per epoch, kept in the run state and rewritten atomically as
//! `metrics.csv` after every epoch (so a crash never leaves a torn row).
//!
//! `metrics.csv` names each epoch twice: `epoch` is Keras' absolute 0-based epoch (as in
//! `state.json`, checkpoint names and the `stop_after` setting), and `phase_epoch` is the
//! 1-based epoch within its phase, the `E` of the `PHASE epoch E/N` log lines, the progress line
//! and `--stop-after PHASE:E`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::atomic_write;
use crate::config::{PhaseKind, TrainConfig};
use crate::error::Result;

/// Loss and its components, each a mean over the epoch's steps (keras-yolo3 sums over the batch
/// and divides by the batch size, so these are per image).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossStats {
    /// The optimised loss (yolo_loss total + L2 penalty).
    pub total: f64,
    /// xy term.
    pub xy: f64,
    /// wh term.
    pub wh: f64,
    /// Objectness term.
    pub confidence: f64,
    /// Class term.
    pub class: f64,
    /// L2 penalty on the trainable kernels.
    pub l2: f64,
}

impl LossStats {
    /// Adds `other` into `self` (for averaging).
    pub fn add(&mut self, o: &LossStats) {
        self.total += o.total;
        self.xy += o.xy;
        self.wh += o.wh;
        self.confidence += o.confidence;
        self.class += o.class;
        self.l2 += o.l2;
    }

    /// Divides every field by `n` (no-op for 0).
    pub fn scale(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let k = 1.0 / n as f64;
        self.total *= k;
        self.xy *= k;
        self.wh *= k;
        self.confidence *= k;
        self.class *= k;
        self.l2 *= k;
    }
}

/// One epoch's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Phase name.
    pub phase: String,
    /// 0-based Keras epoch (absolute: a phase runs `initial_epoch..epochs`); see
    /// [`EpochRecord::phase_epoch`] for the 1-based epoch within the phase that users see.
    pub epoch: usize,
    /// Training loss means.
    pub train: LossStats,
    /// Validation loss means.
    pub val: LossStats,
    /// LR used during the epoch.
    pub lr: f64,
    /// Training images per second.
    pub images_per_sec: f64,
    /// Wall time of the epoch (training, validation, and mAP when computed after it).
    pub seconds: f64,
    /// VOC mAP@0.5 on the validation set, when computed (end of phase, every `map_every`-th
    /// epoch, and the epochs a `checkpoint_monitor = "map"` checkpoint compares).
    pub map: Option<f64>,
}

impl EpochRecord {
    /// The 1-based epoch within its phase (`epoch - initial_epoch + 1`), as the log lines, the
    /// progress line and `metrics.csv`'s `phase_epoch` column number it.
    pub fn phase_epoch(&self, initial_epoch: usize) -> usize {
        self.epoch.saturating_sub(initial_epoch) + 1
    }
}

/// The CSV header line: `epoch` is the 0-based Keras epoch, `phase_epoch` the 1-based epoch
/// within the phase.
pub const CSV_HEADER: &str = "phase,epoch,phase_epoch,loss,loss_xy,loss_wh,loss_confidence,loss_class,loss_l2,val_loss,val_xy,val_wh,val_confidence,val_class,lr,images_per_sec,seconds,map";

/// Renders all rows as CSV; `cfg` gives each phase's `initial_epoch` for `phase_epoch` (0 for
/// a phase name it does not know).
pub fn to_csv(rows: &[EpochRecord], cfg: &TrainConfig) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in rows {
        let t = &r.train;
        let v = &r.val;
        let initial = PhaseKind::parse(&r.phase).map_or(0, |p| cfg.phase(p).initial_epoch);
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:e},{:.3},{:.3},{}",
            r.phase,
            r.epoch,
            r.phase_epoch(initial),
            t.total,
            t.xy,
            t.wh,
            t.confidence,
            t.class,
            t.l2,
            v.total,
            v.xy,
            v.wh,
            v.confidence,
            v.class,
            r.lr,
            r.images_per_sec,
            r.seconds,
            r.map.map(|m| format!("{m:.6}")).unwrap_or_default()
        );
    }
    s
}

/// Atomically writes `rows` as `path` (see [`to_csv`]).
pub fn write_csv(path: &Path, rows: &[EpochRecord], cfg: &TrainConfig) -> Result<()> {
    atomic_write(path, to_csv(rows, cfg).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_one_line_per_epoch_with_every_column() {
        let mut r = EpochRecord {
            phase: "frozen".into(),
            epoch: 3,
            train: LossStats {
                total: 12.5,
                xy: 1.0,
                wh: 2.0,
                confidence: 3.0,
                class: 4.0,
                l2: 2.5,
            },
            val: LossStats {
                total: 13.0,
                ..Default::default()
            },
            lr: 1e-3,
            images_per_sec: 10.0,
            seconds: 2.0,
            map: None,
        };
        let mut rows = vec![r.clone()];
        r.epoch = 4;
        r.map = Some(0.8125);
        rows.push(r);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        let mut cfg = TrainConfig::default();
        cfg.frozen.initial_epoch = 2;
        write_csv(&p, &rows, &cfg).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let ncol = CSV_HEADER.split(',').count();
        assert_eq!(ncol, 18);
        for l in &lines {
            assert_eq!(l.split(',').count(), ncol, "{l}");
        }
        assert!(
            lines[1].starts_with("frozen,3,2,12.5,1,2,3,4,2.5,13,"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with(','), "no map: {}", lines[1]);
        assert!(lines[2].starts_with("frozen,4,3,"), "{}", lines[2]);
        assert!(lines[2].ends_with(",0.812500"), "{}", lines[2]);
    }

    #[test]
    fn phase_epoch_is_one_based_within_the_phase() {
        let r = EpochRecord {
            phase: "unfreeze".into(),
            epoch: 50,
            train: LossStats::default(),
            val: LossStats::default(),
            lr: 1e-4,
            images_per_sec: 1.0,
            seconds: 1.0,
            map: None,
        };
        assert_eq!(r.phase_epoch(50), 1);
        assert_eq!(r.phase_epoch(0), 51);
        let mut cfg = TrainConfig::default();
        cfg.unfreeze.initial_epoch = 50;
        let csv = to_csv(&[r], &cfg);
        let row = csv.lines().nth(1).unwrap();
        assert!(row.starts_with("unfreeze,50,1,"), "{row}");
    }

    #[test]
    fn loss_stats_average() {
        let mut a = LossStats {
            total: 2.0,
            xy: 1.0,
            ..Default::default()
        };
        a.add(&LossStats {
            total: 4.0,
            xy: 3.0,
            ..Default::default()
        });
        a.scale(2);
        assert_eq!((a.total, a.xy), (3.0, 2.0));
    }
}
