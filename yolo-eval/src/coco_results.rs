//! COCO results files (`[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`):
//! writing detections and reading them back against ground truth.
//!
//! Matching images: an integer `image_id` must be one of the ground truth's image ids. A string
//! `image_id` is a file name: it matches the image whose `file_name` is exactly that string, or
//! else the one image whose file name has the same last path component (`dir/a.jpg` matches
//! `a.jpg`); no match, or several by last component, is an error. `yolo detect` writes the image
//! path as given on its command line.

use std::path::Path;

use serde_json::{json, Value};

use crate::dataset::{EvalSet, ScoredBox};
use crate::detection::Detection;
use crate::error::{EvalError, Result};
use crate::ground_truth::LoadedGroundTruth;

/// How a results entry names its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A numeric image id.
    Id(u64),
    /// A file name (see the module docs for how it is matched).
    Name(String),
}

impl ImageRef {
    fn to_json(&self) -> Value {
        match self {
            ImageRef::Id(i) => json!(i),
            ImageRef::Name(n) => json!(n),
        }
    }
}

/// One COCO results entry for `det`; `category_ids[class]` gives the category id (identity when the
/// class is beyond the list).
pub fn coco_result_entry(image: &ImageRef, det: &Detection, category_ids: &[i64]) -> Value {
    let cat = category_ids
        .get(det.class)
        .copied()
        .unwrap_or(det.class as i64);
    let b = det.to_coco_bbox();
    json!({
        "image_id": image.to_json(),
        "category_id": cat,
        "bbox": [b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64],
        "score": det.score as f64,
    })
}

/// A COCO results array for several images.
pub fn coco_results_json(images: &[(ImageRef, Vec<Detection>)], category_ids: &[i64]) -> Value {
    Value::Array(
        images
            .iter()
            .flat_map(|(im, dets)| {
                dets.iter()
                    .map(move |d| coco_result_entry(im, d, category_ids))
            })
            .collect(),
    )
}

/// Converts one image's detections to [`ScoredBox`]es (corners, f64) for the evaluators.
pub fn scored_boxes(image_id: u64, detections: &[Detection]) -> Vec<ScoredBox> {
    detections
        .iter()
        .map(|d| ScoredBox {
            image_id,
            class_id: d.class,
            x_min: d.x_min as f64,
            y_min: d.y_min as f64,
            x_max: d.x_max as f64,
            y_max: d.y_max as f64,
            score: d.score as f64,
        })
        .collect()
}

/// Finds the image an `image_id` value refers to (see the module docs).
fn resolve_image(set: &EvalSet, v: &Value, path: &Path, what: &str) -> Result<u64> {
    if let Some(id) = v.as_u64() {
        return if set.images.iter().any(|im| im.id == id) {
            Ok(id)
        } else {
            Err(EvalError::parse(
                path,
                None,
                format!("{what}: image_id {id} is not an image of the ground truth"),
            ))
        };
    }
    let Some(name) = v.as_str() else {
        return Err(EvalError::parse(
            path,
            None,
            format!("{what}: image_id `{v}` is neither an integer nor a file name"),
        ));
    };
    if let Some(im) = set.images.iter().find(|im| im.file_name == name) {
        return Ok(im.id);
    }
    let base = |s: &str| -> String {
        Path::new(s)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let b = base(name);
    let hits: Vec<u64> = set
        .images
        .iter()
        .filter(|im| base(&im.file_name) == b)
        .map(|im| im.id)
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => Err(EvalError::parse(
            path,
            None,
            format!("{what}: image_id \"{name}\" matches no image of the ground truth"),
        )),
        many => Err(EvalError::parse(
            path,
            None,
            format!(
                "{what}: image_id \"{name}\" is ambiguous: {} ground-truth images are named `{b}`",
                many.len()
            ),
        )),
    }
}

/// Parses a COCO results array (text of file `path`) into detections of `gt`'s images and classes.
pub fn parse_coco_results(
    text: &str,
    path: &Path,
    gt: &LoadedGroundTruth,
) -> Result<Vec<ScoredBox>> {
    let j: Value = serde_json::from_str(text)
        .map_err(|e| EvalError::parse(path, Some(e.line()), format!("invalid JSON: {e}")))?;
    let arr = j
        .as_array()
        .ok_or_else(|| EvalError::parse(path, None, "expected a JSON array of results"))?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, r) in arr.iter().enumerate() {
        let what = format!("result [{i}]");
        let image_id = resolve_image(&gt.set, &r["image_id"], path, &what)?;
        let cat = r["category_id"].as_i64().ok_or_else(|| {
            EvalError::parse(path, None, format!("{what}: no integer `category_id`"))
        })?;
        let class_id = gt.class_of(cat).ok_or_else(|| {
            EvalError::parse(
                path,
                None,
                format!("{what}: category_id {cat} is not a category of the ground truth"),
            )
        })?;
        let bbox = r["bbox"]
            .as_array()
            .filter(|b| b.len() == 4)
            .ok_or_else(|| {
                EvalError::parse(path, None, format!("{what}: `bbox` is not [x, y, w, h]"))
            })?;
        let mut v = [0.0; 4];
        for (k, x) in bbox.iter().enumerate() {
            v[k] = x.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                EvalError::parse(
                    path,
                    None,
                    format!("{what}: bbox value `{x}` is not a finite number"),
                )
            })?;
        }
        let score = r["score"]
            .as_f64()
            .filter(|s| s.is_finite())
            .ok_or_else(|| {
                EvalError::parse(
                    path,
                    None,
                    format!("{what}: `score` `{}` is not a finite number", r["score"]),
                )
            })?;
        out.push(ScoredBox {
            image_id,
            class_id,
            x_min: v[0],
            y_min: v[1],
            x_max: v[0] + v[2],
            y_max: v[1] + v[3],
            score,
        });
    }
    // COCOeval breaks score ties by ascending image id, then input order: a stable sort by image id
    // puts the results in that order.
    out.sort_by_key(|d| d.image_id);
    Ok(out)
}

/// Reads a COCO results file (see [`parse_coco_results`]).
pub fn read_coco_results(path: &Path, gt: &LoadedGroundTruth) -> Result<Vec<ScoredBox>> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let text = yolo_data::strip_bom(&text);
    parse_coco_results(text, path, gt)
}
