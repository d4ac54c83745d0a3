//! keras-yolo3's `train_bottleneck.py` schedule on candle, made resumable and observable.
//!
//! Phases (defaults = train_bottleneck.py, all configurable, any one skippable):
//! bottleneck (stage 0: frozen body cached on disk, output convs trained on the cache) →
//! frozen (stage 1: augmented images, `freeze_body=2`) → unfreeze (stage 2: all layers,
//! ReduceLROnPlateau + EarlyStopping). Around them: Keras-exact Adam, atomic checkpoints and
//! `--resume`, per-epoch metrics CSV and loss plot, NaN detection naming the batch.
//!
//! ```
//! use yolo_train::{ReduceLrOnPlateau, TrainConfig};
//!
//! let cfg = TrainConfig::load(None, &["frozen.epochs=5".to_string()])?;
//! assert_eq!((cfg.frozen.epochs, cfg.frozen.batch_size), (5, 16));
//! let mut plateau = ReduceLrOnPlateau::new(cfg.plateau_factor, cfg.plateau_patience, 1e-4);
//! assert_eq!(plateau.on_epoch_end(10.0, 1e-4), None);
//! # Ok::<(), yolo_train::TrainError>(())
//! ```

// The schedule and the loop that runs it: `schedule` (what each phase trains, on what, with which
// callbacks), `trainer` (the loop), `open` (new and resumed runs), `batches` (cached features or
// images), `epoch` (training steps, validation loss), `epoch_end` (the callbacks), `phase_end`
// (BatchNorm recalibration, the phase's weights and mAP), `run_files` (what a run writes, and
// the commit of its state).
mod batches;
mod epoch;
mod epoch_end;
mod open;
mod phase_end;
mod run_files;
mod schedule;
mod trainer;
pub use open::{load_initial_weights, stderr_log};
pub use schedule::{plan, CheckpointScope, DataSource, PhasePlan};
pub use trainer::{RunOutcome, Trainer};

// Configuration, run state and the run folder.
mod config;
mod run_dir;
mod state;
pub use config::{toml_quote, CacheDtype, PhaseConfig, PhaseKind, StopAfter, TrainConfig};
pub use state::RunState;

// Optimisation: Adam, learning-rate schedules, callbacks, weights average, the f16 loss scale.
mod adam;
mod adam_cpu;
mod callbacks;
mod ema;
mod loss_scale;
mod lr_schedule;
pub use adam::{Adam, AdamConfig};
pub use callbacks::{
    CheckpointMonitor, EarlyStopping, ModelCheckpoint, MonitorMode, ReduceLrOnPlateau,
};
pub use ema::{Ema, Swapped};
pub use loss_scale::{
    LossScaler, ScaleStep, GROWTH_INTERVAL, INITIAL_LOSS_SCALE, MAX_LOSS_SCALE, MIN_LOSS_SCALE,
};
pub use lr_schedule::{lr_at, LrSchedule, PhaseSchedule, ScheduleSpec};

// Data: the dataset, its split, the bottleneck cache.
mod bottleneck;
mod cache;
mod dataset;
mod split;
pub use bottleneck::{build_cache, entry_boxes, fingerprint, BUILD_BATCH};
pub use cache::{BottleneckCache, CacheEntry, CacheHeader, CacheWriter, Fingerprint};
pub use dataset::{
    letterbox_batch, y_true_tensors, y_true_with_objects, DataCheck, Dataset, LetterboxBatch,
    SKIPPED_SAMPLES_FILE,
};
pub use split::{split_train_val, Mt19937};

// Models: initialisation, where weights come from, conversion, best model.
mod best_model;
mod convert;
mod init;
mod model_source;
pub use best_model::{BestModel, BestMonitor};
pub use convert::{convert_weights, Converted, GivenClasses, WeightsFormat};
pub use init::seeded_glorot_init;
pub use model_source::{
    read_cfg_model, run_weights, CfgModel, ModelRequest, ModelSource, Origins, BEST_WEIGHTS,
};

// What a run reports: metrics, plots, progress, evaluation.
mod evaluate;
mod metrics;
mod plot;
mod progress;
pub use metrics::{EpochRecord, LossStats};

// Around training: devices, interruption, atomic writes, errors.
mod atomic;
mod device;
mod error;
mod interrupt;
pub use atomic::atomic_write;
pub use device::{parse_device, set_generic_ops};
pub use error::{Result, TrainError};
pub use interrupt::{clear_stop, request_stop, stop_requested};
pub use yolo_model::Precision;

// Tools built on the trainer: benchmark, demo, seed study.
mod bench;
mod demo;
mod seed_study;
pub use bench::{
    default_cases, gemm_reference_gflops, run_case, BenchCase, BenchKind, BenchResult,
};
pub use demo::{run_demo, DemoConfig, DemoReport};
pub use seed_study::{
    describe_run, describe_summary, mean_sd, run_seed_study, summarize, write_study, MeanSd,
    SeedRun, StudySummary,
};
