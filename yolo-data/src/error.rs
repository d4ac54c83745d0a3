//! The one error type of yolo-data. Every variant that comes from reading a file names the file,
//! and, for text formats, the 1-based line number and the offending token, so that a user can go
//! straight to the problem: `annotations.txt:12: bad box token `3,4,x,9,0`: `x` is not a number`.

use std::path::PathBuf;

/// Errors of parsing, converting and generating datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A box token of an annotation line is malformed (`x_min,y_min,x_max,y_max,class`).
    #[error("{}:{line}: bad box token `{token}`: {reason}", file.display())]
    BadBoxToken {
        /// The annotation file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The whole whitespace-separated token.
        token: String,
        /// What is wrong with it, naming the bad field.
        reason: String,
    },

    /// An annotation line carries more boxes than [`crate::MAX_BOXES_PER_LINE`].
    #[error("{}:{line}: {count} boxes on one line, at most {max} are accepted", file.display())]
    TooManyBoxes {
        /// The annotation file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Number of box tokens found.
        count: usize,
        /// The cap.
        max: usize,
    },

    /// A box's class id is not below the number of classes.
    #[error(
        "{}:{line}: class id {class} in box `{token}` is out of range: there are {num_classes} classes",
        file.display()
    )]
    ClassOutOfRange {
        /// The annotation file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The box as it would be written.
        token: String,
        /// The class id found.
        class: usize,
        /// Number of classes known.
        num_classes: usize,
    },

    /// A box has no area (x_max <= x_min or y_max <= y_min).
    #[error("{}:{line}: box `{token}` is empty: {reason}", file.display())]
    DegenerateBox {
        /// The annotation file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The box as it would be written.
        token: String,
        /// Which side is not positive.
        reason: String,
    },

    /// A classes file line is unusable (empty name between names, duplicate name).
    #[error("{}:{line}: bad class name `{name}`: {reason}", file.display())]
    BadClassName {
        /// The classes file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The name as read (trimmed).
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A classes file lists no class at all.
    #[error("{}: no class names in the file", file.display())]
    NoClasses {
        /// The classes file.
        file: PathBuf,
    },

    /// A value of an anchors file is not a positive finite number.
    #[error("{}:{line}: bad anchor value `{token}`: {reason}", file.display())]
    BadAnchorToken {
        /// The anchors file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The value as written.
        token: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An anchors file does not hold 9 (YOLOv3) or 6 (tiny YOLOv3) width,height pairs.
    #[error(
        "{}: found {found} anchor values, expected 18 (9 pairs, YOLOv3) or 12 (6 pairs, tiny YOLOv3)",
        file.display()
    )]
    AnchorCount {
        /// The anchors file.
        file: PathBuf,
        /// Number of numbers found.
        found: usize,
    },

    /// A Pascal VOC XML file is malformed or lacks a required element.
    #[error("{}: {message}", file.display())]
    Voc {
        /// The XML file.
        file: PathBuf,
        /// What is wrong, naming the element and value.
        message: String,
    },

    /// A dataset conversion kept no object: every one has a class missing from the given list.
    #[error(
        "none of the {objects} objects has a listed class: the first unlisted names are {}; \
         the list has {} ({}); nothing to learn",
        quoted(unlisted), count_names(classes.len()), quoted(classes)
    )]
    NoListedClass {
        /// Objects dropped.
        objects: usize,
        /// The class list given.
        classes: Vec<String>,
        /// The first distinct names met that are not in the list.
        unlisted: Vec<String>,
    },

    /// A COCO instances JSON file is malformed or inconsistent.
    #[error("{}: {message}", file.display())]
    Coco {
        /// The JSON file.
        file: PathBuf,
        /// What is wrong, naming the entry and value.
        message: String,
    },

    /// An image file could not be decoded or encoded.
    #[error("{}: {message}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The codec's error.
        message: String,
    },

    /// An image file ends before its format's end marker: a JPEG without its end-of-image marker
    /// `FF D9`, a PNG without its `IEND` chunk (a cut-off download or copy).
    #[error("{}: image is truncated ({bytes} bytes): {reason}", path.display())]
    TruncatedImage {
        /// The image file.
        path: PathBuf,
        /// The file's length in bytes.
        bytes: usize,
        /// Where the data ends.
        reason: String,
    },

    /// The image named on an annotation line could not be read (missing, unreadable, truncated or
    /// not an image); `source` names the image and says why.
    #[error("{}:{line}: {source}", file.display())]
    AnnotationImage {
        /// The annotation file.
        file: PathBuf,
        /// 1-based line number of the annotation line naming the image.
        line: usize,
        /// Why the image could not be read (an [`DataError::Io`], [`DataError::Image`] or
        /// [`DataError::TruncatedImage`] naming the image file).
        #[source]
        source: Box<DataError>,
    },

    /// k-means was asked for more clusters than there are boxes, or for none.
    #[error("k-means: cannot make {k} clusters from {boxes} boxes")]
    KMeans {
        /// Requested number of clusters.
        k: usize,
        /// Number of boxes available.
        boxes: usize,
    },

    /// A configuration value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A network input size that is not a positive multiple of 32 (`h x w`).
    #[error("input shape {h}x{w} (h x w) is invalid: both sides must be positive multiples of 32")]
    InputShape {
        /// Height asked for.
        h: usize,
        /// Width asked for.
        w: usize,
    },

    /// `preprocess_true_boxes`: a box's class id is not below the number of classes.
    #[error("image {image} of the batch, box row {row}: class {class} is out of range: there are {num_classes} classes")]
    BoxClassOutOfRange {
        /// Index of the image in the batch.
        image: usize,
        /// Index of the box row.
        row: usize,
        /// The class id found.
        class: usize,
        /// Number of classes.
        num_classes: usize,
    },

    /// `preprocess_true_boxes`: a box centre falls outside the output grid.
    #[error("image {image} of the batch, box row {row}: centre ({}, {}) is outside the {}x{} input (layer {layer})", centre[0], centre[1], input_hw[0], input_hw[1])]
    BoxOutsideGrid {
        /// Index of the image in the batch.
        image: usize,
        /// Index of the box row.
        row: usize,
        /// Output layer.
        layer: usize,
        /// The floored centre `(x, y)` in input pixels.
        centre: [f32; 2],
        /// The input shape `(h, w)`.
        input_hw: [usize; 2],
    },

    /// A tensor could not be built (candle error).
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Names quoted with escapes, so that invisible characters (a byte order mark) show: `"a", "b"`;
/// at most 10, then `...`.
fn quoted(names: &[String]) -> String {
    let mut s: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
    if names.len() > 10 {
        s.push("...".into());
    }
    s.join(", ")
}

fn count_names(n: usize) -> String {
    if n == 1 {
        "1 name".into()
    } else {
        format!("{n} names")
    }
}
