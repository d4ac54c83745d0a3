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

pub mod adam;
pub mod adam_cpu;
pub mod atomic;
pub mod bench;
pub mod best_model;
pub mod bottleneck;
pub mod cache;
pub mod callbacks;
pub mod config;
pub mod convert;
pub mod dataset;
pub mod demo;
pub mod device;
pub mod ema;
pub mod error;
pub mod evaluate;
pub mod init;
pub mod interrupt;
pub mod lr_schedule;
pub mod metrics;
pub mod model_source;
pub mod plot;
pub mod progress;
pub mod run_dir;
pub mod seed_study;
pub mod split;
pub mod state;
pub mod trainer;

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
pub use seed_study::{
    mean_sd, run_seed_study, summarize, write_study, MeanSd, SeedRun, StudySummary,
};
pub use split::{split_train_val, Mt19937};
pub use state::RunState;
pub use trainer::{load_initial_weights, RunOutcome, Trainer};
