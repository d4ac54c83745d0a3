//! yolo-model (work in progress).
