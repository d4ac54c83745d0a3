//! yolo-loss (work in progress).
