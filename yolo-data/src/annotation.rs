//! keras-yolo3 annotation lines: `path x_min,y_min,x_max,y_max,class_id ...`, one image a line.
//!
//! Format notes, compared with keras-yolo3 (`line.split()` then `int()` on each field):
//! - The line is split on whitespace and the first token is the image path, so **paths cannot
//!   contain spaces** (as in keras-yolo3). The path is kept as written; relative paths are
//!   resolved by the caller (keras-yolo3 resolves them against the working directory).
//! - Coordinates may be integers or decimals (`12` or `12.5`); keras-yolo3 accepts integers only.
//!   `NaN`, `inf` and values that overflow `f32` are rejected. Negative values and empty boxes are
//!   parsed: checking geometry is a separate step ([`check_annotation`]).
//! - The class id must be a non-negative integer.
//! - A line with a path and no boxes is an image without objects; a blank line is skipped.
//! - At most [`MAX_BOXES_PER_LINE`] boxes per line, so hostile input cannot make the parser
//!   allocate without bound beyond the size of the text itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Most boxes accepted on one annotation line (keras-yolo3 keeps at most 20 per image in training).
pub const MAX_BOXES_PER_LINE: usize = 4096;

/// One ground-truth box in image pixels, corners inclusive as in keras-yolo3, with its class id.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxLabel {
    /// Left edge.
    pub x_min: f32,
    /// Top edge.
    pub y_min: f32,
    /// Right edge.
    pub x_max: f32,
    /// Bottom edge.
    pub y_max: f32,
    /// Class id, an index into the classes file.
    pub class: usize,
}

impl BoxLabel {
    /// Width, `x_max - x_min` (may be negative for a malformed box).
    pub fn width(&self) -> f32 {
        self.x_max - self.x_min
    }

    /// Height, `y_max - y_min` (may be negative for a malformed box).
    pub fn height(&self) -> f32 {
        self.y_max - self.y_min
    }

    /// The box as an annotation token `x1,y1,x2,y2,c`; whole numbers are written without decimals.
    pub fn to_token(&self) -> String {
        format!(
            "{},{},{},{},{}",
            fmt_num(self.x_min),
            fmt_num(self.y_min),
            fmt_num(self.x_max),
            fmt_num(self.y_max),
            self.class
        )
    }
}

/// One annotation line: an image and its boxes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    /// Image path as written in the file.
    pub path: PathBuf,
    /// The image's boxes, in file order.
    pub boxes: Vec<BoxLabel>,
    /// 1-based line number in the file it was read from (0 when not read from a file).
    pub line: usize,
}

/// Writes a float the shortest way that reads back to the same value (`12` not `12.0`).
fn fmt_num(v: f32) -> String {
    // Rust's `Display` for floats prints whole numbers without a fraction and is round-trip exact.
    format!("{v}")
}

fn parse_coord(field: &str) -> Result<f32, String> {
    let ok_chars = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    // The character check rejects `nan`, `inf` and `infinity`, which `f32::from_str` would accept.
    let v: f32 = if ok_chars { field.parse().ok() } else { None }
        .ok_or_else(|| format!("`{field}` is not a number"))?;
    if !v.is_finite() {
        return Err(format!("`{field}` is not a finite number"));
    }
    Ok(v)
}

fn parse_class(field: &str) -> Result<usize, String> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("class id `{field}` is not a non-negative integer"));
    }
    field
        .parse()
        .map_err(|_| format!("class id `{field}` is too large"))
}

fn parse_box_token(token: &str) -> Result<BoxLabel, String> {
    let fields: Vec<&str> = token.splitn(6, ',').collect();
    if fields.len() != 5 {
        let found = token.split(',').count();
        return Err(format!(
            "expected 5 comma-separated values x_min,y_min,x_max,y_max,class, found {found}"
        ));
    }
    Ok(BoxLabel {
        x_min: parse_coord(fields[0])?,
        y_min: parse_coord(fields[1])?,
        x_max: parse_coord(fields[2])?,
        y_max: parse_coord(fields[3])?,
        class: parse_class(fields[4])?,
    })
}

