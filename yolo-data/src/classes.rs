//! Classes files: one class name a line, the line index being the class id
//! (keras-yolo3's `model_data/*_classes.txt`).

use std::collections::HashMap;
use std::path::Path;

use crate::DataError;

/// The 80 COCO class names in darknet's `coco.names` order (keras-yolo3's
/// `model_data/coco_classes.txt`): the classes of COCO-pretrained darknet weights, used when such
/// weights come without a classes file.
pub fn coco80_classes() -> Vec<String> {
    include_str!("coco80.names")
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// Parses the text of a classes file (`file` names it in errors). Names are trimmed. Blank lines at
/// the end are ignored; a blank line between names is an error (it would shift every later id, where
/// keras-yolo3 would silently make an empty class), and so is a duplicate name. A leading UTF-8
/// byte order mark is not part of the first name.
pub fn parse_classes(text: &str, file: &Path) -> Result<Vec<String>, DataError> {
    let text = crate::strip_bom(text);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let used = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    let mut names: Vec<String> = Vec::with_capacity(used);
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(used);
    for (i, name) in lines[..used].iter().enumerate() {
        let bad = |reason: String| DataError::BadClassName {
            file: file.to_path_buf(),
            line: i + 1,
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("empty line between class names".into()));
        }
        if let Some(j) = seen.insert(name, i) {
            return Err(bad(format!("duplicate of line {}", j + 1)));
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err(DataError::NoClasses {
            file: file.to_path_buf(),
        });
    }
    Ok(names)
}

/// Reads a classes file (see [`parse_classes`]).
pub fn read_classes(path: &Path) -> Result<Vec<String>, DataError> {
    let text = crate::read_text(path)?;
    parse_classes(&text, path)
}

/// Writes a classes file, one name a line.
pub fn write_classes(path: &Path, names: &[String]) -> Result<(), DataError> {
    let mut text = names.join("\n");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Vec<String>, DataError> {
        parse_classes(text, Path::new("voc_classes.txt"))
    }

    #[test]
    fn parses_names_trimmed_and_ignores_trailing_blanks() {
        assert_eq!(
            parse("aeroplane\r\n bicycle \nbird\n\n\n").unwrap(),
            vec!["aeroplane", "bicycle", "bird"]
        );
        assert_eq!(parse("two words").unwrap(), vec!["two words"]);
    }

    #[test]
    fn error_blank_between_names() {
        assert_eq!(
            parse("cat\n\ndog\n").unwrap_err().to_string(),
            "voc_classes.txt:2: bad class name ``: empty line between class names"
        );
    }

    #[test]
    fn error_duplicate() {
        assert_eq!(
            parse("cat\ndog\ncat\n").unwrap_err().to_string(),
            "voc_classes.txt:3: bad class name `cat`: duplicate of line 1"
        );
    }

    #[test]
    fn error_empty_file() {
        assert_eq!(
            parse("\n \n").unwrap_err().to_string(),
            "voc_classes.txt: no class names in the file"
        );
    }

    #[test]
    fn write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        let names = vec!["circle".to_string(), "square".into(), "triangle".into()];
        write_classes(&p, &names).unwrap();
        assert_eq!(read_classes(&p).unwrap(), names);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            if let Ok(names) = parse(&s) {
                prop_assert!(!names.is_empty());
                prop_assert!(names.iter().all(|n| !n.is_empty()));
            }
        }
    }
}

#[cfg(test)]
mod coco80_tests {
    #[test]
    fn coco80_has_the_80_darknet_names_in_order() {
        let c = super::coco80_classes();
        assert_eq!(c.len(), 80);
        assert_eq!((c[0].as_str(), c[15].as_str()), ("person", "cat"));
        assert_eq!((c[21].as_str(), c[79].as_str()), ("bear", "toothbrush"));
    }
}
