//! The crate's error type: every failure names the file (and where it helps the position and the
//! values involved) so that a user with a wrong weights file can tell what is wrong with it.

use std::path::PathBuf;

/// Errors of weight import/export, checkpoints, cfg parsing and device selection.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape bug, device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A darknet `.weights` file does not hold the number of floats the model needs.
    #[error(
        "{}: darknet weights hold {found} floats after the {header_bytes}-byte header, \
         expected {expected} for {model}{detail}",
        path.display()
    )]
    WeightsSize {
        /// The weights file.
        path: PathBuf,
        /// Header size in bytes (20 when `seen` is an int64, 16 otherwise).
        header_bytes: usize,
        /// Floats the full model needs.
        expected: usize,
        /// Floats found after the header.
        found: usize,
        /// The model description (variant and class count).
        model: String,
        /// Extra context (where the file ends).
        detail: String,
    },

    /// A file has the wrong format (bad header, unreadable safetensors, ...).
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },

    /// A darknet `.cfg` file could not be parsed or does not describe this model.
    #[error("{}{}: {msg}", path.display(), line_suffix(line))]
    Cfg {
        /// The cfg file (or `<embedded>` for generated text).
        path: PathBuf,
        /// 1-based line number; `None` when the problem is not tied to one line.
        line: Option<usize>,
        /// What is wrong.
        msg: String,
    },

    /// A checkpoint tensor named like a model variable is stored with a dtype no weight has.
    #[error(
        "{}: tensor {tensor} has dtype {found}, expected a float dtype ({expected})",
        path.display()
    )]
    Dtype {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor (= variable) name.
        tensor: String,
        /// The dtype in the file (`I64`, `U8`, `BOOL`, ...).
        found: String,
        /// The dtypes accepted.
        expected: &'static str,
    },

    /// Weights given to initialise a model do not fit it (another variant's checkpoint, or one
    /// whose names are not this crate's).
    #[error("{}: {msg}", path.display())]
    WrongWeights {
        /// The weights file.
        path: PathBuf,
        /// What was expected and what the file holds.
        msg: String,
    },

    /// The requested device is unknown or not compiled into this binary.
    #[error("device {0}")]
    Device(String),

    /// A precision name other than `f32`, `bf16` or `f16`.
    #[error("precision `{0}` is not one of f32, bf16, f16")]
    Precision(String),
}

/// `:N` for a known 1-based line, nothing otherwise.
fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn format(path: &std::path::Path, msg: impl Into<String>) -> Self {
        ModelError::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
