//! yolo-eval (work in progress).
