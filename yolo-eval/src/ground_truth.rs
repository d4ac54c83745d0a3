//! Readers of ground truth for evaluation: a keras-yolo3 annotation file, a Pascal VOC folder or a
//! COCO instances JSON, each into an [`EvalSet`] (without detections) plus the mapping from COCO
//! `category_id` to class index that a results file uses.
//!
//! Image ids: for an annotation file, image `n` is the n-th annotation line (1-based, blank lines not
//! counted); for a VOC folder, the n-th XML file in name order (1-based); for COCO, the JSON's ids.
//! Category ids: for an annotation file or VOC folder, the 0-based line index in the classes file;
//! for COCO, the JSON's own category ids.

use std::path::Path;

use serde_json::Value;

use crate::dataset::{EvalImage, EvalSet, GroundTruth};
use crate::error::{EvalError, Result};

/// Ground truth ready for evaluation, with the category ids results files refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedGroundTruth {
    /// Classes, images and objects (no detections).
    pub set: EvalSet,
    /// `category_ids[k]` is the COCO `category_id` of class `k`.
    pub category_ids: Vec<i64>,
}

impl LoadedGroundTruth {
    /// The class index of a results file's `category_id`.
    pub fn class_of(&self, category_id: i64) -> Option<usize> {
        self.category_ids.iter().position(|&c| c == category_id)
    }

    fn with_identity_categories(set: EvalSet) -> Self {
        let category_ids = (0..set.classes.len() as i64).collect();
        LoadedGroundTruth { set, category_ids }
    }
}

/// Ground truth from keras-yolo3 annotations (`path x_min,y_min,x_max,y_max,class ...`): image `n`
/// (1-based) is `annotations[n - 1]`; there is no difficult or crowd flag. Fails on a class id
/// outside `classes`, naming `file` and the annotation's line.
pub fn ground_truth_from_annotations(
    annotations: &[yolo_data::Annotation],
    classes: &[String],
    file: &Path,
) -> Result<LoadedGroundTruth> {
    let mut set = EvalSet {
        classes: classes.to_vec(),
        ..Default::default()
    };
    for (i, a) in annotations.iter().enumerate() {
        let id = i as u64 + 1;
        set.images.push(EvalImage {
            id,
            file_name: a.path.to_string_lossy().into_owned(),
            width: 0,
            height: 0,
        });
        for b in &a.boxes {
            if b.class >= classes.len() {
                return Err(EvalError::parse(
                    file,
                    Some(a.line),
                    format!(
                        "class id {} but the classes file has {} classes",
                        b.class,
                        classes.len()
                    ),
                ));
            }
            set.ground_truth.push(GroundTruth::new(
                id,
                b.class,
                b.x_min as f64,
                b.y_min as f64,
                b.x_max as f64,
                b.y_max as f64,
            ));
        }
    }
    Ok(LoadedGroundTruth::with_identity_categories(set))
}

/// Reads a keras-yolo3 annotation file as ground truth (see [`ground_truth_from_annotations`]).
pub fn read_annotation_ground_truth(path: &Path, classes: &[String]) -> Result<LoadedGroundTruth> {
    let annotations = yolo_data::read_annotations(path)?;
    ground_truth_from_annotations(&annotations, classes, path)
}

/// Reads a Pascal VOC folder: the `*.xml` files of `dir/Annotations/` (or `dir/annotations/`, or of
/// `dir` itself when it has neither), in name order. Objects whose class is not in `classes` are skipped (as
/// keras-yolo3's `voc_annotation.py` does); `difficult` objects are kept, flagged difficult.
pub fn read_voc_ground_truth(dir: &Path, classes: &[String]) -> Result<LoadedGroundTruth> {
    let ann_dir = ["Annotations", "annotations"]
        .iter()
        .map(|d| dir.join(d))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| dir.to_path_buf());
    let mut files: Vec<_> = std::fs::read_dir(&ann_dir)
        .map_err(|e| EvalError::io(&ann_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EvalError::parse(
            &ann_dir,
            None,
            "no VOC .xml annotation files in this folder",
        ));
    }
    let mut set = EvalSet {
        classes: classes.to_vec(),
        ..Default::default()
    };
    for (i, file) in files.iter().enumerate() {
        let id = i as u64 + 1;
        let text = std::fs::read_to_string(file).map_err(|e| EvalError::io(file, e))?;
        let text = yolo_data::strip_bom(&text);
        parse_voc_xml(text, file, id, classes, &mut set)?;
    }
    Ok(LoadedGroundTruth::with_identity_categories(set))
}

fn parse_voc_xml(
    text: &str,
    file: &Path,
    id: u64,
    classes: &[String],
    set: &mut EvalSet,
) -> Result<()> {
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| EvalError::parse(file, None, format!("invalid XML: {e}")))?;
    let root = doc.root_element();
    let child_text = |node: roxmltree::Node, name: &str| -> Option<String> {
        node.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
    };
    let file_name = child_text(root, "filename").unwrap_or_else(|| {
        file.file_stem()
            .map(|s| format!("{}.jpg", s.to_string_lossy()))
            .unwrap_or_default()
    });
    let size = root.children().find(|c| c.has_tag_name("size"));
    let dim = |name: &str| -> u32 {
        size.and_then(|s| child_text(s, name))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u32)
    };
    set.images.push(EvalImage {
        id,
        file_name,
        width: dim("width"),
        height: dim("height"),
    });
    for obj in root.children().filter(|c| c.has_tag_name("object")) {
        let line = Some(doc.text_pos_at(obj.range().start).row as usize);
        let name = child_text(obj, "name").unwrap_or_default();
        let Some(class_id) = classes.iter().position(|c| *c == name) else {
            continue;
        };
        let difficult = child_text(obj, "difficult")
            .map(|v| v.parse::<f64>().map(|d| d as i64 == 1).unwrap_or(false))
            .unwrap_or(false);
        let bnd = obj
            .children()
            .find(|c| c.has_tag_name("bndbox"))
            .ok_or_else(|| {
                EvalError::parse(file, line, format!("object `{name}` has no <bndbox>"))
            })?;
        let coord = |tag: &str| -> Result<f64> {
            let v = child_text(bnd, tag).ok_or_else(|| {
                EvalError::parse(
                    file,
                    line,
                    format!("object `{name}`: <bndbox> has no <{tag}>"),
                )
            })?;
            v.parse::<f64>().map_err(|_| {
                EvalError::parse(
                    file,
                    line,
                    format!("object `{name}`: <{tag}> `{v}` is not a number"),
                )
            })
        };
        let mut g = GroundTruth::new(
            id,
            class_id,
            coord("xmin")?,
            coord("ymin")?,
            coord("xmax")?,
            coord("ymax")?,
        );
        g.difficult = difficult;
        set.ground_truth.push(g);
    }
    Ok(())
}

