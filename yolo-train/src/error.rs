//! The one error type of the trainer: every failure names the file, phase or value it concerns.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, running or resuming training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration file or value is invalid.
    #[error("config {origin}: {msg}")]
    Config {
        /// Where the configuration came from (a file path or "flags").
        origin: String,
        /// What is wrong.
        msg: String,
    },
    /// A state, checkpoint, metrics or cache file is malformed.
    #[error("{path}: {msg}")]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The loss or a gradient became NaN or infinite: the phase stops, naming the batch.
    #[error(
        "non-finite {what} in phase {phase}, epoch {phase_epoch} (Keras epoch {epoch}), step {step} (value {value}); batch images: {paths:?}"
    )]
    NonFinite {
        /// "loss" or "gradient of <var>".
        what: String,
        /// The phase name.
        phase: String,
        /// The epoch (0-based, Keras numbering).
        epoch: usize,
        /// The epoch as the log shows it: `E/N`, 1-based within the phase.
        phase_epoch: String,
        /// The step within the epoch (0-based).
        step: usize,
        /// The offending value.
        value: f64,
        /// The image paths of the batch.
        paths: Vec<String>,
    },
    /// The data pipeline failed (annotation, image, loader).
    #[error(transparent)]
    Data(#[from] yolo_data::DataError),
    /// The model (building, loading or saving weights) failed.
    #[error(transparent)]
    Model(#[from] yolo_model::ModelError),
    /// The loss failed.
    #[error(transparent)]
    Loss(#[from] yolo_loss::LossError),
    /// Post-processing or evaluation failed.
    #[error(transparent)]
    Eval(#[from] yolo_eval::EvalError),
    /// The dataset is too small for the requested split or batch.
    #[error("dataset: {0}")]
    Dataset(String),
    /// A stop was requested ([`crate::request_stop`]) while this work was in progress; the
    /// trainer turns it into [`crate::RunOutcome::Interrupted`].
    #[error("interrupted during {0}")]
    Interrupted(String),
    /// The annotation file has errors (`yolo check-data`'s report) and `skip_bad` is off.
    #[error("{}", bad_samples_message(.0))]
    BadSamples(Box<yolo_data::CheckReport>),
}

/// Headline (counts and the way out), then the full `yolo check-data` report.
fn bad_samples_message(r: &yolo_data::CheckReport) -> String {
    format!(
        "{}: {} errors on {} of {} lines; fix them or use --skip-bad to drop these samples\n{r}",
        r.file.display(),
        r.error_count(),
        r.bad_lines().len(),
        r.lines
    )
}

impl TrainError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed-file error.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        TrainError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
