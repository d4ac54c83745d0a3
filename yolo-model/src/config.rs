//! Model configuration: which network, how many classes and anchors, and which prefix is frozen.

use serde::{Deserialize, Serialize};

/// Which keras-yolo3 network to build. Written as `"yolov3"` or `"tiny"`; read from those, from
/// `"yolo_v3"` (older files) and from a bool (`tiny = true` in configs that predate the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `yolo_body`: Darknet-53 plus the three-scale head (strides 32, 16, 8).
    YoloV3,
    /// `tiny_yolo_body`: the 13-conv tiny network with two scales (strides 32, 16).
    Tiny,
}

impl Variant {
    /// The variant a `tiny` flag (`--tiny`, `tiny = true`) selects.
    pub fn from_tiny(tiny: bool) -> Self {
        if tiny {
            Variant::Tiny
        } else {
            Variant::YoloV3
        }
    }

    /// The serde name: `yolov3` or `tiny`.
    pub fn key(self) -> &'static str {
        match self {
            Variant::YoloV3 => "yolov3",
            Variant::Tiny => "tiny",
        }
    }

    /// The variant a name (`yolov3`, `yolo_v3`, `v3`, `tiny`, any case) stands for.
    pub fn from_key(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "yolov3" | "yolo_v3" | "yolo-v3" | "v3" => Some(Variant::YoloV3),
            "tiny" | "yolov3-tiny" | "yolov3_tiny" | "tiny_yolov3" => Some(Variant::Tiny),
            _ => None,
        }
    }

    /// The name messages use: `YOLOv3` or `tiny YOLOv3`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::YoloV3 => "YOLOv3",
            Variant::Tiny => "tiny YOLOv3",
        }
    }

    /// The other variant (tiny for YOLOv3 and back).
    pub fn other(self) -> Self {
        match self {
            Variant::YoloV3 => Variant::Tiny,
            Variant::Tiny => Variant::YoloV3,
        }
    }
}

impl Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

impl<'de> Deserialize<'de> for Variant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Variant;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"yolov3\" or \"tiny\" (or a bool: true for tiny)")
            }
            fn visit_bool<E: serde::de::Error>(self, tiny: bool) -> Result<Variant, E> {
                Ok(Variant::from_tiny(tiny))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Variant, E> {
                Variant::from_key(s).ok_or_else(|| {
                    E::custom(format!(
                        "unknown variant `{s}`: expected \"yolov3\" or \"tiny\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Network shape: variant, class count and anchors per output layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct YoloConfig {
    /// Which network.
    pub variant: Variant,
    /// Number of object classes (80 for COCO).
    pub num_classes: usize,
    /// Anchors per output layer (keras-yolo3 always uses 3: 9 anchors / 3 layers, 6 / 2 for tiny).
    pub num_anchors: usize,
}

impl YoloConfig {
    /// The network `variant` with `num_classes` classes and 3 anchors per layer.
    pub fn new(variant: Variant, num_classes: usize) -> Self {
        Self {
            variant,
            num_classes,
            num_anchors: 3,
        }
    }

    /// YOLOv3 (`yolo_body`) with 3 anchors per layer.
    pub fn v3(num_classes: usize) -> Self {
        Self {
            variant: Variant::YoloV3,
            num_classes,
            num_anchors: 3,
        }
    }

    /// Tiny YOLOv3 (`tiny_yolo_body`) with 3 anchors per layer.
    pub fn tiny(num_classes: usize) -> Self {
        Self {
            variant: Variant::Tiny,
            num_classes,
            num_anchors: 3,
        }
    }

    /// Channels of every raw output map: `num_anchors * (5 + num_classes)`.
    pub fn out_channels(&self) -> usize {
        self.num_anchors * (5 + self.num_classes)
    }

    /// Number of output layers (3 for YOLOv3, 2 for tiny).
    pub fn num_layers(&self) -> usize {
        match self.variant {
            Variant::YoloV3 => 3,
            Variant::Tiny => 2,
        }
    }

    /// Channels of the bottleneck features feeding the output convs, index 0 = stride 32.
    pub fn bottleneck_channels(&self) -> Vec<usize> {
        match self.variant {
            Variant::YoloV3 => vec![1024, 512, 256],
            Variant::Tiny => vec![512, 256],
        }
    }

    /// Output strides, index 0 first (32, 16, then 8 for YOLOv3).
    pub fn strides(&self) -> Vec<usize> {
        match self.variant {
            Variant::YoloV3 => vec![32, 16, 8],
            Variant::Tiny => vec![32, 16],
        }
    }

    /// Short description for messages, e.g. `yolov3 (80 classes, 3 anchors/layer)`.
    pub fn describe(&self) -> String {
        let v = match self.variant {
            Variant::YoloV3 => "yolov3",
            Variant::Tiny => "yolov3-tiny",
        };
        format!(
            "{v} ({} classes, {} anchors/layer)",
            self.num_classes, self.num_anchors
        )
    }
}

/// keras-yolo3's `freeze_body` argument: how much of the network is frozen.
///
/// * `None` (0): everything trains.
/// * `Body` (1): the backbone is frozen: Darknet-53 for YOLOv3 (Keras layers `0..185`), the first
///   five conv blocks for tiny (layers `0..20`).
/// * `AllButOutputs` (2): everything except the output convs is frozen (layers `0..len-3`, or
///   `0..len-2` for tiny); this is train_bottleneck.py's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum FreezeBody {
    /// Nothing frozen.
    None = 0,
    /// The backbone frozen.
    Body = 1,
    /// All but the output convs frozen.
    AllButOutputs = 2,
}

impl FreezeBody {
    /// From keras-yolo3's integer level (0, 1 or 2); `None` for any other value.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            0 => Some(FreezeBody::None),
            1 => Some(FreezeBody::Body),
            2 => Some(FreezeBody::AllButOutputs),
            _ => None,
        }
    }

    /// The keras-yolo3 integer level.
    pub fn level(self) -> u8 {
        self as u8
    }
}
