//! Plain data that the mAP evaluators take: images, ground-truth objects and scored detections.
//!
//! Boxes are corner coordinates in pixels (`x_min, y_min, x_max, y_max`) in `f64`. Each evaluator
//! applies its own box convention (VOC adds one pixel to widths, COCO does not), so the same data
//! can be fed to both.

/// One image of an evaluation set.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalImage {
    /// Identifier that ground truth and detections refer to.
    pub id: u64,
    /// File name (used to match detections given by file name, and in messages).
    pub file_name: String,
    /// Width in pixels (0 when unknown).
    pub width: u32,
    /// Height in pixels (0 when unknown).
    pub height: u32,
}

/// One ground-truth object.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// Image the object belongs to.
    pub image_id: u64,
    /// 0-based class index.
    pub class_id: usize,
    /// Left edge in pixels.
    pub x_min: f64,
    /// Top edge in pixels.
    pub y_min: f64,
    /// Right edge in pixels.
    pub x_max: f64,
    /// Bottom edge in pixels.
    pub y_max: f64,
    /// VOC `difficult`: ignored by the VOC evaluator, an ordinary object for COCO.
    pub difficult: bool,
    /// COCO `iscrowd`: a crowd region for the COCO evaluator, an ordinary object for VOC.
    pub iscrowd: bool,
    /// COCO `area` used to sort objects into size ranges; `None` means the box's `w * h`.
    pub area: Option<f64>,
}

impl GroundTruth {
    /// An ordinary (not difficult, not crowd) object.
    pub fn new(
        image_id: u64,
        class_id: usize,
        x_min: f64,
        y_min: f64,
        x_max: f64,
        y_max: f64,
    ) -> Self {
        GroundTruth {
            image_id,
            class_id,
            x_min,
            y_min,
            x_max,
            y_max,
            difficult: false,
            iscrowd: false,
            area: None,
        }
    }

    /// The area COCOeval sorts this object by: the given `area`, else `w * h` without +1.
    pub fn coco_area(&self) -> f64 {
        self.area
            .unwrap_or((self.x_max - self.x_min) * (self.y_max - self.y_min))
    }
}

/// One scored detection.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredBox {
    /// Image the detection belongs to.
    pub image_id: u64,
    /// 0-based class index.
    pub class_id: usize,
    /// Left edge in pixels.
    pub x_min: f64,
    /// Top edge in pixels.
    pub y_min: f64,
    /// Right edge in pixels.
    pub x_max: f64,
    /// Bottom edge in pixels.
    pub y_max: f64,
    /// Confidence; higher ranks first.
    pub score: f64,
}

/// A complete evaluation case: class names, images, ground truth and detections.
///
/// The order of `detections` matters only between equal scores: COCO breaks such ties by ascending
/// image id and then by position in this list (see `fixtures/map/README.md`, "Ties").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalSet {
    /// Class names; class ids index this list.
    pub classes: Vec<String>,
    /// Every image of the set, including those without objects.
    pub images: Vec<EvalImage>,
    /// Ground-truth objects.
    pub ground_truth: Vec<GroundTruth>,
    /// Scored detections.
    pub detections: Vec<ScoredBox>,
}

/// Stable sort of indices by descending score (ties keep their input order).
pub(crate) fn order_by_descending_score(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

impl EvalSet {
    /// Number of classes evaluated: `classes.len()`, or more if the data uses a larger class id.
    pub fn num_classes(&self) -> usize {
        let max_gt = self.ground_truth.iter().map(|g| g.class_id + 1).max();
        let max_dt = self.detections.iter().map(|d| d.class_id + 1).max();
        self.classes
            .len()
            .max(max_gt.unwrap_or(0))
            .max(max_dt.unwrap_or(0))
    }

    /// The name of class `id`, or `class_<id>` when the set has no name for it.
    pub fn class_name(&self, id: usize) -> String {
        self.classes
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("class_{id}"))
    }
}
