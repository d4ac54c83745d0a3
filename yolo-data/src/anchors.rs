//! Anchor boxes: keras-yolo3's defaults, the layer masks, and anchors files
//! (`10,13,  16,30,  33,23, ...`, as `model_data/yolo_anchors.txt`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Anchor (width, height) pairs in input pixels, smallest first as keras-yolo3 writes them.
/// Nine anchors mean YOLOv3 (3 output layers), six mean tiny YOLOv3 (2 output layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anchors {
    /// The (width, height) pairs.
    pub wh: Vec<[f32; 2]>,
    /// Anchor indices per output layer, coarsest grid first, when they are not keras-yolo3's
    /// `anchor_mask` (a darknet `.cfg`'s `mask=` lines); see [`Anchors::masks`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_masks: Option<Vec<Vec<usize>>>,
}

impl Anchors {
    /// keras-yolo3's `model_data/yolo_anchors.txt` (YOLOv3 on COCO at 416x416).
    pub fn yolo_default() -> Self {
        Self::from_pairs(&[
            (10, 13),
            (16, 30),
            (33, 23),
            (30, 61),
            (62, 45),
            (59, 119),
            (116, 90),
            (156, 198),
            (373, 326),
        ])
    }

    /// keras-yolo3's `model_data/tiny_yolo_anchors.txt`.
    pub fn tiny_default() -> Self {
        Self::from_pairs(&[
            (10, 14),
            (23, 27),
            (37, 58),
            (81, 82),
            (135, 169),
            (344, 319),
        ])
    }

    fn from_pairs(p: &[(u16, u16)]) -> Self {
        Anchors {
            wh: p
                .iter()
                .map(|&(w, h)| [f32::from(w), f32::from(h)])
                .collect(),
            custom_masks: None,
        }
    }

    /// These anchors with each output layer's anchor indices given (a darknet `.cfg`'s `mask=`
    /// lines, coarsest grid first) instead of keras-yolo3's. Every layer must name 3 anchors
    /// that exist, and there must be as many layers as the anchor count implies.
    pub fn with_masks(mut self, masks: Vec<Vec<usize>>) -> Result<Self, DataError> {
        let bad = |msg: String| DataError::Config(format!("anchor masks {masks:?}: {msg}"));
        if masks.len() != self.num_layers() {
            return Err(bad(format!(
                "{} anchors mean {} output layers, the masks give {}",
                self.wh.len(),
                self.num_layers(),
                masks.len()
            )));
        }
        if let Some(m) = masks.iter().find(|m| m.len() != 3) {
            return Err(bad(format!("{m:?} does not name 3 anchors")));
        }
        if let Some(i) = masks.iter().flatten().find(|&&i| i >= self.wh.len()) {
            return Err(bad(format!(
                "anchor {i} does not exist ({} anchors)",
                self.wh.len()
            )));
        }
        self.custom_masks = Some(masks);
        Ok(self)
    }

    /// Number of output layers: 2 for six anchors (tiny), 3 otherwise (YOLOv3 has nine).
    pub fn num_layers(&self) -> usize {
        if self.wh.len() == 6 {
            2
        } else {
            3
        }
    }

    /// Anchor indices per output layer, coarsest grid first, as keras-yolo3's `anchor_mask`:
    /// `[[6,7,8],[3,4,5],[0,1,2]]` for YOLOv3 and `[[3,4,5],[1,2,3]]` for tiny (anchor 0 unused,
    /// anchor 3 shared, exactly as keras-yolo3), unless [`Anchors::with_masks`] gave others.
    pub fn masks(&self) -> Vec<Vec<usize>> {
        if let Some(m) = &self.custom_masks {
            m.clone()
        } else if self.num_layers() == 2 {
            vec![vec![3, 4, 5], vec![1, 2, 3]]
        } else {
            vec![vec![6, 7, 8], vec![3, 4, 5], vec![0, 1, 2]]
        }
    }

    /// The anchors of output layer `l` (0 = coarsest grid).
    ///
    /// # Panics
    /// When `l >= num_layers()` or the anchors are fewer than the mask expects.
    pub fn layer(&self, l: usize) -> Vec<[f32; 2]> {
        self.masks()[l].iter().map(|&i| self.wh[i]).collect()
    }

    /// Formats as an anchors file line: `10,13,  16,30, ...` (whole numbers without decimals).
    pub fn to_file_string(&self) -> String {
        self.wh
            .iter()
            .map(|[w, h]| format!("{w},{h}"))
            .collect::<Vec<_>>()
            .join(",  ")
    }
}

