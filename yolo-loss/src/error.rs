//! The crate's error type.

/// Errors of `yolo_head`, `box_iou` and `yolo_loss`: wrong shapes or counts in the caller's
/// tensors, or an error from candle itself.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A tensor does not have the shape the function needs; `what` names the argument.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// The argument.
        what: String,
        /// The shape it should have, in words.
        expected: String,
        /// The shape it has.
        got: Vec<usize>,
    },
    /// The number of anchors or outputs does not fit keras-yolo3's layouts (9 anchors for 3
    /// outputs, 6 for 2).
    #[error("{0}")]
    Anchors(String),
    /// The object slots passed to the loss do not fit its layers (count of layers or images, a
    /// slot outside its layer, or slots out of order).
    #[error("{0}")]
    Objects(String),
    /// A tensor has a dtype other than f32.
    #[error("{what}: expected dtype f32, got {got:?}")]
    DType {
        /// The argument.
        what: String,
        /// The dtype it has.
        got: candle_core::DType,
    },
    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
