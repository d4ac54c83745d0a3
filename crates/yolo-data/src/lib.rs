//! yolo-data (work in progress).
