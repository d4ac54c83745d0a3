//! Weight conversion between darknet `.weights` and safetensors checkpoints (`yolo convert`): the
//! code lives in `yolo_model::weights_io` (it knows nothing about training) and is re-exported
//! here under its old path.

pub use yolo_model::weights_io::{
    checkpoint_class_count, checkpoint_header, convert_weights, darknet_class_count, Converted,
    GivenClasses, WeightsFormat,
};
