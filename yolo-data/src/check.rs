//! `check_dataset`: a whole-file audit of a keras-yolo3 annotation file and its images, reporting
//! every problem with its file and line (`train.txt:12: empty-box: box `5,2,5,4,0` is empty: ...`)
//! instead of stopping at the first, plus a count per kind.
//!
//! What is checked, line by line:
//! - the line is valid UTF-8 and every box token parses ([`parse_annotation_line`]; when a line
//!   fails, each token is parsed on its own so that every bad token is reported);
//! - every box has a class id below the number of classes and a positive width and height
//!   ([`check_annotation`], box by box);
//! - no coordinate is negative, and no box reaches past the image's right or bottom edge (corners
//!   are inclusive and VOC's are 1-based, so `x_max == width` is allowed);
//! - the image exists, is not empty, is not truncated and decodes completely ([`load_rgb`], which
//!   refuses a JPEG without its end-of-image marker and a PNG without its `IEND` chunk, and reports
//!   corrupt data). With [`CheckOptions::decode`] off no pixel is decoded
//!   ([`read_image_header`]): the file is still read and its structure walked, so a file cut off
//!   anywhere is caught, but corrupt scan data or a bad PNG CRC passes;
//! - the line is not an exact repeat of an earlier one (same tokens; a warning, since training
//!   still works — that image just counts twice).
//!
//! And for the file as a whole (problems with line 0, printed `file: kind: detail`):
//! - at least one line has a box (`no-boxes`, an error: nothing to learn);
//! - every class occurs in some box (`unused-class`, a warning naming the class).
//!
//! A leading UTF-8 byte order mark is ignored.
//!
//! Images are checked once each, in parallel (rayon), however many lines name them.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::{
    check_annotation, load_rgb, parse_annotation_line, read_image_header, Annotation, DataError,
};

/// The kinds of problem [`check_dataset`] reports, in the order the summary lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// A line that does not parse: bad box token, too many boxes, invalid UTF-8.
    Malformed,
    /// The image file does not exist.
    MissingImage,
    /// The image exists but cannot be used: empty file, not an image, truncated or corrupt.
    UnreadableImage,
    /// A box with `x_max <= x_min` or `y_max <= y_min`.
    EmptyBox,
    /// A box reaching past the image's right or bottom edge, or starting beyond it.
    OutsideImage,
    /// A class id not below the number of classes.
    ClassOutOfRange,
    /// A negative coordinate.
    NegativeValue,
    /// A line repeating an earlier line exactly (a warning).
    DuplicateLine,
    /// No line of the file has a box (or the file has no line): an error of the whole file.
    NoBoxes,
    /// A class that no box uses (a warning of the whole file).
    UnusedClass,
}

impl ProblemKind {
    /// Every kind, in summary order.
    pub const ALL: [ProblemKind; 10] = [
        ProblemKind::Malformed,
        ProblemKind::MissingImage,
        ProblemKind::UnreadableImage,
        ProblemKind::EmptyBox,
        ProblemKind::OutsideImage,
        ProblemKind::ClassOutOfRange,
        ProblemKind::NegativeValue,
        ProblemKind::DuplicateLine,
        ProblemKind::NoBoxes,
        ProblemKind::UnusedClass,
    ];

    /// The name printed in reports (`missing-image`).
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Malformed => "malformed",
            ProblemKind::MissingImage => "missing-image",
            ProblemKind::UnreadableImage => "unreadable-image",
            ProblemKind::EmptyBox => "empty-box",
            ProblemKind::OutsideImage => "outside-image",
            ProblemKind::ClassOutOfRange => "class-out-of-range",
            ProblemKind::NegativeValue => "negative-value",
            ProblemKind::DuplicateLine => "duplicate-line",
            ProblemKind::NoBoxes => "no-boxes",
            ProblemKind::UnusedClass => "unused-class",
        }
    }

    /// Whether this kind makes the data unusable as is (all but duplicate lines and unused
    /// classes).
    pub fn is_error(self) -> bool {
        !matches!(self, ProblemKind::DuplicateLine | ProblemKind::UnusedClass)
    }

    /// Whether this kind concerns the whole file rather than a line (reported with line 0, and
    /// listed in the summary only when found).
    pub fn is_file_level(self) -> bool {
        matches!(self, ProblemKind::NoBoxes | ProblemKind::UnusedClass)
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem found on one line (or, with line 0, in the whole file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number in the annotation file; 0 for a problem of the whole file.
    pub line: usize,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What exactly: the token, values or image concerned.
    pub detail: String,
}

/// Options of [`check_dataset`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Folder relative image paths are resolved against; `None`: as written, i.e. against the
    /// working directory, as keras-yolo3 and `yolo train` do.
    pub images_root: Option<PathBuf>,
    /// Check the images at all (existence, decoding, box bounds).
    pub check_images: bool,
    /// Decode every image completely (catches corrupt data); off: read the header and walk the
    /// file's structure only (still catches truncated files).
    pub decode: bool,
    /// The class names, to name a class that never occurs; empty: classes are named by id only.
    pub class_names: Vec<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            images_root: None,
            check_images: true,
            decode: true,
            class_names: Vec::new(),
        }
    }
}

