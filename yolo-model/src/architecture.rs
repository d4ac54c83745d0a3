//! The conv layers of both networks as data, in darknet order.
//!
//! Darknet order is the order of the `[convolutional]` sections of `yolov3.cfg` /
//! `yolov3-tiny.cfg`, which is also the order in which keras-yolo3's `yolo_body` /
//! `tiny_yolo_body` *create* their Conv2D layers (and so the order `convert.py` reads a `.weights`
//! file in). Note that Keras' `model.layers` is ordered by graph depth, not creation: in tiny the
//! 128-filter conv of the upsampling branch (darknet conv 10) comes before convs 8 and 9 there.
//!
//! # Variable names
//!
//! One scheme for everything (checkpoints, darknet import/export, freezing groups):
//!
//! | YOLOv3 conv (darknet index) | name |
//! |---|---|
//! | 0: first 3x3, 32 filters | `backbone.conv0` |
//! | stride-2 conv opening residual stage `s` (1..=5: 64, 128, 256, 512, 1024 filters) | `backbone.stage{s}.down` |
//! | residual block `b` (0-based; 1, 2, 8, 8, 4 per stage): 1x1 then 3x3 | `backbone.stage{s}.block{b}.conv1`, `.conv2` |
//! | `make_last_layers` of scale `l` (0 = stride 32, 1 = 16, 2 = 8): five alternating 1x1/3x3 convs, then the 3x3 before the output | `neck.s{l}.conv0` .. `neck.s{l}.conv5` |
//! | 1x1 conv before the upsampling that feeds scale `l` (1, 2) | `neck.s{l}.up` |
//! | output conv of scale `l` | `head.out{l}` |
//!
//! | tiny conv (darknet index) | name |
//! |---|---|
//! | 0..=4 (16, 32, 64, 128, 256 filters, each followed by a 2x2 max pool but the last) | `backbone.conv0` .. `backbone.conv4` |
//! | 5, 6, 7 (512 3x3, 1024 3x3, 256 1x1) | `neck.conv5`, `neck.conv6`, `neck.conv7` |
//! | 8 (512 3x3 before output 0) | `neck.s0.conv0` |
//! | 9, 12 (outputs) | `head.out0`, `head.out1` |
//! | 10 (128 1x1 before the upsampling) | `neck.s1.up` |
//! | 11 (256 3x3 before output 1) | `neck.s1.conv0` |
//!
//! A conv block `{name}` holds `{name}.conv.weight` (OIHW) and
//! `{name}.bn.{weight,bias,running_mean,running_var}` (gamma, beta, moving mean, moving
//! variance); an output conv `head.out{l}` holds `head.out{l}.weight` and `head.out{l}.bias`.

use crate::config::{Variant, YoloConfig};

/// One convolution of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvSpec {
    /// Block name (variable prefix), see the module docs.
    pub name: String,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub filters: usize,
    /// Kernel size (square).
    pub size: usize,
    /// Conv stride (1 or 2).
    pub stride: usize,
    /// BatchNorm + LeakyReLU follow (false only for the output convs, which have a bias).
    pub batch_norm: bool,
    /// Downsampling factor of this conv's output relative to the network input.
    pub out_stride: usize,
}

impl ConvSpec {
    /// Number of kernel values.
    pub fn kernel_len(&self) -> usize {
        self.filters * self.c_in * self.size * self.size
    }

    /// Number of floats this conv takes in a darknet `.weights` file
    /// (`4 * filters` BN values or `filters` biases, plus the kernel).
    pub fn darknet_floats(&self) -> usize {
        let per_filter = if self.batch_norm { 4 } else { 1 };
        per_filter * self.filters + self.kernel_len()
    }

    /// The variables of this conv with their shapes, in darknet file order (BN beta, gamma, mean,
    /// variance, then the OIHW kernel; or bias then kernel for an output conv).
    pub fn variables(&self) -> Vec<(String, Vec<usize>)> {
        let n = &self.name;
        let f = self.filters;
        let kernel = vec![f, self.c_in, self.size, self.size];
        if self.batch_norm {
            vec![
                (format!("{n}.bn.bias"), vec![f]),
                (format!("{n}.bn.weight"), vec![f]),
                (format!("{n}.bn.running_mean"), vec![f]),
                (format!("{n}.bn.running_var"), vec![f]),
                (format!("{n}.conv.weight"), kernel),
            ]
        } else {
            vec![
                (format!("{n}.bias"), vec![f]),
                (format!("{n}.weight"), kernel),
            ]
        }
    }
}

/// Every variable of the model `cfg` describes (what a checkpoint of it holds), with its shape,
/// in darknet order; computed from [`conv_table`] without building the model.
pub fn model_variables(cfg: &YoloConfig) -> Vec<(String, Vec<usize>)> {
    conv_table(cfg)
        .iter()
        .flat_map(ConvSpec::variables)
        .collect()
}

