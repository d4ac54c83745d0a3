//! The schedule as data: what each phase of a run trains, on what, and what follows it.
//!
//! [`plan`] reads like keras-yolo3's `train_bottleneck.py` (lines 47-106): stage 0 caches the
//! frozen body's outputs once and trains the last layers on them, stage 1 trains the same layers
//! on augmented images with the body frozen, stage 2 unfreezes everything and adds
//! ReduceLROnPlateau and EarlyStopping. An optional from-scratch phase can come first. The
//! trainer runs the plans in order and asks them, never the phase's name, what to do.

use yolo_model::FreezeBody;

use crate::config::{PhaseConfig, PhaseKind, TrainConfig};

/// Where a phase's training and validation batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource {
    /// The frozen body's outputs, computed once into the on-disk bottleneck cache (never
    /// augmented); only the output convs run.
    BottleneckCache,
    /// Images through the loader (augmented when the phase's `augment` is on); the whole model
    /// runs.
    Images,
}

/// Which weights an epoch's `ModelCheckpoint` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointScope {
    /// Every variable of the model.
    All,
    /// Only the variables the phase trains (the rest is the unchanged initial weights).
    Trained,
}

/// One phase of the run as the trainer runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    /// Which phase.
    pub kind: PhaseKind,
    /// Its settings: epochs, batch size, learning rate and its schedule, shuffling, augmentation,
    /// time budget.
    pub config: PhaseConfig,
    /// What is frozen (keras-yolo3's `freeze_body`).
    pub freeze: FreezeBody,
    /// Where its batches come from.
    pub data: DataSource,
    /// Whether ReduceLROnPlateau and EarlyStopping watch its `val_loss`.
    pub plateau_and_early_stopping: bool,
    /// Whether the BatchNorm moving statistics are re-estimated when it ends.
    pub recalibrate_bn_after: bool,
    /// The seed of its data order (and augmentation).
    pub seed: u64,
    /// What its epoch checkpoints hold.
    pub checkpoints: CheckpointScope,
    /// Whether an mAP-monitored `best.safetensors` is compared only at its last epoch (phases
    /// of many short epochs, or of a model still far from any best), not after each epoch.
    pub best_map_at_end_only: bool,
}

impl PhasePlan {
    /// The plan's phase number of epochs (`N` of `epoch E/N`).
    pub fn count(&self) -> usize {
        self.config.count()
    }
}

/// The enabled phases of `cfg`, in running order.
pub fn plan(cfg: &TrainConfig) -> Vec<PhasePlan> {
    PhaseKind::ALL
        .into_iter()
        .filter(|&kind| cfg.phase(kind).enabled)
        .map(|kind| phase_plan(cfg, kind))
        .collect()
}