/// The outcome of [`check_dataset`]: every problem, sorted by line, and what was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The annotation file.
    pub file: PathBuf,
    /// Non-blank lines read.
    pub lines: usize,
    /// Boxes on the lines that parsed.
    pub boxes: usize,
    /// Distinct image files checked.
    pub images: usize,
    /// Every problem, sorted by line then kind.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether any problem other than a warning (duplicate line) was found.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.kind.is_error())
    }

    /// Number of problems of `kind`.
    pub fn count(&self, kind: ProblemKind) -> usize {
        self.problems.iter().filter(|p| p.kind == kind).count()
    }

    /// Whether an error concerns the whole file (no line has a box): dropping bad lines
    /// (`yolo train --skip-bad`) cannot fix it.
    pub fn has_file_errors(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.kind.is_error() && p.kind.is_file_level())
    }

    /// Number of error problems (warnings excluded).
    pub fn error_count(&self) -> usize {
        self.problems.iter().filter(|p| p.kind.is_error()).count()
    }

    /// The 1-based lines with at least one error: the samples `yolo train --skip-bad` drops
    /// (compare with [`Annotation::line`]). Duplicate lines (warnings) are not included.
    pub fn bad_lines(&self) -> BTreeSet<usize> {
        self.problems
            .iter()
            .filter(|p| p.kind.is_error() && p.line > 0)
            .map(|p| p.line)
            .collect()
    }
}

impl CheckReport {
    /// The report line of one problem, `file:line: kind: detail` (as [`fmt::Display`] prints it,
    /// and as `yolo train --skip-bad` lists the samples it drops).
    pub fn problem_line(&self, p: &Problem) -> String {
        if p.line == 0 {
            return format!("{}: {}: {}", self.file.display(), p.kind, p.detail);
        }
        format!(
            "{}:{}: {}: {}",
            self.file.display(),
            p.line,
            p.kind,
            p.detail
        )
    }
}

impl fmt::Display for CheckReport {
    /// One line per problem, `file:line: kind: detail`, then a summary table of counts per kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for p in &self.problems {
            writeln!(f, "{}", self.problem_line(p))?;
        }
        writeln!(
            f,
            "{file}: {} lines, {} boxes, {} images checked",
            self.lines, self.boxes, self.images
        )?;
        for kind in ProblemKind::ALL {
            if kind.is_file_level() && self.count(kind) == 0 {
                continue;
            }
            let note = if kind.is_error() { "" } else { " (warning)" };
            writeln!(f, "  {:<20}{:>8}{note}", kind.name(), self.count(kind))?;
        }
        let warnings = self.problems.len() - self.error_count();
        write!(f, "  {} errors, {} warnings", self.error_count(), warnings)
    }
}

/// What checking one image found: its size, or the problem.
type ImageOutcome = Result<(u32, u32), (ProblemKind, String)>;

fn check_image(path: &Path, decode: bool) -> ImageOutcome {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                ProblemKind::MissingImage,
                format!("{}: {e}", path.display()),
            ))
        }
        Err(e) => {
            return Err((
                ProblemKind::UnreadableImage,
                format!("{}: {e}", path.display()),
            ))
        }
    };
    if !meta.is_file() {
        return Err((
            ProblemKind::UnreadableImage,
            format!("{}: not a regular file", path.display()),
        ));
    }
    if meta.len() == 0 {
        return Err((
            ProblemKind::UnreadableImage,
            format!("{}: empty file (0 bytes)", path.display()),
        ));
    }
    // The errors of both paths (`DataError::Image`, `TruncatedImage`, `Io`) start with the path.
    let unreadable = |e: DataError| (ProblemKind::UnreadableImage, e.to_string());
    if decode {
        let img = load_rgb(path).map_err(unreadable)?;
        Ok(img.dimensions())
    } else {
        read_image_header(path).map_err(unreadable)
    }
}

/// The problem text of a parser error without its `file:line: ` prefix.
fn parse_detail(e: &DataError) -> String {
    match e {
        DataError::BadBoxToken { token, reason, .. } => {
            format!("bad box token `{token}`: {reason}")
        }
        DataError::TooManyBoxes { count, max, .. } => {
            format!("{count} boxes on one line, at most {max} are accepted")
        }
        DataError::ClassOutOfRange {
            token,
            class,
            num_classes,
            ..
        } => format!(
            "class id {class} in box `{token}` is out of range: there are {num_classes} classes"
        ),
        DataError::DegenerateBox { token, reason, .. } => {
            format!("box `{token}` is empty: {reason}")
        }
        other => other.to_string(),
    }
}