/// Parses one annotation line; `file` and `line` (1-based) only serve the error messages and
/// [`Annotation::line`]. Returns `None` for a blank line.
pub fn parse_annotation_line(
    text: &str,
    file: &Path,
    line: usize,
) -> Result<Option<Annotation>, DataError> {
    let mut tokens = text.split_whitespace();
    let Some(path) = tokens.next() else {
        return Ok(None);
    };
    let mut boxes = Vec::new();
    for (i, token) in tokens.enumerate() {
        if i >= MAX_BOXES_PER_LINE {
            let count = text.split_whitespace().count() - 1;
            return Err(DataError::TooManyBoxes {
                file: file.to_path_buf(),
                line,
                count,
                max: MAX_BOXES_PER_LINE,
            });
        }
        let b = parse_box_token(token).map_err(|reason| DataError::BadBoxToken {
            file: file.to_path_buf(),
            line,
            token: token.to_string(),
            reason,
        })?;
        boxes.push(b);
    }
    Ok(Some(Annotation {
        path: PathBuf::from(path),
        boxes,
        line,
    }))
}

/// Parses the text of a whole annotation file (`file` names it in errors). Blank lines are skipped,
/// and so is a leading UTF-8 byte order mark.
pub fn parse_annotations(text: &str, file: &Path) -> Result<Vec<Annotation>, DataError> {
    let text = crate::strip_bom(text);
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(a) = parse_annotation_line(l, file, i + 1)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Reads a keras-yolo3 annotation file.
pub fn read_annotations(path: &Path) -> Result<Vec<Annotation>, DataError> {
    let mut bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bom = bytes.len() - crate::strip_bom_bytes(&bytes).len();
    bytes.drain(..bom);
    let text = String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        DataError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {line} is not valid UTF-8"),
            ),
        )
    })?;
    parse_annotations(&text, path)
}

/// Writes an annotation as a keras-yolo3 line (no trailing newline): `path x1,y1,x2,y2,c ...`.
pub fn format_annotation_line(a: &Annotation) -> String {
    let mut s = a.path.to_string_lossy().into_owned();
    for b in &a.boxes {
        s.push(' ');
        s.push_str(&b.to_token());
    }
    s
}

/// Writes annotations to a file, one line each.
pub fn write_annotations(path: &Path, annotations: &[Annotation]) -> Result<(), DataError> {
    let mut text = String::new();
    for a in annotations {
        text.push_str(&format_annotation_line(a));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| DataError::io(path, e))
}