/// Parses the text of an anchors file (`file` names it in errors). Values are separated by commas
/// and/or whitespace and may span lines; keras-yolo3 reads the first line only. Each value must be a
/// positive finite number; there must be 18 (YOLOv3) or 12 (tiny) of them.
pub fn parse_anchors(text: &str, file: &Path) -> Result<Anchors, DataError> {
    // 18 values are the most accepted; stop collecting beyond a small margin so a huge file
    // cannot make us allocate much, while still reporting the count for moderate mistakes.
    const COLLECT_CAP: usize = 1024;
    let mut values = Vec::new();
    let mut found = 0usize;
    for (i, l) in text.lines().enumerate() {
        for token in l.split(|c: char| c == ',' || c.is_whitespace()) {
            if token.is_empty() {
                continue;
            }
            let bad = |reason: String| DataError::BadAnchorToken {
                file: file.to_path_buf(),
                line: i + 1,
                token: token.to_string(),
                reason,
            };
            let numeric = token
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
            let v: f32 = if numeric { token.parse().ok() } else { None }
                .ok_or_else(|| bad("not a number".into()))?;
            if !v.is_finite() || v <= 0.0 {
                return Err(bad("an anchor size must be a positive finite number".into()));
            }
            found += 1;
            if values.len() < COLLECT_CAP {
                values.push(v);
            }
        }
    }
    if found != 18 && found != 12 {
        return Err(DataError::AnchorCount {
            file: file.to_path_buf(),
            found,
        });
    }
    Ok(Anchors {
        custom_masks: None,
        wh: values.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
    })
}

/// Reads an anchors file (see [`parse_anchors`]).
pub fn read_anchors(path: &Path) -> Result<Anchors, DataError> {
    let text = crate::read_text(path)?;
    parse_anchors(&text, path)
}

/// Writes an anchors file in keras-yolo3's one-line format.
pub fn write_anchors(path: &Path, anchors: &Anchors) -> Result<(), DataError> {
    std::fs::write(path, anchors.to_file_string() + "\n").map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KERAS_YOLO: &str =
        "10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  373,326\n";

    fn parse(text: &str) -> Result<Anchors, DataError> {
        parse_anchors(text, Path::new("yolo_anchors.txt"))
    }

    #[test]
    fn parses_keras_file_and_defaults_match() {
        assert_eq!(parse(KERAS_YOLO).unwrap(), Anchors::yolo_default());
        let tiny = parse("10,14,  23,27,  37,58,  81,82,  135,169,  344,319").unwrap();
        assert_eq!(tiny, Anchors::tiny_default());
        assert_eq!(Anchors::yolo_default().to_file_string() + "\n", KERAS_YOLO);
    }

    #[test]
    fn masks_and_layers_follow_keras() {
        let y = Anchors::yolo_default();
        assert_eq!(y.num_layers(), 3);
        assert_eq!(y.masks(), vec![vec![6, 7, 8], vec![3, 4, 5], vec![0, 1, 2]]);
        assert_eq!(
            y.layer(0),
            vec![[116.0, 90.0], [156.0, 198.0], [373.0, 326.0]]
        );
        assert_eq!(y.layer(2), vec![[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]);
        let t = Anchors::tiny_default();
        assert_eq!(t.num_layers(), 2);
        assert_eq!(t.masks(), vec![vec![3, 4, 5], vec![1, 2, 3]]);
        assert_eq!(t.layer(1), vec![[23.0, 27.0], [37.0, 58.0], [81.0, 82.0]]);
    }

    #[test]
    fn error_count() {
        assert_eq!(
            parse("10,13, 16,30").unwrap_err().to_string(),
            "yolo_anchors.txt: found 4 anchor values, expected 18 (9 pairs, YOLOv3) or 12 (6 pairs, tiny YOLOv3)"
        );
        assert_eq!(
            parse("").unwrap_err().to_string(),
            "yolo_anchors.txt: found 0 anchor values, expected 18 (9 pairs, YOLOv3) or 12 (6 pairs, tiny YOLOv3)"
        );
    }

    #[test]
    fn error_bad_value_names_line_and_token() {
        assert_eq!(
            parse("10,13,\n16,3x0").unwrap_err().to_string(),
            "yolo_anchors.txt:2: bad anchor value `3x0`: not a number"
        );
        assert_eq!(
            parse("10,-13").unwrap_err().to_string(),
            "yolo_anchors.txt:1: bad anchor value `-13`: an anchor size must be a positive finite number"
        );
        assert_eq!(
            parse("10,0").unwrap_err().to_string(),
            "yolo_anchors.txt:1: bad anchor value `0`: an anchor size must be a positive finite number"
        );
        assert_eq!(
            parse("10,nan").unwrap_err().to_string(),
            "yolo_anchors.txt:1: bad anchor value `nan`: not a number"
        );
    }

    #[test]
    fn write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        let a = Anchors {
            custom_masks: None,
            wh: vec![
                [1.5, 2.0],
                [3.0, 4.0],
                [5.0, 6.0],
                [7.0, 8.0],
                [9.0, 10.0],
                [11.0, 12.25],
            ],
        };
        write_anchors(&p, &a).unwrap();
        assert_eq!(read_anchors(&p).unwrap(), a);
        let e = read_anchors(&dir.path().join("missing.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{}: ", dir.path().join("missing.txt").display())));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_mutations(pos in 0usize..80, ch in any::<char>(), del in any::<bool>()) {
            let mut chars: Vec<char> = KERAS_YOLO.chars().collect();
            let i = pos % chars.len();
            if del { chars.remove(i); } else { chars.insert(i, ch); }
            let s: String = chars.into_iter().collect();
            if let Ok(a) = parse(&s) {
                prop_assert!(a.wh.len() == 9 || a.wh.len() == 6);
            }
        }
    }
}
