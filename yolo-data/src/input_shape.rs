//! The network input size `(h, w)`, height first as in keras-yolo3, validated to be a positive
//! multiple of 32 (the coarsest output stride), so every output grid has integer size.

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Network input size in pixels, height first (keras-yolo3's `input_shape = (h, w)`).
///
/// Both sides are positive multiples of 32; build it with [`InputShape::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "(usize, usize)", into = "(usize, usize)")]
pub struct InputShape {
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
    pub w: usize,
}

impl InputShape {
    /// The largest stride of a YOLOv3 output; both sides must be multiples of it.
    pub const STRIDE: usize = 32;

    /// Validates `(h, w)`: both must be positive multiples of 32.
    pub fn new(h: usize, w: usize) -> Result<Self, DataError> {
        if h == 0 || w == 0 || !h.is_multiple_of(Self::STRIDE) || !w.is_multiple_of(Self::STRIDE) {
            return Err(DataError::InputShape { h, w });
        }
        Ok(Self { h, w })
    }

    /// The square 416x416 input keras-yolo3 trains with.
    pub fn square416() -> Self {
        Self { h: 416, w: 416 }
    }

    /// Output grid `(gh, gw)` of layer `l` (stride `32 >> l`: 32, 16, 8).
    pub fn grid(&self, layer: usize) -> (usize, usize) {
        let stride = Self::STRIDE >> layer;
        (self.h / stride, self.w / stride)
    }
}

impl TryFrom<(usize, usize)> for InputShape {
    type Error = DataError;
    fn try_from((h, w): (usize, usize)) -> Result<Self, DataError> {
        Self::new(h, w)
    }
}

impl From<InputShape> for (usize, usize) {
    fn from(s: InputShape) -> Self {
        (s.h, s.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_multiples_of_32_and_rejects_others() {
        let s = InputShape::new(320, 416).unwrap();
        assert_eq!((s.h, s.w), (320, 416));
        assert_eq!(s.grid(0), (10, 13));
        assert_eq!(s.grid(2), (40, 52));
        for (h, w) in [(0, 416), (416, 0), (415, 416), (416, 100)] {
            let e = InputShape::new(h, w).unwrap_err();
            assert!(e.to_string().contains(&format!("{h}x{w}")), "{e}");
        }
    }

    #[test]
    fn serde_validates() {
        let s: InputShape = serde_json::from_str("[320, 416]").unwrap();
        assert_eq!(s, InputShape { h: 320, w: 416 });
        assert!(serde_json::from_str::<InputShape>("[320, 417]").is_err());
        assert_eq!(serde_json::to_string(&s).unwrap(), "[320,416]");
    }
}
