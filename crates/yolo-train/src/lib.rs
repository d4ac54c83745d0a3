//! yolo-train (work in progress).
