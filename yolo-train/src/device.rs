//! Devices: `--device` parsing (from `yolo_model`, re-exported here) and the switch that forces
//! the device-generic code path.

pub use yolo_model::parse_device;

/// The one switch that forces the device-generic code path (candle's own ops: the convolutions,
/// BatchNorm, leaky ReLU, the tensor-op loss, the L2 sum and Adam's composed update, as CUDA and
/// Metal run them) on the CPU for the whole process, or turns it off again. The environment
/// variable `YOLO_GENERIC_OPS=1` sets it at start.
pub fn set_generic_ops(on: bool) {
    yolo_model::ops::set_generic_ops(on);
    yolo_loss::set_generic_ops(on);
}
