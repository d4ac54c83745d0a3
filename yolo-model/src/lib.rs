//! keras-yolo3's networks on candle: `yolo_body` (Darknet-53 + three-scale head) and
//! `tiny_yolo_body`, with Keras-style BatchNorm, freezable parameter groups mirroring
//! train_bottleneck.py's `freeze_body`, the bottleneck split, the L2 kernel penalty, darknet
//! `.weights` import/export and safetensors checkpoints.
//!
//! Layout is NCHW; raw outputs are `(m, A*(5+C), gh, gw)`, index 0 = stride 32. Variable names are
//! documented in [`architecture`] (one scheme for checkpoints, darknet import/export and groups).
//!
//! # Where things are
//!
//! * Darknet-53 body, neck and three-scale head, and tiny: [`mod@yolo_body`]
//!   ([`YoloBody::forward_backbone`] is Darknet-53, [`YoloBody::forward_neck`] the rest up to the
//!   output convs), built from the two conv blocks of [`conv_block`] and the Keras BatchNorm layer
//!   of [`batch_norm`]; the model configuration is [`config`].
//! * The layer table, every conv of both networks in darknet order with its variable names and
//!   FLOPs, Darknet-53's stages included: [`architecture`].
//! * The freeze split (parameter groups, trainable variables, L2 penalty): [`groups`].
//! * The model factory [`YoloBody::build`] and the seeded Glorot initialiser: [`mod@init`].
//! * Weight I/O: darknet `.weights` in [`darknet_weights`], darknet `.cfg` in
//!   [`mod@darknet_cfg`], safetensors checkpoints in [`checkpoint`]; conversion between the two
//!   formats, the class count a file holds and the initial-weights fit check in [`weights_io`];
//!   errors in [`error`].
//! * `--device` parsing, shared by training and detection: [`mod@device`].
//! * Mixed precision (f32 variables, bf16/f16 convolutions): [`mod@precision`],
//!   [`YoloBody::with_precision`].
//! * The tensor kernels (convolution, fused BatchNorm + leaky ReLU, ...) live in the
//!   `yolo_kernels` crate, re-exported here as [`ops`]; this crate has no `unsafe` code.
//!
//! # Semantics worth knowing
//!
//! * **BatchNorm** is Keras' (epsilon 1e-3, momentum 0.99): training mode normalises with the batch
//!   mean and biased variance and updates the moving statistics, which are `Var`s in the `VarMap`
//!   (`*.bn.running_mean`, `*.bn.running_var`) so checkpoints carry them; [`trainable_vars`] never
//!   returns them. The variance entering the moving average is Keras 2.1.5's
//!   `var * n / (n - 1 - eps)` (tf.keras/TF2 use the biased `var`, candle `n / (n - 1)`); see
//!   [`batch_norm`].
//! * **Freezing** ([`FreezeBody`], keras-yolo3's `freeze_body`): the frozen prefix runs BatchNorm in
//!   inference mode and its output is detached (no gradient graph, statistics fixed); frozen
//!   groups are simply absent from [`trainable_vars`], so an optimizer built on them holds no state
//!   for them. Keras 2.1.5 differed: a `trainable = False` BatchNormalization still normalised
//!   with batch statistics during `fit`. We follow the bottleneck features (computed in inference
//!   mode by train_bottleneck.py) and TF2. Details in [`mod@yolo_body`].
//! * **L2**: [`l2_penalty`] is Keras' `l2(5e-4)` kernel regulariser restricted to trainable groups
//!   (frozen kernels contribute only a constant in Keras).
//! * **Weights**: darknet `.weights` in cfg order ([`darknet_weights`], [`conv_table`]), with
//!   partial files such as `darknet53.conv.74`, and full files of another class count (an 80-class
//!   `yolov3.weights` into a 1-class model: the file's class count is solved from its float count,
//!   the body is loaded and the output convs are skipped and reported with both shapes, as
//!   keras-yolo3's `convert.py` + `load_weights(by_name=True, skip_mismatch=True)` does);
//!   safetensors checkpoints with a by-name partial loader that skips and reports shape mismatches
//!   ([`load_checkpoint_partial`], Keras' `skip_mismatch`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use yolo_model::{tiny_yolo_body, trainable_vars, FreezeBody, YoloConfig};
//!
//! let cfg = YoloConfig::tiny(3);
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = tiny_yolo_body(&cfg, vb)?;
//! let x = Tensor::zeros((1, 3, 64, 96), DType::F32, &Device::Cpu)?;
//! let outs = model.forward_t(&x, true, FreezeBody::AllButOutputs)?;
//! assert_eq!(outs[0].dims(), &[1, 24, 2, 3]);
//! assert_eq!(outs[1].dims(), &[1, 24, 4, 6]);
//! // Only the two output convs (weight + bias each) train under freeze_body=2.
//! assert_eq!(trainable_vars(&varmap, &cfg, FreezeBody::AllButOutputs).len(), 4);
//! # Ok::<(), candle_core::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod architecture;
pub mod batch_norm;
pub mod checkpoint;
pub mod config;
pub mod conv_block;
pub mod darknet_cfg;
pub mod darknet_weights;
pub mod device;
pub mod error;
pub mod groups;
pub mod init;
pub mod precision;
pub mod weights_io;
pub mod yolo_body;

pub use architecture::{conv_table, flops, model_variables, ConvSpec};
pub use batch_norm::{with_bn_momentum, KerasBatchNorm, BN_EPSILON, BN_MOMENTUM};
pub use checkpoint::{
    load_checkpoint_partial, save_checkpoint, save_checkpoint_subset, LoadReport,
};
pub use config::{FreezeBody, Variant, YoloConfig};
pub use conv_block::{ConvBnLeaky, OutputConv, LEAKY_SLOPE};
pub use darknet_cfg::{
    cfg_convs, check_cfg_matches, darknet_cfg, load_darknet_weights_with_cfg, parse_cfg, CfgConv,
    CfgSection, SectionKind,
};
pub use darknet_weights::{
    infer_file_filters, load_darknet_weights, save_darknet_weights, DarknetHeader,
};
pub use device::parse_device;
pub use error::ModelError;
pub use groups::{
    group_of, is_bn_running_stat, is_conv_kernel, is_output_conv, l2_penalty, trainable_vars,
    ParamGroup,
};
pub use init::seeded_glorot_init;
pub use precision::Precision;
pub use weights_io::{
    check_weights_fit, checkpoint_class_count, checkpoint_header, convert_weights,
    darknet_class_count, is_darknet_weights, Converted, GivenClasses, WeightsFormat,
};
pub use yolo_body::{tiny_yolo_body, yolo_body, YoloBody};
/// The tensor kernels the network is made of (the `yolo_kernels` crate).
pub use yolo_kernels as ops;
