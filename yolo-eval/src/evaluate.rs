//! mAP of a detector over annotated images, for callers such as a trainer: give it the annotations
//! and a function that detects objects in a batch of images.

use std::path::Path;

use image::RgbImage;
use yolo_data::Annotation;

use crate::coco_results::scored_boxes;
use crate::dataset::EvalSet;
use crate::detection::Detections;
use crate::error::{EvalError, Result};
use crate::ground_truth::{ground_truth_from_annotations, LoadedGroundTruth};
use crate::report::MapReport;

/// Evaluates detections already computed for `gt`'s images: `detections[i]` belongs to the image
/// with id `gt.set.images[i].id`.
pub fn evaluate_detections(gt: &LoadedGroundTruth, detections: &[Detections]) -> Result<MapReport> {
    if detections.len() != gt.set.images.len() {
        return Err(EvalError::Invalid(format!(
            "{} detection lists for {} images",
            detections.len(),
            gt.set.images.len()
        )));
    }
    let mut set: EvalSet = gt.set.clone();
    set.detections = gt
        .set
        .images
        .iter()
        .zip(detections)
        .flat_map(|(im, d)| scored_boxes(im.id, d))
        .collect();
    Ok(MapReport::evaluate(&set))
}

/// Runs `detect` over the images of `annotations` in batches of `batch_size` (images are read with
/// `yolo_data::load_rgb`, paths as written in the annotations) and evaluates the result against
/// their boxes. `report.voc.map_all_point` is the VOC mAP@0.5. `source` names the annotation file
/// in errors (a class id beyond `classes`).
pub fn evaluate_map<F>(
    annotations: &[Annotation],
    classes: &[String],
    source: &Path,
    batch_size: usize,
    mut detect: F,
) -> Result<MapReport>
where
    F: FnMut(&[RgbImage]) -> Result<Vec<Detections>>,
{
    let gt = ground_truth_from_annotations(annotations, classes, source)?;
    let mut detections = Vec::with_capacity(annotations.len());
    for chunk in annotations.chunks(batch_size.max(1)) {
        let images = chunk
            .iter()
            .map(|a| yolo_data::load_rgb(&a.path))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let dets = detect(&images)?;
        if dets.len() != images.len() {
            return Err(EvalError::Invalid(format!(
                "the detector returned {} results for {} images",
                dets.len(),
                images.len()
            )));
        }
        detections.extend(dets);
    }
    evaluate_detections(&gt, &detections)
}
