//! keras-yolo3's `yolo_head`, `box_iou` and `yolo_loss` on candle.
//!
//! The functions follow `yolo3/model.py` of qqwweee/keras-yolo3 formula for formula, with the
//! numerically safe forms keras-yolo3 lacks (stable sigmoid cross-entropy, the size target's log
//! guarded before it is taken). Raw network outputs are NCHW `(m, A*(5+C), gh, gw)`, channel
//! `a*(5+C) + f`; everything returned to callers is in Keras layout `(m, gh, gw, A, k)`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use yolo_loss::yolo_head;
//!
//! // One image, 3 anchors, 1 class, a 2x3 grid of an input 64 high and 96 wide.
//! let raw = Tensor::zeros((1, 3 * 6, 2, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let head = yolo_head(&raw, &[[10., 13.], [16., 30.], [33., 23.]], 1, (64, 96))?;
//! assert_eq!(head.box_xy.dims(), &[1, 2, 3, 3, 2]);
//! // sigmoid(0) = 0.5: the first cell's centre is half a cell in: (0.5 / 3, 0.5 / 2).
//! let xy = head.box_xy.flatten_all()?.to_vec1::<f32>()?;
//! assert!((xy[0] - 0.5 / 3.0).abs() < 1e-7 && (xy[1] - 0.25).abs() < 1e-7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The loss of a tiny-YOLO batch (2 outputs, 6 anchors) with no object at all is the no-object
//! cross-entropy of every slot: with all logits 0, `log 2` per slot.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use yolo_loss::{yolo_loss, LossConfig};
//!
//! let dev = Device::Cpu;
//! // 1 image, 1 class: outputs (1, 3*6, 1, 1) and (1, 3*6, 2, 2) for a 32x32 input.
//! let outputs = [
//!     Tensor::zeros((1, 18, 1, 1), DType::F32, &dev)?,
//!     Tensor::zeros((1, 18, 2, 2), DType::F32, &dev)?,
//! ];
//! let y_true = [
//!     Tensor::zeros((1, 1, 1, 3, 6), DType::F32, &dev)?,
//!     Tensor::zeros((1, 2, 2, 3, 6), DType::F32, &dev)?,
//! ];
//! let anchors = [[10., 14.], [23., 27.], [37., 58.], [81., 82.], [135., 169.], [344., 319.]];
//! let parts = yolo_loss(&outputs, &y_true, &anchors, 1, &LossConfig::default())?;
//! let values = parts.values()?;
//! assert!((values.total - 15.0 * 2f32.ln()).abs() < 1e-5);
//! assert_eq!(values.xy, vec![0.0, 0.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On the CPU `yolo_loss` runs a fused kernel with its own backward (the loss only reads the
//! objectness channel of most slots); [`yolo_loss_tensor_ops`] is the same loss written with
//! candle tensor operations, used on other devices and as the readable reference.
//!
//! The tensor-op loss gathers the true boxes of each image by the anchor slots that hold an
//! object ([`ObjectSlots`]). A trainer that builds `y_true` on the host lists them there and calls
//! [`yolo_loss_with_objects`], so a GPU step never waits on a copy back; [`yolo_loss`] reads them
//! from `y_true`'s objectness instead (one device-to-host copy per call off the CPU).
//!
//! Two options beyond keras-yolo3, both off by default ([`LossConfig`]): label smoothing of the
//! class targets (both paths), and a GIoU / CIoU box term ([`BoxLoss`], [`box_giou`],
//! [`box_ciou`]) that always runs the tensor-op path, differentiated by candle's autograd.

mod box_loss;
mod config;
mod cpu;
mod error;
mod head;
mod iou;
mod layer;
mod loss;
mod objects;
mod tensor_loss;

pub use box_loss::{box_ciou, box_giou};
pub use config::{anchor_mask, BoxLoss, LossConfig};
pub use error::LossError;
pub use head::{yolo_head, YoloHead};
pub use iou::box_iou;
pub use loss::{
    generic_ops, set_generic_ops, yolo_loss, yolo_loss_tensor_ops,
    yolo_loss_tensor_ops_with_objects, yolo_loss_with_objects, LossParts, LossValues,
};
pub use objects::ObjectSlots;
