//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in post-processing, evaluation, reading inputs and drawing.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A tensor operation failed (shape mismatch, device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Decoding a raw output layer failed (wrong channel count for the anchors and classes).
    #[error(transparent)]
    Loss(#[from] yolo_loss::LossError),
    /// Reading an input (annotations, classes, anchors, an image) failed.
    #[error(transparent)]
    Data(#[from] yolo_data::DataError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file was read but its content is not what was expected. `line` is 1-based when known.
    #[error("{path}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number, when the format is line-oriented.
        line: Option<usize>,
        /// What is wrong, naming the offending value.
        msg: String,
    },
    /// The arguments of a function are inconsistent (e.g. the wrong number of output layers).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// An image could not be encoded or decoded.
    #[error("{path}: {source}")]
    Image {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
}

impl EvalError {
    /// Builds a [`EvalError::Parse`] for `path`.
    pub fn parse(path: impl Into<PathBuf>, line: Option<usize>, msg: impl Into<String>) -> Self {
        EvalError::Parse {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }

    /// Builds a [`EvalError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
