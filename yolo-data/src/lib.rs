//! yolo-data: keras-yolo3's data side. Annotation lines (`path x_min,y_min,x_max,y_max,class ...`),
//! classes and anchors files, dataset converters (Pascal VOC, COCO), k-means anchors, a synthetic
//! dataset generator, and the image pipeline (`get_random_data`, `preprocess_true_boxes`, loaders).
//!
//! ```
//! use std::path::Path;
//! use yolo_data::{format_annotation_line, parse_annotation_line, Anchors};
//!
//! let a = parse_annotation_line("img/1.jpg 81,88,522,408,0", Path::new("train.txt"), 1)
//!     .unwrap()
//!     .unwrap();
//! assert_eq!(a.boxes[0].x_max, 522.0);
//! assert_eq!(format_annotation_line(&a), "img/1.jpg 81,88,522,408,0");
//!
//! let err = parse_annotation_line("img/1.jpg 3,4,x,9,0", Path::new("train.txt"), 12).unwrap_err();
//! assert_eq!(err.to_string(), "train.txt:12: bad box token `3,4,x,9,0`: `x` is not a number");
//!
//! assert_eq!(Anchors::yolo_default().layer(0), vec![[116.0, 90.0], [156.0, 198.0], [373.0, 326.0]]);
//! ```

/// The UTF-8 byte order mark some Windows editors put at the start of a text file.
pub const UTF8_BOM: char = '\u{feff}';

/// `text` without a leading UTF-8 byte order mark (Notepad's "UTF-8 with BOM").
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix(UTF8_BOM).unwrap_or(text)
}

/// `bytes` without a leading UTF-8 byte order mark (`EF BB BF`).
pub fn strip_bom_bytes(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Reads a UTF-8 text file without its leading byte order mark, if any; errors name the file.
pub fn read_text(path: &std::path::Path) -> Result<String, DataError> {
    let mut text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    if text.starts_with(UTF8_BOM) {
        text.drain(..UTF8_BOM.len_utf8());
    }
    Ok(text)
}

mod anchors;
mod annotation;
mod augment;
mod check;
mod classes;
mod coco;
mod error;
mod image_io;
mod input_shape;
mod kmeans;
mod letterbox;
mod loader;
mod mixup;
mod mosaic;
mod multi_scale;
mod resize;
mod synth;
mod true_boxes;
mod uninit;
mod voc;

pub use anchors::{parse_anchors, read_anchors, write_anchors, Anchors};
pub use annotation::{
    check_annotation, format_annotation_line, parse_annotation_line, parse_annotations,
    read_annotations, write_annotations, Annotation, BoxLabel, MAX_BOXES_PER_LINE,
};
pub use augment::{
    augment_with_params, augment_with_params_into, get_random_data, get_random_data_into,
    AugmentConfig, AugmentParams, Sample,
};
pub use check::{
    check_annotation_bytes, check_dataset, CheckOptions, CheckReport, Problem, ProblemKind,
};
pub use classes::{coco80_classes, parse_classes, read_classes, write_classes};
pub use coco::{convert_coco, parse_coco, CocoDataset, CocoOptions};
pub use error::DataError;
pub use image_io::{
    check_complete, decode_rgb, image_dimensions, load_rgb, read_image_header,
    DEFAULT_MAX_IMAGE_MIB, MAX_IMAGE_MIB_VAR,
};
pub use input_shape::InputShape;
pub use kmeans::{
    avg_iou, box_wh, image_sizes, kmeans_anchors, kmeans_from_indices, letterboxed_box_wh, wh_iou,
    KMeansResult, KMEANS_RESTARTS,
};
pub use letterbox::{letterbox_chw_into, letterbox_image, to_chw_unit, LetterboxParams, GREY};
pub use loader::{Batch, BatchLoader, EpochIter, LoaderConfig};
pub use mixup::{mixup_boxes, mixup_into, mixup_ratio};
pub use mosaic::{mosaic, mosaic_into, mosaic_with_params, MosaicParams};
pub use multi_scale::MultiScale;
pub use resize::{resize_bicubic, resize_bicubic_region, Window};
pub use synth::{
    hsv_to_rgb, rgb_to_hsv, synth_image, write_synth, SynthConfig, SynthDataset, SynthFormat,
    SynthShape, HUE_HALF_RANGE,
};
pub use true_boxes::{preprocess_true_boxes, YTrue};
pub use voc::{
    convert_voc, parse_voc_xml, voc_layout, VocDataset, VocObject, VocOptions, VocRecord,
    UNLISTED_NAMES_KEPT,
};
