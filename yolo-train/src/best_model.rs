//! The run's best model, `best.safetensors`: the weights of the epoch with the best validation
//! score over the whole run, all phases compared on the same scale (ultralytics' `best.pt`).
//! keras-yolo3's own `ModelCheckpoint` (period 3, `val_loss`, per phase folder) runs beside it.

use serde::{Deserialize, Serialize};

/// What decides the best model (`best_monitor` in the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestMonitor {
    /// Validation VOC mAP@0.5 as `yolo eval` computes it, higher is better (computed after every
    /// epoch of the image phases and at the end of the bottleneck phase).
    #[default]
    Map,
    /// Validation loss without the L2 term, lower is better. The L2 term covers only the
    /// trainable layers, so with it the unfreeze phase's loss (all layers) is not comparable
    /// with the frozen phases'.
    ValLoss,
    /// No best model.
    Off,
}

impl BestMonitor {
    /// The name used in configuration files and messages.
    pub fn name(self) -> &'static str {
        match self {
            BestMonitor::Map => "map",
            BestMonitor::ValLoss => "val_loss",
            BestMonitor::Off => "off",
        }
    }
}

impl std::fmt::Display for BestMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The best epoch so far (kept in `state.json`, so a resumed run compares with the same best).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestModel {
    /// The monitored quantity.
    pub monitor: BestMonitor,
    /// Its best value.
    pub value: f64,
    /// The phase of the best epoch.
    pub phase: String,
    /// The best epoch, 1-based within its phase.
    pub epoch: usize,
}

impl BestModel {
    /// Whether `value` beats `best` (any finite value beats no best; NaN never does).
    pub fn improves(best: Option<&BestModel>, monitor: BestMonitor, value: f64) -> bool {
        if !value.is_finite() || monitor == BestMonitor::Off {
            return false;
        }
        match best {
            Some(b) if b.monitor == monitor => match monitor {
                BestMonitor::Map => value > b.value,
                _ => value < b.value,
            },
            _ => true,
        }
    }

    /// One line for the log and the run summary.
    pub fn describe(&self) -> String {
        let what = match self.monitor {
            BestMonitor::Map => "val mAP@0.5",
            _ => "val_loss without L2",
        };
        format!(
            "{what} {:.4}, {} epoch {}",
            self.value, self.phase, self.epoch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(monitor: BestMonitor, value: f64) -> BestModel {
        BestModel {
            monitor,
            value,
            phase: "frozen".into(),
            epoch: 3,
        }
    }

    #[test]
    fn map_improves_upwards_val_loss_downwards_nan_and_off_never() {
        use BestMonitor::*;
        assert!(BestModel::improves(None, Map, 0.0));
        assert!(BestModel::improves(Some(&best(Map, 0.5)), Map, 0.51));
        assert!(!BestModel::improves(Some(&best(Map, 0.5)), Map, 0.5));
        assert!(!BestModel::improves(Some(&best(Map, 0.5)), Map, f64::NAN));
        assert!(BestModel::improves(Some(&best(ValLoss, 2.0)), ValLoss, 1.9));
        assert!(!BestModel::improves(
            Some(&best(ValLoss, 2.0)),
            ValLoss,
            2.1
        ));
        // A changed monitor restarts the comparison.
        assert!(BestModel::improves(Some(&best(ValLoss, 0.1)), Map, 0.01));
        assert!(!BestModel::improves(None, Off, 1.0));
        assert_eq!(
            best(Map, 0.51234).describe(),
            "val mAP@0.5 0.5123, frozen epoch 3"
        );
    }
}