/// The plan of one phase, enabled or not.
pub fn phase_plan(cfg: &TrainConfig, kind: PhaseKind) -> PhasePlan {
    let config = cfg.phase(kind).clone();
    // Each image phase draws its own data order and augmentation.
    let image_seed = cfg.seed.wrapping_add(1 + kind as u64);
    let base = PhasePlan {
        kind,
        freeze: config.freeze_body,
        data: DataSource::Images,
        plateau_and_early_stopping: config.plateau_and_early_stopping,
        recalibrate_bn_after: false,
        seed: image_seed,
        checkpoints: CheckpointScope::All,
        best_map_at_end_only: false,
        config,
    };
    match kind {
        // Before the schedule proper (not in keras-yolo3): every layer from the initial weights,
        // on a time budget. Keras' BatchNorm momentum leaves the moving statistics behind the
        // weights, which the inference-mode phases after it see: they are re-estimated.
        PhaseKind::Scratch => PhasePlan {
            recalibrate_bn_after: cfg.recalibrate_bn_batches > 0,
            best_map_at_end_only: true,
            ..base
        },
        // Stage 0: `bottleneck_model.predict_generator` once into the cache, then
        // `last_layer_model.fit` on it: freeze_body=2 whatever the phase table says (validation
        // insists on 2), the cache's own order from the run's seed, checkpoints of the output
        // convs alone.
        PhaseKind::Bottleneck => PhasePlan {
            freeze: FreezeBody::AllButOutputs,
            data: DataSource::BottleneckCache,
            seed: cfg.seed,
            checkpoints: CheckpointScope::Trained,
            best_map_at_end_only: true,
            ..base
        },
        // Stage 1: `model.fit_generator` on augmented images, body frozen (freeze_body=2).
        // Stage 2: everything unfrozen, a fresh Adam, ReduceLROnPlateau and EarlyStopping.
        PhaseKind::Frozen | PhaseKind::Unfreeze => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(plans: &[PhasePlan]) -> Vec<PhaseKind> {
        plans.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn default_config_gives_train_bottleneck_py_stages() {
        let cfg = TrainConfig::default();
        let plans = plan(&cfg);
        assert_eq!(
            kinds(&plans),
            [
                PhaseKind::Bottleneck,
                PhaseKind::Frozen,
                PhaseKind::Unfreeze
            ]
        );
        let [b, f, u] = [&plans[0], &plans[1], &plans[2]];
        // (Keras epochs, batch, lr) of stage 0, 1, 2.
        let shape = |p: &PhasePlan| {
            (
                p.config.initial_epoch..p.config.epochs,
                p.config.batch_size,
                p.config.lr,
            )
        };
        assert_eq!(shape(b), (0..30, 8, 1e-3));
        assert_eq!(shape(f), (0..50, 16, 1e-3));
        assert_eq!(shape(u), (50..100, 4, 1e-4));
        assert_eq!(
            [b.freeze, f.freeze, u.freeze],
            [
                FreezeBody::AllButOutputs,
                FreezeBody::AllButOutputs,
                FreezeBody::None
            ]
        );
        assert_eq!(
            [b.data, f.data, u.data],
            [
                DataSource::BottleneckCache,
                DataSource::Images,
                DataSource::Images
            ]
        );
        // Callbacks on `val_loss` in stage 2 only.
        assert_eq!(
            [
                b.plateau_and_early_stopping,
                f.plateau_and_early_stopping,
                u.plateau_and_early_stopping
            ],
            [false, false, true]
        );
        assert!(plans.iter().all(|p| !p.recalibrate_bn_after));
        assert_eq!(b.checkpoints, CheckpointScope::Trained);
        assert_eq!(
            [f.checkpoints, u.checkpoints],
            [CheckpointScope::All, CheckpointScope::All]
        );
        assert_eq!(
            [
                b.best_map_at_end_only,
                f.best_map_at_end_only,
                u.best_map_at_end_only
            ],
            [true, false, false]
        );
    }

    #[test]
    fn disabled_phases_are_left_out_and_scratch_comes_first() {
        let mut cfg = TrainConfig::default();
        cfg.bottleneck.enabled = false;
        assert_eq!(kinds(&plan(&cfg)), [PhaseKind::Frozen, PhaseKind::Unfreeze]);
        cfg.scratch.enabled = true;
        cfg.unfreeze.enabled = false;
        assert_eq!(kinds(&plan(&cfg)), [PhaseKind::Scratch, PhaseKind::Frozen]);
        for k in PhaseKind::ALL {
            cfg.phase_mut(k).enabled = false;
        }
        assert!(plan(&cfg).is_empty());
    }

    #[test]
    fn what_differs_per_phase() {
        let mut cfg = TrainConfig {
            seed: 7,
            ..TrainConfig::default()
        };
        cfg.scratch.enabled = true;
        cfg.frozen.freeze_body = FreezeBody::Body;
        let plans = plan(&cfg);
        let seeds: Vec<u64> = plans.iter().map(|p| p.seed).collect();
        // The cache's order from the run's seed; each image phase its own.
        assert_eq!(seeds, [8, 7, 10, 11]);
        let s = &plans[0];
        assert_eq!(s.kind, PhaseKind::Scratch);
        assert_eq!((s.freeze, s.data), (FreezeBody::None, DataSource::Images));
        assert!(s.recalibrate_bn_after && s.best_map_at_end_only);
        assert!(!s.plateau_and_early_stopping);
        cfg.recalibrate_bn_batches = 0;
        assert!(!phase_plan(&cfg, PhaseKind::Scratch).recalibrate_bn_after);
        // The frozen phase follows its table; the plateau flag too.
        assert_eq!(plans[2].freeze, FreezeBody::Body);
        cfg.frozen.plateau_and_early_stopping = true;
        assert!(phase_plan(&cfg, PhaseKind::Frozen).plateau_and_early_stopping);
        // The phase's own settings travel with the plan.
        cfg.unfreeze.batch_size = 2;
        cfg.unfreeze.max_seconds = Some(60.0);
        let u = phase_plan(&cfg, PhaseKind::Unfreeze);
        assert_eq!(u.config, cfg.unfreeze);
        assert_eq!(u.count(), 50);
    }

    #[test]
    fn freeze_levels_are_keras_integers_and_the_bottleneck_is_always_2() {
        let load = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            TrainConfig::load(None, &o)
        };
        // Read and written as keras-yolo3's integers, so existing config.toml files still load.
        let cfg = load(&["frozen.freeze_body=1"]).unwrap();
        assert_eq!(cfg.frozen.freeze_body, FreezeBody::Body);
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("freeze_body = 1"), "{text}");
        assert!(text.contains("freeze_body = 2"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.toml");
        std::fs::write(&f, &text).unwrap();
        assert_eq!(TrainConfig::load(Some(&f), &[]).unwrap(), cfg);
        assert!(load(&["frozen.freeze_body=3"]).is_err());
        // The cache is the frozen body's output: any other level would be silently ignored.
        let err = load(&["bottleneck.freeze_body=0"]).unwrap_err().to_string();
        assert!(err.contains("bottleneck.freeze_body 0 must be 2"), "{err}");
        assert!(load(&["bottleneck.freeze_body=0", "bottleneck.enabled=false"]).is_ok());
    }
}
