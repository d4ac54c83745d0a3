//! COCO instances JSON (`instances_train2017.json`) to annotation lines.
//!
//! - Boxes: COCO's `bbox` is `[x, y, width, height]`; the line gets `x_min = x`, `y_min = y`,
//!   `x_max = x + width`, `y_max = y + height`. By default values are truncated as keras-yolo3's
//!   `coco_annotation.py` does (`x_min = int(x)`, `x_max = x_min + int(width)`);
//!   [`CocoOptions::keep_decimals`] keeps them exact instead.
//! - Classes: categories sorted by id and renumbered 0..K-1 (COCO's ids have gaps: 1..90 for 80
//!   classes); [`CocoDataset::classes`] holds their names in that order.
//! - Crowd regions (`iscrowd: 1`) mark a group of objects with one box; they are left out by
//!   default, since a detector trained on them learns boxes around crowds (COCOeval also only uses
//!   them to ignore detections). [`CocoOptions::include_crowd`] keeps them.
//! - One line per image, in the JSON's image order; images without (kept) objects get a line with
//!   the path only, unless [`CocoOptions::skip_empty_images`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Annotation, BoxLabel, DataError};

/// Options of [`convert_coco`]; the default follows keras-yolo3's `coco_annotation.py`.
#[derive(Clone, Debug, Default)]
pub struct CocoOptions {
    /// Folder prepended to each image's `file_name`.
    pub images_dir: PathBuf,
    /// Keep crowd regions as boxes.
    pub include_crowd: bool,
    /// Keep fractional coordinates instead of truncating like keras-yolo3.
    pub keep_decimals: bool,
    /// Leave out images without any kept object.
    pub skip_empty_images: bool,
}

/// The result of a conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoDataset {
    /// One annotation per image (`line` = 1-based output line).
    pub annotations: Vec<Annotation>,
    /// Category names in id order; the index is the new class id.
    pub classes: Vec<String>,
    /// Crowd regions left out.
    pub skipped_crowd: usize,
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnn>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnn {
    #[serde(default)]
    id: Option<u64>,
    image_id: u64,
    category_id: u64,
    bbox: Vec<f64>,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

/// Converts the text of a COCO instances JSON file (`file` names it in errors).
pub fn parse_coco(text: &[u8], file: &Path, opts: &CocoOptions) -> Result<CocoDataset, DataError> {
    let err = |message: String| DataError::Coco {
        file: file.to_path_buf(),
        message,
    };
    let data: CocoFile = serde_json::from_slice(crate::strip_bom_bytes(text))
        .map_err(|e| err(format!("invalid COCO JSON: {e}")))?;

    let mut cats: Vec<&CocoCategory> = data.categories.iter().collect();
    cats.sort_by_key(|c| c.id);
    if let Some(w) = cats.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(err(format!("category id {} appears twice", w[0].id)));
    }
    let class_of: HashMap<u64, usize> = cats.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let classes: Vec<String> = cats.iter().map(|c| c.name.clone()).collect();

    let mut slot_of: HashMap<u64, usize> = HashMap::with_capacity(data.images.len());
    for (i, im) in data.images.iter().enumerate() {
        if slot_of.insert(im.id, i).is_some() {
            return Err(err(format!("image id {} appears twice", im.id)));
        }
    }
    let mut boxes: Vec<Vec<BoxLabel>> = vec![Vec::new(); data.images.len()];
    let mut skipped_crowd = 0;
    for (n, a) in data.annotations.iter().enumerate() {
        let what = match a.id {
            Some(id) => format!("annotation id {id}"),
            None => format!("annotation #{n}"),
        };
        let slot = *slot_of
            .get(&a.image_id)
            .ok_or_else(|| err(format!("{what}: unknown image_id {}", a.image_id)))?;
        let class = *class_of
            .get(&a.category_id)
            .ok_or_else(|| err(format!("{what}: unknown category_id {}", a.category_id)))?;
        let &[x, y, w, h] = a.bbox.as_slice() else {
            return Err(err(format!(
                "{what}: bbox has {} values, expected 4 (x, y, width, height)",
                a.bbox.len()
            )));
        };
        if ![x, y, w, h].iter().all(|v| v.is_finite()) || w < 0.0 || h < 0.0 {
            return Err(err(format!(
                "{what}: bbox {:?} must be finite with non-negative width and height",
                a.bbox
            )));
        }
        if a.iscrowd != 0 && !opts.include_crowd {
            skipped_crowd += 1;
            continue;
        }
        let (x0, y0, x1, y1) = if opts.keep_decimals {
            (x, y, x + w, y + h)
        } else {
            let (xi, yi) = (x.trunc(), y.trunc());
            (xi, yi, xi + w.trunc(), yi + h.trunc())
        };
        let fits = [x0, y0, x1, y1]
            .iter()
            .all(|v| v.abs() < f64::from(f32::MAX));
        if !fits {
            return Err(err(format!("{what}: bbox {:?} is out of range", a.bbox)));
        }
        boxes[slot].push(BoxLabel {
            x_min: x0 as f32,
            y_min: y0 as f32,
            x_max: x1 as f32,
            y_max: y1 as f32,
            class,
        });
    }

    let mut annotations = Vec::with_capacity(data.images.len());
    for (im, b) in data.images.iter().zip(boxes) {
        if b.is_empty() && opts.skip_empty_images {
            continue;
        }
        annotations.push(Annotation {
            path: opts.images_dir.join(&im.file_name),
            boxes: b,
            line: annotations.len() + 1,
        });
    }
    Ok(CocoDataset {
        annotations,
        classes,
        skipped_crowd,
    })
}