/// Checks the annotation file `annotation_path` against `num_classes` classes and its images (see
/// the module doc). Only failing to read the annotation file itself is an `Err`; everything wrong
/// inside it is a [`Problem`] of the report.
pub fn check_dataset(
    annotation_path: &Path,
    num_classes: usize,
    opts: &CheckOptions,
) -> Result<CheckReport, DataError> {
    let bytes = std::fs::read(annotation_path).map_err(|e| DataError::io(annotation_path, e))?;
    Ok(check_annotation_bytes(
        &bytes,
        annotation_path,
        num_classes,
        opts,
    ))
}

/// [`check_dataset`] on the bytes of an annotation file already read (`file` names it).
pub fn check_annotation_bytes(
    bytes: &[u8],
    file: &Path,
    num_classes: usize,
    opts: &CheckOptions,
) -> CheckReport {
    let mut problems = Vec::new();
    let mut parsed: Vec<Annotation> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut lines = 0;
    // Image path (as written) of each line that has one, for lines that do not parse too.
    let mut line_images: Vec<(usize, String)> = Vec::new();
    let bytes = crate::strip_bom_bytes(bytes);

    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            lines += 1;
            problems.push(Problem {
                line,
                kind: ProblemKind::Malformed,
                detail: "line is not valid UTF-8".into(),
            });
            continue;
        };
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let Some(&path) = tokens.first() else {
            continue;
        };
        lines += 1;
        line_images.push((line, path.to_string()));
        let normal = tokens.join(" ");
        if let Some(&first) = seen.get(&normal) {
            problems.push(Problem {
                line,
                kind: ProblemKind::DuplicateLine,
                detail: format!("same as line {first}"),
            });
        } else {
            seen.insert(normal, line);
        }
        match parse_annotation_line(text, file, line) {
            Ok(Some(a)) => parsed.push(a),
            Ok(None) => {}
            Err(e @ DataError::TooManyBoxes { .. }) => problems.push(Problem {
                line,
                kind: ProblemKind::Malformed,
                detail: parse_detail(&e),
            }),
            Err(_) => {
                // Report every bad token, not just the first: parse each on its own.
                for token in &tokens[1..] {
                    if let Err(e) = parse_annotation_line(&format!("_ {token}"), file, line) {
                        problems.push(Problem {
                            line,
                            kind: ProblemKind::Malformed,
                            detail: parse_detail(&e),
                        });
                    }
                }
            }
        }
    }

    // Box checks that need no image.
    let mut boxes = 0;
    for a in &parsed {
        boxes += a.boxes.len();
        for b in &a.boxes {
            let one = Annotation {
                path: a.path.clone(),
                boxes: vec![*b],
                line: a.line,
            };
            if let Err(e) = check_annotation(&one, num_classes, file) {
                let kind = match e {
                    DataError::ClassOutOfRange { .. } => ProblemKind::ClassOutOfRange,
                    _ => ProblemKind::EmptyBox,
                };
                problems.push(Problem {
                    line: a.line,
                    kind,
                    detail: parse_detail(&e),
                });
                // An out-of-range class says nothing about the geometry: check that too.
                if kind == ProblemKind::ClassOutOfRange {
                    let fixed = Annotation {
                        boxes: vec![crate::BoxLabel { class: 0, ..*b }],
                        ..one
                    };
                    if let Err(DataError::DegenerateBox { reason, .. }) =
                        check_annotation(&fixed, 1, file)
                    {
                        problems.push(Problem {
                            line: a.line,
                            kind: ProblemKind::EmptyBox,
                            detail: format!("box `{}` is empty: {reason}", b.to_token()),
                        });
                    }
                }
            }
            let negative: Vec<String> = [
                ("x_min", b.x_min),
                ("y_min", b.y_min),
                ("x_max", b.x_max),
                ("y_max", b.y_max),
            ]
            .iter()
            .filter(|(_, v)| *v < 0.0)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
            if !negative.is_empty() {
                problems.push(Problem {
                    line: a.line,
                    kind: ProblemKind::NegativeValue,
                    detail: format!("box `{}` has {}", b.to_token(), negative.join(", ")),
                });
            }
        }
    }

    // The file as a whole: something to learn, and every class used.
    if boxes == 0 {
        let detail = if lines == 0 {
            "the file has no annotation line: nothing to learn".to_string()
        } else {
            format!(
                "none of the {lines} lines has a box: nothing to learn (check the classes file \
                 and the conversion: were all objects dropped as unlisted classes?)"
            )
        };
        problems.push(Problem {
            line: 0,
            kind: ProblemKind::NoBoxes,
            detail,
        });
    } else {
        let mut used = vec![false; num_classes];
        for b in parsed.iter().flat_map(|a| &a.boxes) {
            if let Some(u) = used.get_mut(b.class) {
                *u = true;
            }
        }
        let named = opts.class_names.len() == num_classes;
        for (class, _) in used.iter().enumerate().filter(|(_, u)| !**u) {
            let detail = if named {
                format!(
                    "class {class} `{}` never occurs in a box: the model cannot learn it",
                    opts.class_names[class]
                )
            } else {
                format!("class {class} never occurs in a box: the model cannot learn it")
            };
            problems.push(Problem {
                line: 0,
                kind: ProblemKind::UnusedClass,
                detail,
            });
        }
    }

    // Images: each distinct path once, in parallel.
    let resolve = |p: &str| match &opts.images_root {
        Some(root) if Path::new(p).is_relative() => root.join(p),
        _ => PathBuf::from(p),
    };
    let mut images = 0;
    if opts.check_images {
        let mut unique: Vec<&str> = line_images.iter().map(|(_, p)| p.as_str()).collect();
        unique.sort_unstable();
        unique.dedup();
        images = unique.len();
        let outcomes: HashMap<&str, ImageOutcome> = unique
            .par_iter()
            .map(|p| (*p, check_image(&resolve(p), opts.decode)))
            .collect();
        for (line, p) in &line_images {
            if let Some(Err((kind, detail))) = outcomes.get(p.as_str()) {
                // Codec messages may span lines (zune-jpeg ends some with a newline): one line.
                let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
                problems.push(Problem {
                    line: *line,
                    kind: *kind,
                    detail,
                });
            }
        }
        for a in &parsed {
            let key = a.path.to_str().unwrap_or_default();
            let Some(Ok((w, h))) = outcomes.get(key) else {
                continue;
            };
            let (wf, hf) = (*w as f32, *h as f32);
            for b in &a.boxes {
                let mut over = Vec::new();
                if b.x_min >= wf {
                    over.push(format!("x_min {} >= width {w}", b.x_min));
                }
                if b.y_min >= hf {
                    over.push(format!("y_min {} >= height {h}", b.y_min));
                }
                if b.x_max > wf {
                    over.push(format!("x_max {} > width {w}", b.x_max));
                }
                if b.y_max > hf {
                    over.push(format!("y_max {} > height {h}", b.y_max));
                }
                if !over.is_empty() {
                    problems.push(Problem {
                        line: a.line,
                        kind: ProblemKind::OutsideImage,
                        detail: format!(
                            "box `{}` is outside the {w}x{h} image {}: {}",
                            b.to_token(),
                            resolve(key).display(),
                            over.join(", ")
                        ),
                    });
                }
            }
        }
    }

    // Stable sort: within a line and kind, problems keep their token order.
    problems.sort_by_key(|p| (p.line, p.kind));
    CheckReport {
        file: file.to_path_buf(),
        lines,
        boxes,
        images,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str, classes: usize) -> CheckReport {
        let opts = CheckOptions {
            check_images: false,
            ..Default::default()
        };
        check_annotation_bytes(text.as_bytes(), Path::new("t.txt"), classes, &opts)
    }

    #[test]
    fn class_out_of_range_and_empty_box_are_both_reported() {
        let r = report("a.jpg 5,2,5,4,7\n", 3);
        let (file, line): (Vec<&Problem>, Vec<&Problem>) =
            r.problems.iter().partition(|p| p.kind.is_file_level());
        let kinds: Vec<_> = line.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            vec![ProblemKind::EmptyBox, ProblemKind::ClassOutOfRange]
        );
        assert_eq!(
            line[0].detail,
            "box `5,2,5,4,7` is empty: x_max 5 is not greater than x_min 5"
        );
        // No box of a valid class: each of the 3 classes is reported unused, as a warning.
        let details: Vec<&str> = file.iter().map(|p| p.detail.as_str()).collect();
        assert_eq!(
            details,
            [0, 1, 2]
                .map(|k| format!("class {k} never occurs in a box: the model cannot learn it"))
        );
        assert!(file
            .iter()
            .all(|p| p.kind == ProblemKind::UnusedClass && p.line == 0));
    }

    #[test]
    fn blank_lines_are_not_counted_and_crlf_is_accepted() {
        let r = report("a.jpg 1,2,3,4,0\r\n\r\n\nb.jpg\r\n", 1);
        assert_eq!((r.lines, r.boxes), (2, 1));
        assert!(r.problems.is_empty(), "{r}");
        assert!(!r.has_errors());
    }
}
