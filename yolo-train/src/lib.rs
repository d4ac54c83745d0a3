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
pub mod schedule;
pub mod trainer;

// Configuration, run state and the run folder.
pub mod config;
pub mod run_dir;
pub mod state;

// Optimisation: Adam, learning-rate schedules, callbacks, weights average.
pub mod adam;
pub mod adam_cpu;
pub mod callbacks;
pub mod ema;
pub mod lr_schedule;

// Data: the dataset, its split, the bottleneck cache.
pub mod bottleneck;
pub mod cache;
pub mod dataset;
pub mod split;

// Models: initialisation, where weights come from, conversion, best model.
pub mod best_model;
pub mod convert;
pub mod init;
pub mod model_source;

// What a run reports: metrics, plots, progress, evaluation.
pub mod evaluate;
pub mod metrics;
pub mod plot;
pub mod progress;

// Around training: devices, interruption, atomic writes, errors.
pub mod atomic;
pub mod device;
pub mod error;
pub mod interrupt;

// Tools built on the trainer: benchmark, demo, seed study.
pub mod bench;
pub mod demo;
pub mod seed_study;

pub use adam::{Adam, AdamConfig};
pub use atomic::atomic_write;
pub use bench::{
    default_cases, gemm_reference_gflops, run_case, BenchCase, BenchKind, BenchResult,
};
pub use best_model::{BestModel, BestMonitor};
pub use cache::{BottleneckCache, CacheEntry, CacheHeader, CacheWriter, Fingerprint};
pub use callbacks::{
    CheckpointMonitor, EarlyStopping, ModelCheckpoint, MonitorMode, ReduceLrOnPlateau,
};
pub use config::{toml_quote, CacheDtype, PhaseConfig, PhaseKind, StopAfter, TrainConfig};
pub use dataset::{DataCheck, Dataset, SKIPPED_SAMPLES_FILE};
pub use device::{parse_device, set_generic_ops};
pub use ema::Ema;
pub use error::{Result, TrainError};
pub use interrupt::{clear_stop, request_stop, stop_requested};
pub use lr_schedule::{lr_at, LrSchedule, PhaseSchedule, ScheduleSpec};
pub use metrics::{EpochRecord, LossStats};
pub use model_source::{ModelRequest, ModelSource, Origins, BEST_WEIGHTS};
pub use open::{load_initial_weights, stderr_log};
pub use schedule::{plan, CheckpointScope, DataSource, PhasePlan};
pub use seed_study::{
    mean_sd, run_seed_study, summarize, write_study, MeanSd, SeedRun, StudySummary,
};
pub use split::{split_train_val, Mt19937};
pub use state::RunState;
pub use trainer::{RunOutcome, Trainer};
