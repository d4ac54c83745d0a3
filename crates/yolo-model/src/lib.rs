//! yolo-model (work in progress).

pub mod ops;