/// Checks an annotation's geometry and class ids: every class id below `num_classes` and every box
/// with positive width and height. `file` names the annotation file in the error.
pub fn check_annotation(a: &Annotation, num_classes: usize, file: &Path) -> Result<(), DataError> {
    for b in &a.boxes {
        if b.class >= num_classes {
            return Err(DataError::ClassOutOfRange {
                file: file.to_path_buf(),
                line: a.line,
                token: b.to_token(),
                class: b.class,
                num_classes,
            });
        }
        let reason = if b.width() <= 0.0 {
            Some(format!(
                "x_max {} is not greater than x_min {}",
                fmt_num(b.x_max),
                fmt_num(b.x_min)
            ))
        } else if b.height() <= 0.0 {
            Some(format!(
                "y_max {} is not greater than y_min {}",
                fmt_num(b.y_max),
                fmt_num(b.y_min)
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(DataError::DegenerateBox {
                file: file.to_path_buf(),
                line: a.line,
                token: b.to_token(),
                reason,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Option<Annotation>, DataError> {
        parse_annotation_line(text, Path::new("annotations.txt"), 12)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_keras_line() {
        let a = parse("img/a.jpg 1,2,30,40,0 5,6,7,8,2").unwrap().unwrap();
        assert_eq!(a.path, PathBuf::from("img/a.jpg"));
        assert_eq!(a.line, 12);
        assert_eq!(
            a.boxes,
            vec![
                BoxLabel {
                    x_min: 1.0,
                    y_min: 2.0,
                    x_max: 30.0,
                    y_max: 40.0,
                    class: 0
                },
                BoxLabel {
                    x_min: 5.0,
                    y_min: 6.0,
                    x_max: 7.0,
                    y_max: 8.0,
                    class: 2
                },
            ]
        );
    }

    #[test]
    fn blank_lines_are_none_and_path_only_is_empty_image() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("  \t ").unwrap().is_none());
        let a = parse("x.png").unwrap().unwrap();
        assert!(a.boxes.is_empty());
    }

    #[test]
    fn decimals_and_negatives_parse() {
        let a = parse("x.png -1.5,2.25,3e1,4,1\r").unwrap().unwrap();
        assert_eq!(a.boxes[0].x_min, -1.5);
        assert_eq!(a.boxes[0].y_min, 2.25);
        assert_eq!(a.boxes[0].x_max, 30.0);
    }

    #[test]
    fn error_not_a_number() {
        assert_eq!(
            err("a.jpg 3,4,x,9,0"),
            "annotations.txt:12: bad box token `3,4,x,9,0`: `x` is not a number"
        );
    }

    #[test]
    fn error_nan_and_inf() {
        assert_eq!(
            err("a.jpg NaN,4,5,9,0"),
            "annotations.txt:12: bad box token `NaN,4,5,9,0`: `NaN` is not a number"
        );
        assert_eq!(
            err("a.jpg 1,inf,5,9,0"),
            "annotations.txt:12: bad box token `1,inf,5,9,0`: `inf` is not a number"
        );
        assert_eq!(
            err("a.jpg 1,2,1e39,9,0"),
            "annotations.txt:12: bad box token `1,2,1e39,9,0`: `1e39` is not a finite number"
        );
        assert_eq!(
            err("a.jpg 1,2,,9,0"),
            "annotations.txt:12: bad box token `1,2,,9,0`: `` is not a number"
        );
    }

    #[test]
    fn error_wrong_field_count() {
        assert_eq!(
            err("a.jpg 1,2,3,4"),
            "annotations.txt:12: bad box token `1,2,3,4`: expected 5 comma-separated values \
             x_min,y_min,x_max,y_max,class, found 4"
        );
        assert_eq!(
            err("a.jpg 1,2,3,4,5,6"),
            "annotations.txt:12: bad box token `1,2,3,4,5,6`: expected 5 comma-separated values \
             x_min,y_min,x_max,y_max,class, found 6"
        );
    }

    #[test]
    fn error_bad_class() {
        assert_eq!(
            err("a.jpg 1,2,3,4,-1"),
            "annotations.txt:12: bad box token `1,2,3,4,-1`: class id `-1` is not a non-negative integer"
        );
        assert_eq!(
            err("a.jpg 1,2,3,4,1.0"),
            "annotations.txt:12: bad box token `1,2,3,4,1.0`: class id `1.0` is not a non-negative integer"
        );
        assert_eq!(
            err("a.jpg 1,2,3,4,99999999999999999999999"),
            "annotations.txt:12: bad box token `1,2,3,4,99999999999999999999999`: \
             class id `99999999999999999999999` is too large"
        );
    }

    #[test]
    fn error_too_many_boxes() {
        let line = format!("a.jpg{}", " 1,2,3,4,0".repeat(MAX_BOXES_PER_LINE + 3));
        assert_eq!(
            err(&line),
            format!(
                "annotations.txt:12: {} boxes on one line, at most {MAX_BOXES_PER_LINE} are accepted",
                MAX_BOXES_PER_LINE + 3
            )
        );
    }

    #[test]
    fn read_annotations_reports_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.txt");
        std::fs::write(&p, "a.jpg 1,2,3,4,0\n\nb.jpg 1,2,3,4,0 5,6,7\n").unwrap();
        let e = read_annotations(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:3: bad box token `5,6,7`: expected 5 comma-separated values \
                 x_min,y_min,x_max,y_max,class, found 3",
                p.display()
            )
        );
        std::fs::write(&p, "a.jpg 1,2,3,4,0\n\nb.jpg 1,2,3,4,1\n").unwrap();
        let v = read_annotations(&p).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].line, 3);
        assert_eq!(v[1].boxes[0].class, 1);
    }

    #[test]
    fn read_annotations_missing_file_names_it() {
        let e = read_annotations(Path::new("/nonexistent/dir/train.txt")).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/dir/train.txt: "),
            "{e}"
        );
    }

    #[test]
    fn read_annotations_invalid_utf8_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, b"a.jpg 1,2,3,4,0\nb\xff.jpg\n").unwrap();
        let e = read_annotations(&p).unwrap_err().to_string();
        assert_eq!(e, format!("{}: line 2 is not valid UTF-8", p.display()));
    }

    #[test]
    fn format_writes_integers_without_decimals() {
        let a = Annotation {
            path: "d/x.jpg".into(),
            boxes: vec![
                BoxLabel {
                    x_min: 1.0,
                    y_min: 2.0,
                    x_max: 30.0,
                    y_max: 40.0,
                    class: 0,
                },
                BoxLabel {
                    x_min: 1.5,
                    y_min: -2.0,
                    x_max: 3.25,
                    y_max: 4.0,
                    class: 7,
                },
            ],
            line: 1,
        };
        assert_eq!(
            format_annotation_line(&a),
            "d/x.jpg 1,2,30,40,0 1.5,-2,3.25,4,7"
        );
    }

    #[test]
    fn check_annotation_errors() {
        let p = Path::new("train.txt");
        let a = parse("a.jpg 1,2,3,4,0 1,2,3,4,5").unwrap().unwrap();
        assert_eq!(
            check_annotation(&a, 3, p).unwrap_err().to_string(),
            "train.txt:12: class id 5 in box `1,2,3,4,5` is out of range: there are 3 classes"
        );
        let a = parse("a.jpg 5,2,5,4,0").unwrap().unwrap();
        assert_eq!(
            check_annotation(&a, 3, p).unwrap_err().to_string(),
            "train.txt:12: box `5,2,5,4,0` is empty: x_max 5 is not greater than x_min 5"
        );
        let a = parse("a.jpg 1,9,5,4,0").unwrap().unwrap();
        assert_eq!(
            check_annotation(&a, 3, p).unwrap_err().to_string(),
            "train.txt:12: box `1,9,5,4,0` is empty: y_max 4 is not greater than y_min 9"
        );
        let a = parse("a.jpg 1,2,5,4,2").unwrap().unwrap();
        assert!(check_annotation(&a, 3, p).is_ok());
    }

    fn arb_box() -> impl Strategy<Value = BoxLabel> {
        let coord = prop_oneof![
            (-5000i32..5000).prop_map(|v| v as f32),
            (-1.0e6f32..1.0e6f32),
        ];
        (
            coord.clone(),
            coord.clone(),
            coord.clone(),
            coord,
            0usize..1000,
        )
            .prop_map(|(x_min, y_min, x_max, y_max, class)| BoxLabel {
                x_min,
                y_min,
                x_max,
                y_max,
                class,
            })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(s in "\\PC{0,200}") {
            let _ = parse(&s);
            let _ = parse_annotations(&s, Path::new("f"));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_mutated_valid_lines(
            pos in 0usize..64,
            ch in prop_oneof![Just(','), Just(' '), Just('-'), Just('.'), Just('e'), Just('x'), Just('\n'), any::<char>()],
            del in any::<bool>(),
        ) {
            let base = "imgs/a.jpg 10,20,300,400,0 5.5,6,7,8,12";
            let mut chars: Vec<char> = base.chars().collect();
            let i = pos % chars.len();
            if del { chars.remove(i); } else { chars.insert(i, ch); }
            let s: String = chars.into_iter().collect();
            match parse(&s) {
                Ok(Some(a)) => {
                    for b in &a.boxes {
                        prop_assert!(b.x_min.is_finite() && b.y_min.is_finite());
                        prop_assert!(b.x_max.is_finite() && b.y_max.is_finite());
                    }
                }
                Ok(None) => prop_assert!(s.trim().is_empty()),
                Err(e) => prop_assert!(e.to_string().starts_with("annotations.txt:12: ")),
            }
        }

        #[test]
        fn format_parse_round_trip(
            path in "[a-zA-Z0-9_./-]{1,30}",
            boxes in proptest::collection::vec(arb_box(), 0..8),
        ) {
            let a = Annotation { path: PathBuf::from(&path), boxes, line: 12 };
            let text = format_annotation_line(&a);
            let back = parse(&text).unwrap().unwrap();
            prop_assert_eq!(back, a);
        }
    }
}