fn num(v: &Value, path: &Path, what: &str) -> Result<f64> {
    v.as_f64()
        .ok_or_else(|| EvalError::parse(path, None, format!("{what}: `{v}` is not a number")))
}

/// Reads a COCO instances JSON (`images`, `annotations`, `categories`). Classes are the categories
/// sorted by id; boxes `[x, y, w, h]` become corners `x + w`, `y + h`; `area` and `iscrowd` are kept.
pub fn read_coco_instances(path: &Path) -> Result<LoadedGroundTruth> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let text = yolo_data::strip_bom(&text);
    let j: Value = serde_json::from_str(text)
        .map_err(|e| EvalError::parse(path, Some(e.line()), format!("invalid JSON: {e}")))?;
    let arr = |key: &str| -> Result<&Vec<Value>> {
        j[key]
            .as_array()
            .ok_or_else(|| EvalError::parse(path, None, format!("no `{key}` array")))
    };
    let mut cats: Vec<(i64, String)> = Vec::new();
    for (i, c) in arr("categories")?.iter().enumerate() {
        let id = c["id"].as_i64().ok_or_else(|| {
            EvalError::parse(path, None, format!("categories[{i}] has no integer `id`"))
        })?;
        let name = c["name"]
            .as_str()
            .map_or_else(|| format!("category_{id}"), str::to_string);
        cats.push((id, name));
    }
    cats.sort_by_key(|c| c.0);
    let mut set = EvalSet {
        classes: cats.iter().map(|c| c.1.clone()).collect(),
        ..Default::default()
    };
    let category_ids: Vec<i64> = cats.iter().map(|c| c.0).collect();
    for (i, im) in arr("images")?.iter().enumerate() {
        let id = im["id"].as_u64().ok_or_else(|| {
            EvalError::parse(
                path,
                None,
                format!("images[{i}] has no non-negative integer `id`"),
            )
        })?;
        set.images.push(EvalImage {
            id,
            file_name: im["file_name"].as_str().unwrap_or_default().to_string(),
            width: im["width"].as_u64().unwrap_or(0) as u32,
            height: im["height"].as_u64().unwrap_or(0) as u32,
        });
    }
    for (i, a) in arr("annotations")?.iter().enumerate() {
        let what = format!("annotations[{i}]");
        let image_id = a["image_id"].as_u64().ok_or_else(|| {
            EvalError::parse(path, None, format!("{what}: no integer `image_id`"))
        })?;
        if !set.images.iter().any(|im| im.id == image_id) {
            return Err(EvalError::parse(
                path,
                None,
                format!("{what}: image_id {image_id} is not in `images`"),
            ));
        }
        let cat = a["category_id"].as_i64().ok_or_else(|| {
            EvalError::parse(path, None, format!("{what}: no integer `category_id`"))
        })?;
        let class_id = category_ids.iter().position(|&c| c == cat).ok_or_else(|| {
            EvalError::parse(
                path,
                None,
                format!("{what}: category_id {cat} is not in `categories`"),
            )
        })?;
        let bbox = a["bbox"]
            .as_array()
            .filter(|b| b.len() == 4)
            .ok_or_else(|| {
                EvalError::parse(path, None, format!("{what}: `bbox` is not [x, y, w, h]"))
            })?;
        let (x, y) = (num(&bbox[0], path, &what)?, num(&bbox[1], path, &what)?);
        let (w, h) = (num(&bbox[2], path, &what)?, num(&bbox[3], path, &what)?);
        let mut g = GroundTruth::new(image_id, class_id, x, y, x + w, y + h);
        g.iscrowd = a["iscrowd"].as_u64().unwrap_or(0) == 1 || a["iscrowd"].as_bool() == Some(true);
        g.area = a["area"].as_f64();
        set.ground_truth.push(g);
    }
    Ok(LoadedGroundTruth { set, category_ids })
}

/// Reads ground truth from `path`, choosing the format: a folder is a VOC folder, a `.json` file a
/// COCO instances file, anything else a keras-yolo3 annotation file. VOC and annotation files need
/// `classes` (the classes file's names); COCO brings its own categories.
pub fn read_ground_truth(path: &Path, classes: Option<&[String]>) -> Result<LoadedGroundTruth> {
    let need_classes = || {
        classes.ok_or_else(|| {
            EvalError::Invalid(format!(
                "{}: a classes file is needed for a VOC folder or an annotation file",
                path.display()
            ))
        })
    };
    if path.is_dir() {
        read_voc_ground_truth(path, need_classes()?)
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        read_coco_instances(path)
    } else {
        read_annotation_ground_truth(path, need_classes()?)
    }
}