struct Builder(Vec<ConvSpec>);

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        name: String,
        c_in: usize,
        filters: usize,
        size: usize,
        stride: usize,
        batch_norm: bool,
        out_stride: usize,
    ) {
        self.0.push(ConvSpec {
            name,
            c_in,
            filters,
            size,
            stride,
            batch_norm,
            out_stride,
        });
    }
}

/// Residual stages of Darknet-53: (filters, blocks).
pub(crate) const DARKNET53_STAGES: [(usize, usize); 5] =
    [(64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)];

/// Filters of tiny's first five convs (each followed by a 2x2 max pool but the last).
pub(crate) const TINY_BACKBONE_FILTERS: [usize; 5] = [16, 32, 64, 128, 256];

/// Filters of `make_last_layers` per scale (`num_filters`; the 3x3 convs use twice as many).
pub(crate) const V3_NECK_FILTERS: [usize; 3] = [512, 256, 128];

/// Every conv of the network described by `cfg`, in darknet (cfg / `.weights`) order.
pub fn conv_table(cfg: &YoloConfig) -> Vec<ConvSpec> {
    let out = cfg.out_channels();
    let mut b = Builder(Vec::new());
    match cfg.variant {
        Variant::YoloV3 => {
            b.push("backbone.conv0".into(), 3, 32, 3, 1, true, 1);
            let (mut c, mut s) = (32, 1);
            for (i, &(f, n)) in DARKNET53_STAGES.iter().enumerate() {
                s *= 2;
                let st = format!("backbone.stage{}", i + 1);
                b.push(format!("{st}.down"), c, f, 3, 2, true, s);
                for k in 0..n {
                    b.push(format!("{st}.block{k}.conv1"), f, f / 2, 1, 1, true, s);
                    b.push(format!("{st}.block{k}.conv2"), f / 2, f, 3, 1, true, s);
                }
                c = f;
            }
            // Skip inputs: stage 4 (512 ch) for scale 1, stage 3 (256 ch) for scale 2.
            let skips = [0, 512, 256];
            let mut c_in = 1024;
            let mut s = 32;
            for l in 0..V3_NECK_FILTERS.len() {
                let nf = V3_NECK_FILTERS[l];
                if l > 0 {
                    let prev = V3_NECK_FILTERS[l - 1];
                    b.push(format!("neck.s{l}.up"), prev, nf, 1, 1, true, s);
                    s /= 2;
                    c_in = nf + skips[l];
                }
                let p = format!("neck.s{l}");
                b.push(format!("{p}.conv0"), c_in, nf, 1, 1, true, s);
                b.push(format!("{p}.conv1"), nf, 2 * nf, 3, 1, true, s);
                b.push(format!("{p}.conv2"), 2 * nf, nf, 1, 1, true, s);
                b.push(format!("{p}.conv3"), nf, 2 * nf, 3, 1, true, s);
                b.push(format!("{p}.conv4"), 2 * nf, nf, 1, 1, true, s);
                b.push(format!("{p}.conv5"), nf, 2 * nf, 3, 1, true, s);
                b.push(format!("head.out{l}"), 2 * nf, out, 1, 1, false, s);
            }
        }
        Variant::Tiny => {
            let mut c = 3;
            for (i, &f) in TINY_BACKBONE_FILTERS.iter().enumerate() {
                b.push(format!("backbone.conv{i}"), c, f, 3, 1, true, 1 << i);
                c = f;
            }
            b.push("neck.conv5".into(), 256, 512, 3, 1, true, 32);
            b.push("neck.conv6".into(), 512, 1024, 3, 1, true, 32);
            b.push("neck.conv7".into(), 1024, 256, 1, 1, true, 32);
            b.push("neck.s0.conv0".into(), 256, 512, 3, 1, true, 32);
            b.push("head.out0".into(), 512, out, 1, 1, false, 32);
            b.push("neck.s1.up".into(), 256, 128, 1, 1, true, 32);
            b.push("neck.s1.conv0".into(), 128 + 256, 256, 3, 1, true, 16);
            b.push("head.out1".into(), 256, out, 1, 1, false, 16);
        }
    }
    b.0
}

/// Floating-point operations of one forward pass of one image of size `h x w` (multiples of 32),
/// counting a multiply-add as 2 and only the convolutions (BatchNorm, activations, pooling and
/// upsampling add well under 1 %). About 65.9 GFLOP for YOLOv3 (80 classes) at 416x416 and
/// 5.6 GFLOP for tiny.
pub fn flops(cfg: &YoloConfig, h: usize, w: usize) -> f64 {
    conv_table(cfg)
        .iter()
        .map(|c| {
            let pixels = (h / c.out_stride) * (w / c.out_stride);
            2.0 * (c.c_in * c.size * c.size * c.filters * pixels) as f64
        })
        .sum()
}
