//! `yolov3`: a YOLOv3 trainer on candle, re-creating keras-yolo3's `train_bottleneck.py`.
//!
//! This facade re-exports the workspace crates so that benches, integration tests and users can
//! depend on one package:
//! - [`data`]: annotation lines, `get_random_data`, `preprocess_true_boxes`, loaders, converters.
//! - [`model`]: `yolo_body`, `tiny_yolo_body`, freezable groups, darknet and safetensors weights.
//! - [`kernels`]: the network's differentiable CPU kernels (convolution, fused BatchNorm + leaky).
//! - [`loss`]: `yolo_head`, `box_iou`, `yolo_loss`.
//! - [`eval`]: `yolo_eval` post-processing, non-maximum suppression, VOC and COCO mAP.
//! - [`train`]: the three-phase schedule, Adam, callbacks, checkpoints and resume.

pub use yolo_data as data;
pub use yolo_eval as eval;
pub use yolo_kernels as kernels;
pub use yolo_loss as loss;
pub use yolo_model as model;
pub use yolo_train as train;