/// Reads and converts a COCO instances JSON file (see the module doc).
pub fn convert_coco(path: &Path, opts: &CocoOptions) -> Result<CocoDataset, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_coco(&bytes, path, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format_annotation_line;
    use proptest::prelude::*;

    const JSON: &str = r#"{
      "info": {"year": 2017},
      "images": [
        {"id": 42, "file_name": "000000000042.jpg", "width": 640, "height": 480},
        {"id": 7, "file_name": "000000000007.jpg", "width": 100, "height": 100},
        {"id": 9, "file_name": "000000000009.jpg", "width": 100, "height": 100}
      ],
      "annotations": [
        {"id": 1, "image_id": 42, "category_id": 18, "bbox": [10.7, 20.2, 30.9, 40.5], "iscrowd": 0,
         "segmentation": [[1, 2, 3, 4]], "area": 12.0},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 60], "iscrowd": 0},
        {"id": 3, "image_id": 42, "category_id": 1, "bbox": [100, 100, 20, 20], "iscrowd": 1},
        {"id": 4, "image_id": 42, "category_id": 90, "bbox": [1, 2, 3, 4]}
      ],
      "categories": [
        {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
        {"id": 1, "name": "person"},
        {"id": 18, "name": "dog"}
      ]
    }"#;

    fn conv(text: &str, opts: &CocoOptions) -> Result<CocoDataset, DataError> {
        parse_coco(text.as_bytes(), Path::new("instances.json"), opts)
    }

    fn lines(d: &CocoDataset) -> Vec<String> {
        d.annotations.iter().map(format_annotation_line).collect()
    }

    #[test]
    fn converts_like_coco_annotation_py() {
        let opts = CocoOptions {
            images_dir: "train2017".into(),
            ..Default::default()
        };
        let d = conv(JSON, &opts).unwrap();
        assert_eq!(d.classes, vec!["person", "dog", "toothbrush"]);
        assert_eq!(d.skipped_crowd, 1);
        assert_eq!(
            lines(&d),
            vec![
                "train2017/000000000042.jpg 10,20,40,60,1 1,2,4,6,2",
                "train2017/000000000007.jpg 0,0,50,60,0",
                "train2017/000000000009.jpg",
            ]
        );
        assert_eq!(d.annotations[2].line, 3);
    }

    #[test]
    fn options_decimals_crowd_and_empty() {
        let opts = CocoOptions {
            keep_decimals: true,
            include_crowd: true,
            skip_empty_images: true,
            ..Default::default()
        };
        let d = conv(JSON, &opts).unwrap();
        assert_eq!(d.skipped_crowd, 0);
        let l = lines(&d);
        assert_eq!(l.len(), 2);
        let b = d.annotations[0].boxes[0];
        assert_eq!(b.x_min, 10.7f32);
        assert_eq!(b.x_max, (10.7f64 + 30.9) as f32);
        assert_eq!(d.annotations[0].boxes[1].class, 0);
        assert_eq!(d.annotations[0].boxes.len(), 3);
    }

    #[test]
    fn errors_name_file_and_entry() {
        let o = CocoOptions::default();
        let e = |t: String| conv(&t, &o).unwrap_err().to_string();
        assert_eq!(
            e(JSON.replace("\"image_id\": 7,", "\"image_id\": 8,")),
            "instances.json: annotation id 2: unknown image_id 8"
        );
        assert_eq!(
            e(JSON.replace("\"category_id\": 90,", "\"category_id\": 91,")),
            "instances.json: annotation id 4: unknown category_id 91"
        );
        assert_eq!(
            e(JSON.replace("[0, 0, 50, 60]", "[0, 0, 50]")),
            "instances.json: annotation id 2: bbox has 3 values, expected 4 (x, y, width, height)"
        );
        assert_eq!(
            e(JSON.replace("[0, 0, 50, 60]", "[0, 0, -50, 60]")),
            "instances.json: annotation id 2: bbox [0.0, 0.0, -50.0, 60.0] must be finite with \
             non-negative width and height"
        );
        assert_eq!(
            e(JSON.replace("\"id\": 18,", "\"id\": 1,")),
            "instances.json: category id 1 appears twice"
        );
        assert!(e(JSON.replace("\"images\"", "\"imgs\""))
            .starts_with("instances.json: invalid COCO JSON: missing field `images`"));
        assert!(e("{".into()).starts_with("instances.json: invalid COCO JSON: "));
    }

    #[test]
    fn convert_coco_reads_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.json");
        std::fs::write(&p, JSON).unwrap();
        let d = convert_coco(&p, &CocoOptions::default()).unwrap();
        assert_eq!(d.annotations.len(), 3);
        let e = convert_coco(&dir.path().join("nope.json"), &CocoOptions::default()).unwrap_err();
        assert!(e.to_string().contains("nope.json"));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_coco(&bytes, Path::new("x.json"), &CocoOptions::default());
        }

        #[test]
        fn never_panics_on_mutated_json(pos in 0usize..2000, ch in any::<char>(), del in any::<bool>()) {
            let mut chars: Vec<char> = JSON.chars().collect();
            let i = pos % chars.len();
            if del { chars.remove(i); } else { chars.insert(i, ch); }
            let s: String = chars.into_iter().collect();
            let _ = conv(&s, &CocoOptions::default());
        }
    }
}
