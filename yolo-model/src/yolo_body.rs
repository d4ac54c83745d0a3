//! `yolo_body` (YOLOv3: Darknet-53 + three-scale head) and `tiny_yolo_body`, as keras-yolo3's
//! `yolo3/model.py` builds them, in NCHW.
//!
//! YOLOv3: Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018, arXiv:1804.02767.
//!
//! The forward pass is split at the two seams keras-yolo3's freezing uses:
//! backbone (Darknet-53, or tiny's first five conv blocks) → neck (everything up to the inputs of
//! the output convs: the "bottleneck" features train_bottleneck.py caches) → output convs.
//!
//! # Freezing, compared with Keras 2.1.5
//!
//! `forward_t(x, train, freeze)` runs the frozen prefix with BatchNorm in inference mode and
//! detaches its output, so no gradient graph is built for it and its moving statistics never
//! change. In Keras 2.1.5, a layer with `trainable = False` only loses its weight updates and its
//! update ops (`Layer.updates` is empty for a non-trainable, non-stateful layer, so the moving
//! statistics stay fixed), but a frozen BatchNormalization still normalised with the *batch*
//! statistics during `fit`, since the learning phase was 1. We deliberately run frozen BN in
//! inference mode instead: that is what train_bottleneck.py's cached features are (computed with
//! `predict`, i.e. inference mode), what TF2 / tf.keras does for `trainable = False`
//! BatchNormalization, and what makes a frozen prefix a fixed function.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::architecture::{
    conv_table, ConvSpec, DARKNET53_STAGES, TINY_BACKBONE_FILTERS, V3_NECK_FILTERS,
};
use crate::config::{FreezeBody, Variant, YoloConfig};
use crate::conv_block::{ConvBnLeaky, OutputConv};
use crate::precision::Precision;
use yolo_kernels as ops;

/// Builds blocks by name from the conv table, so the model and the table cannot disagree.
struct Blocks<'a> {
    specs: HashMap<String, ConvSpec>,
    vb: VarBuilder<'a>,
}

impl<'a> Blocks<'a> {
    fn new(cfg: &YoloConfig, vb: VarBuilder<'a>) -> Self {
        let specs = conv_table(cfg)
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        Self { specs, vb }
    }

    fn spec(&self, name: &str) -> Result<&ConvSpec> {
        self.specs
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no conv named {name} in the table")))
    }

    fn cbl(&self, name: &str) -> Result<ConvBnLeaky> {
        let s = self.spec(name)?;
        ConvBnLeaky::new(s.c_in, s.filters, s.size, s.stride, self.vb.pp(name))
    }

    fn out(&self, name: &str) -> Result<OutputConv> {
        let s = self.spec(name)?;
        OutputConv::new(s.c_in, s.filters, self.vb.pp(name))
    }
}

#[derive(Debug, Clone)]
struct ResStage {
    down: ConvBnLeaky,
    blocks: Vec<(ConvBnLeaky, ConvBnLeaky)>,
}

/// One scale of the YOLOv3 head: optional 1x1 + upsample from the coarser scale, then the six
/// `make_last_layers` conv blocks (the last is the 3x3 before the output conv).
#[derive(Debug, Clone)]
struct V3Scale {
    up: Option<ConvBnLeaky>,
    convs: Vec<ConvBnLeaky>,
}

#[derive(Debug, Clone)]
struct V3Net {
    stem: ConvBnLeaky,
    stages: Vec<ResStage>,
    scales: Vec<V3Scale>,
}

#[derive(Debug, Clone)]
struct TinyNet {
    backbone: Vec<ConvBnLeaky>,
    conv5: ConvBnLeaky,
    conv6: ConvBnLeaky,
    conv7: ConvBnLeaky,
    s0: ConvBnLeaky,
    s1_up: ConvBnLeaky,
    s1: ConvBnLeaky,
}

#[derive(Debug, Clone)]
enum Net {
    V3(V3Net),
    Tiny(Box<TinyNet>),
}

/// YOLOv3 or tiny YOLOv3, built from a [`VarBuilder`] (a `VarMap` for training, or any other
/// backend for inference). Outputs are raw NCHW maps `(m, A*(5+C), gh, gw)`, index 0 = stride 32.
#[derive(Debug, Clone)]
pub struct YoloBody {
    cfg: YoloConfig,
    net: Net,
    heads: Vec<OutputConv>,
    precision: Precision,
}

/// keras-yolo3's `yolo_body(inputs, num_anchors, num_classes)`: Darknet-53 and the three-scale
/// head. `cfg.variant` must be [`Variant::YoloV3`].
pub fn yolo_body(cfg: &YoloConfig, vb: VarBuilder) -> Result<YoloBody> {
    if cfg.variant != Variant::YoloV3 {
        candle_core::bail!("yolo_body needs a YoloV3 config, got {}", cfg.describe());
    }
    YoloBody::new(cfg, vb)
}

/// keras-yolo3's `tiny_yolo_body(inputs, num_anchors, num_classes)`. `cfg.variant` must be
/// [`Variant::Tiny`].
pub fn tiny_yolo_body(cfg: &YoloConfig, vb: VarBuilder) -> Result<YoloBody> {
    if cfg.variant != Variant::Tiny {
        candle_core::bail!("tiny_yolo_body needs a Tiny config, got {}", cfg.describe());
    }
    YoloBody::new(cfg, vb)
}

fn concat_channels(upsampled: &Tensor, skip: &Tensor) -> Result<Tensor> {
    // keras-yolo3 concatenates the upsampled tensor first, then the skip tensor.
    Tensor::cat(&[upsampled, skip], 1)
}

impl YoloBody {
    /// Builds the network `cfg` describes (either variant), creating or reading its variables
    /// under the names documented in [`crate::architecture`].
    pub fn new(cfg: &YoloConfig, vb: VarBuilder) -> Result<Self> {
        let b = Blocks::new(cfg, vb);
        let net = match cfg.variant {
            Variant::YoloV3 => {
                let stem = b.cbl("backbone.conv0")?;
                let mut stages = Vec::new();
                for (i, &(_, n)) in DARKNET53_STAGES.iter().enumerate() {
                    let st = format!("backbone.stage{}", i + 1);
                    let down = b.cbl(&format!("{st}.down"))?;
                    let blocks = (0..n)
                        .map(|k| {
                            Ok((
                                b.cbl(&format!("{st}.block{k}.conv1"))?,
                                b.cbl(&format!("{st}.block{k}.conv2"))?,
                            ))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    stages.push(ResStage { down, blocks });
                }
                let mut scales = Vec::new();
                for l in 0..V3_NECK_FILTERS.len() {
                    let up = if l > 0 {
                        Some(b.cbl(&format!("neck.s{l}.up"))?)
                    } else {
                        None
                    };
                    let convs = (0..6)
                        .map(|j| b.cbl(&format!("neck.s{l}.conv{j}")))
                        .collect::<Result<Vec<_>>>()?;
                    scales.push(V3Scale { up, convs });
                }
                Net::V3(V3Net {
                    stem,
                    stages,
                    scales,
                })
            }
            Variant::Tiny => Net::Tiny(Box::new(TinyNet {
                backbone: (0..TINY_BACKBONE_FILTERS.len())
                    .map(|i| b.cbl(&format!("backbone.conv{i}")))
                    .collect::<Result<Vec<_>>>()?,
                conv5: b.cbl("neck.conv5")?,
                conv6: b.cbl("neck.conv6")?,
                conv7: b.cbl("neck.conv7")?,
                s0: b.cbl("neck.s0.conv0")?,
                s1_up: b.cbl("neck.s1.up")?,
                s1: b.cbl("neck.s1.conv0")?,
            })),
        };
        let heads = (0..cfg.num_layers())
            .map(|l| b.out(&format!("head.out{l}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: *cfg,
            net,
            heads,
            precision: Precision::F32,
        })
    }

    /// This body computing in `precision` (see [`crate::precision`]): the variables are shared
    /// and stay f32; only the dtype the convolutions run in changes. The outputs of
    /// [`YoloBody::forward_t`], [`YoloBody::forward_last`] and [`YoloBody::forward_bottleneck`]
    /// are f32 in every precision; [`YoloBody::forward_backbone`] and
    /// [`YoloBody::forward_neck`] return maps in the compute dtype.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        let dt = precision.dtype();
        let convs: Vec<&mut ConvBnLeaky> = match &mut self.net {
            Net::V3(n) => std::iter::once(&mut n.stem)
                .chain(n.stages.iter_mut().flat_map(|st| {
                    std::iter::once(&mut st.down)
                        .chain(st.blocks.iter_mut().flat_map(|(a, b)| [a, b]))
                }))
                .chain(
                    n.scales
                        .iter_mut()
                        .flat_map(|sc| sc.up.iter_mut().chain(sc.convs.iter_mut())),
                )
                .collect(),
            Net::Tiny(n) => {
                let TinyNet {
                    backbone,
                    conv5,
                    conv6,
                    conv7,
                    s0,
                    s1_up,
                    s1,
                } = n.as_mut();
                backbone
                    .iter_mut()
                    .chain([conv5, conv6, conv7, s0, s1_up, s1])
                    .collect()
            }
        };
        for c in convs {
            c.set_compute_dtype(dt);
        }
        for h in &mut self.heads {
            h.set_compute_dtype(dt);
        }
        self.precision = precision;
        self
    }

    /// The precision this body computes in ([`Precision::F32`] unless
    /// [`YoloBody::with_precision`] changed it).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The configuration this body was built with.
    pub fn config(&self) -> &YoloConfig {
        &self.cfg
    }

    fn check_input(x: &Tensor) -> Result<()> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h == 0 || w == 0 || h % 32 != 0 || w % 32 != 0 {
            candle_core::bail!(
                "YOLO input must be (m, 3, h, w) with h and w positive multiples of 32, got {:?}",
                x.shape()
            );
        }
        Ok(())
    }

    /// The backbone: Darknet-53's outputs `[stage 3 (256 ch, stride 8), stage 4 (512, 16),
    /// stage 5 (1024, 32)]` for YOLOv3 (keras `darknet.layers[92]`, `[152]`, `darknet.output`),
    /// or `[conv4 (256 ch, stride 16)]` for tiny. This is the prefix `freeze_body=1` freezes.
    pub fn forward_backbone(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        Self::check_input(x)?;
        match &self.net {
            Net::V3(n) => {
                let mut x = n.stem.forward_t(x, train)?;
                let mut feats = Vec::with_capacity(3);
                for (i, st) in n.stages.iter().enumerate() {
                    x = st.down.forward_t(&x, train)?;
                    for (c1, c2) in &st.blocks {
                        let y = c2.forward_t(&c1.forward_t(&x, train)?, train)?;
                        x = (x + y)?;
                    }
                    if i >= 2 {
                        feats.push(x.clone());
                    }
                }
                Ok(feats)
            }
            Net::Tiny(n) => {
                let mut x = x.clone();
                for (i, c) in n.backbone.iter().enumerate() {
                    if i > 0 {
                        x = ops::max_pool2x2(&x)?;
                    }
                    x = c.forward_t(&x, train)?;
                }
                Ok(vec![x])
            }
        }
    }

    /// The neck: from the backbone outputs to the bottleneck features (the inputs of the output
    /// convs), index 0 = stride 32.
    pub fn forward_neck(&self, backbone: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        // Maps from elsewhere (f32 ones into a 16-bit body) join the compute dtype. In f32 the
        // maps keep their dtype (an f64 body, as some tests build, stays f64).
        let cast;
        let backbone = if self.precision.is_mixed() {
            let dt = self.precision.dtype();
            cast = backbone
                .iter()
                .map(|t| t.to_dtype(dt))
                .collect::<Result<Vec<_>>>()?;
            cast.as_slice()
        } else {
            backbone
        };
        match &self.net {
            Net::V3(n) => {
                let [c3, c4, c5] = backbone else {
                    candle_core::bail!("YOLOv3 neck takes 3 backbone maps, got {}", backbone.len());
                };
                let skips = [None, Some(c4), Some(c3)];
                let mut feats = Vec::with_capacity(3);
                let mut x = c5.clone();
                for (scale, skip) in n.scales.iter().zip(skips) {
                    if let (Some(up), Some(skip)) = (&scale.up, skip) {
                        let u = ops::upsample2x(&up.forward_t(&x, train)?)?;
                        x = concat_channels(&u, skip)?;
                    }
                    for c in &scale.convs[..5] {
                        x = c.forward_t(&x, train)?;
                    }
                    feats.push(scale.convs[5].forward_t(&x, train)?);
                }
                Ok(feats)
            }
            Net::Tiny(n) => {
                let [x1] = backbone else {
                    candle_core::bail!("tiny neck takes 1 backbone map, got {}", backbone.len());
                };
                let x = n.conv5.forward_t(&ops::max_pool2x2(x1)?, train)?;
                let x = ops::max_pool_2x2_s1_same(&x)?;
                let x2 = n.conv7.forward_t(&n.conv6.forward_t(&x, train)?, train)?;
                let f0 = n.s0.forward_t(&x2, train)?;
                let u = ops::upsample2x(&n.s1_up.forward_t(&x2, train)?)?;
                let f1 = n.s1.forward_t(&concat_channels(&u, x1)?, train)?;
                Ok(vec![f0, f1])
            }
        }
    }

    /// Training/inference forward pass with keras-yolo3's freezing.
    ///
    /// `train = false`: every BatchNorm in inference mode. `train = true`: the frozen prefix
    /// (`freeze`) runs in inference mode and its output is detached (no gradient graph, no moving
    /// statistics update); the rest runs BatchNorm in training mode. See the module docs for how
    /// this differs from Keras 2.1.5.
    pub fn forward_t(&self, x: &Tensor, train: bool, freeze: FreezeBody) -> Result<Vec<Tensor>> {
        let backbone_train = train && freeze == FreezeBody::None;
        let neck_train = train && freeze != FreezeBody::AllButOutputs;
        let mut b = self.forward_backbone(x, backbone_train)?;
        if freeze >= FreezeBody::Body {
            b = b.iter().map(|t| t.detach()).collect();
        }
        let mut f = self.forward_neck(&b, neck_train)?;
        if freeze == FreezeBody::AllButOutputs {
            f = f.iter().map(|t| t.detach()).collect();
        }
        self.forward_last(&f)
    }

    /// Re-estimates every BatchNorm's moving mean and variance as the average of the batch
    /// statistics over `batches` (the weights do not change). With Keras' momentum 0.99 the
    /// moving statistics trail the weights by about a hundred steps, so after a short training
    /// run from scratch inference mode (frozen layers, the bottleneck cache, validation) would see
    /// statistics of older weights; this aligns them with the current ones.
    pub fn recalibrate_batch_norm(&self, batches: &[Tensor]) -> Result<()> {
        for (k, x) in batches.iter().enumerate() {
            let momentum = k as f64 / (k as f64 + 1.0);
            crate::batch_norm::with_bn_momentum(momentum, || {
                self.forward_t(&x.detach(), true, FreezeBody::None)
                    .map(drop)
            })?;
        }
        Ok(())
    }

    /// Inference-mode forward pass, `forward_t(x, false, FreezeBody::None)`.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_t(x, false, FreezeBody::None)
    }

    /// Inference mode up to the inputs of the output convs: the features train_bottleneck.py
    /// caches (1024, 512, 256 channels for YOLOv3; 512, 256 for tiny), index 0 = stride 32.
    /// The features are f32 in every precision (the cache stores f32 or f16 from them).
    pub fn forward_bottleneck(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let b = self.forward_backbone(x, false)?;
        let f = self.forward_neck(&b, false)?;
        if !self.precision.is_mixed() {
            return Ok(f);
        }
        f.iter().map(|t| t.to_dtype(DType::F32)).collect()
    }

    /// The output convs only, applied to bottleneck features (index 0 = stride 32).
    pub fn forward_last(&self, feats: &[Tensor]) -> Result<Vec<Tensor>> {
        if feats.len() != self.heads.len() {
            candle_core::bail!(
                "forward_last takes {} feature maps, got {}",
                self.heads.len(),
                feats.len()
            );
        }
        self.heads
            .iter()
            .zip(feats)
            .map(|(h, f)| h.forward(f))
            .collect()
    }
}
