//! Pascal VOC XML folders to annotation lines, like keras-yolo3's `voc_annotation.py`: one line per
//! XML file, `image_path x_min,y_min,x_max,y_max,class ...`, skipping objects marked
//! `<difficult>1</difficult>` (unless asked to keep them) and objects whose class is not listed.
//!
//! Layouts found automatically under a root folder: `Annotations/` + `JPEGImages/` (VOC),
//! `annotations/` + `images/` (the raccoon dataset), or XML files directly in the root (images
//! beside them). XML files are taken in natural order (`raccoon-2` before `raccoon-10`), or in the
//! order of an image-set file (`ImageSets/Main/train.txt`: one id a line) when one is given.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::{Annotation, BoxLabel, DataError};

/// Options of [`convert_voc`]; the default is keras-yolo3's behaviour with classes collected.
#[derive(Clone, Debug, Default)]
pub struct VocOptions {
    /// Class names (the id is the index). `None`: every name met, sorted, becomes a class.
    pub classes: Option<Vec<String>>,
    /// Keep objects marked difficult (keras-yolo3 drops them).
    pub include_difficult: bool,
    /// Image-set file listing the ids (XML stems) to convert, in order; `None`: every XML file.
    pub image_set: Option<PathBuf>,
    /// Overrides the detected folder of XML files.
    pub annotations_dir: Option<PathBuf>,
    /// Overrides the detected folder of images (the XML's `<filename>` is looked up there).
    pub images_dir: Option<PathBuf>,
}

/// The result of a conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct VocDataset {
    /// One annotation per XML file, in conversion order (`line` = 1-based output line).
    pub annotations: Vec<Annotation>,
    /// The class names, the id being the index.
    pub classes: Vec<String>,
    /// Objects left out because they are marked difficult.
    pub skipped_difficult: usize,
    /// Objects left out because their class is not in the given list.
    pub skipped_unknown_class: usize,
    /// The first distinct names (at most [`UNLISTED_NAMES_KEPT`]) of those objects, in the order met.
    pub unlisted_names: Vec<String>,
}

/// How many distinct unlisted class names [`VocDataset::unlisted_names`] keeps.
pub const UNLISTED_NAMES_KEPT: usize = 5;

/// One `<object>` of a VOC XML file.
#[derive(Clone, Debug, PartialEq)]
pub struct VocObject {
    /// `<name>`, trimmed.
    pub name: String,
    /// `<difficult>` is 1 (absent means 0).
    pub difficult: bool,
    /// `<bndbox>`: x_min, y_min, x_max, y_max.
    pub bbox: [f32; 4],
}

/// What one VOC XML file says.
#[derive(Clone, Debug, PartialEq)]
pub struct VocRecord {
    /// `<filename>`, or `None` when absent.
    pub filename: Option<String>,
    /// Every `<object>`, in file order.
    pub objects: Vec<VocObject>,
}

fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn text_of<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    child(node, name).map(|c| c.text().unwrap_or("").trim())
}

/// Parses the text of one VOC XML file; `file` names it in errors.
pub fn parse_voc_xml(text: &str, file: &Path) -> Result<VocRecord, DataError> {
    let err = |message: String| DataError::Voc {
        file: file.to_path_buf(),
        message,
    };
    let doc = roxmltree::Document::parse(text).map_err(|e| err(format!("invalid XML: {e}")))?;
    let root = doc.root_element();
    if !root.has_tag_name("annotation") {
        return Err(err(format!(
            "root element is <{}>, expected <annotation>",
            root.tag_name().name()
        )));
    }
    let filename = text_of(root, "filename")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let mut objects = Vec::new();
    for (i, obj) in root
        .children()
        .filter(|c| c.has_tag_name("object"))
        .enumerate()
    {
        let n = i + 1;
        let name = text_of(obj, "name")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err(format!("object {n} has no <name>")))?
            .to_string();
        let difficult = match text_of(obj, "difficult") {
            None | Some("") | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(err(format!(
                    "object {n} (`{name}`): <difficult> is `{other}`, expected 0 or 1"
                )))
            }
        };
        let bndbox = child(obj, "bndbox")
            .ok_or_else(|| err(format!("object {n} (`{name}`) has no <bndbox>")))?;
        let mut bbox = [0f32; 4];
        for (slot, tag) in bbox.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
            let t = text_of(bndbox, tag)
                .ok_or_else(|| err(format!("object {n} (`{name}`): <bndbox> has no <{tag}>")))?;
            let numeric = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
            *slot = if numeric { t.parse::<f32>().ok() } else { None }
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    err(format!(
                        "object {n} (`{name}`): <{tag}> `{t}` is not a number"
                    ))
                })?;
        }
        objects.push(VocObject {
            name,
            difficult,
            bbox,
        });
    }
    Ok(VocRecord { filename, objects })
}

/// Compares strings with digit runs compared as numbers (`a2` < `a10`).
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..la], &b[..lb]);
                let ta = trim_zeros(da);
                let tb = trim_zeros(db);
                let ord = ta.len().cmp(&tb.len()).then(ta.cmp(tb)).then(la.cmp(&lb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[la..];
                b = &b[lb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z..]
}

/// The (annotations, images) folders of a VOC-style root folder (see the module doc).
pub fn voc_layout(root: &Path) -> (PathBuf, PathBuf) {
    for (ann, img) in [("Annotations", "JPEGImages"), ("annotations", "images")] {
        if root.join(ann).is_dir() {
            let img_dir = root.join(img);
            return (
                root.join(ann),
                if img_dir.is_dir() {
                    img_dir
                } else {
                    root.to_path_buf()
                },
            );
        }
    }
    (root.to_path_buf(), root.to_path_buf())
}

fn list_xml(dir: &Path, opts: &VocOptions) -> Result<Vec<PathBuf>, DataError> {
    if let Some(set) = &opts.image_set {
        let text = crate::read_text(set)?;
        // VOC image-set files may carry a second column (`id  1`) in the per-class lists.
        return Ok(text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|id| dir.join(format!("{id}.xml")))
            .collect());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for e in entries {
        let p = e.map_err(|e| DataError::io(dir, e))?.path();
        if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")) && p.is_file() {
            files.push(p);
        }
    }
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

/// Converts a VOC-style folder to annotations and a class list (see the module doc).
pub fn convert_voc(root: &Path, opts: &VocOptions) -> Result<VocDataset, DataError> {
    let (det_ann, det_img) = voc_layout(root);
    let ann_dir = opts.annotations_dir.clone().unwrap_or(det_ann);
    let img_dir = opts.images_dir.clone().unwrap_or(det_img);
    let files = list_xml(&ann_dir, opts)?;
    let mut records = Vec::with_capacity(files.len());
    for f in &files {
        let text = crate::read_text(f)?;
        records.push((f, parse_voc_xml(&text, f)?));
    }
    let keep = |o: &VocObject| opts.include_difficult || !o.difficult;
    let classes = match &opts.classes {
        Some(c) => c.clone(),
        None => {
            let mut names: Vec<String> = records
                .iter()
                .flat_map(|(_, r)| r.objects.iter())
                .filter(|o| keep(o))
                .map(|o| o.name.clone())
                .collect();
            names.sort();
            names.dedup();
            names
        }
    };
    let mut out = VocDataset {
        annotations: Vec::with_capacity(records.len()),
        classes,
        skipped_difficult: 0,
        skipped_unknown_class: 0,
        unlisted_names: Vec::new(),
    };
    for (i, (f, r)) in records.into_iter().enumerate() {
        let filename = r.filename.unwrap_or_else(|| {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            format!("{stem}.jpg")
        });
        let mut boxes = Vec::new();
        for o in &r.objects {
            if !keep(o) {
                out.skipped_difficult += 1;
                continue;
            }
            let Some(class) = out.classes.iter().position(|c| *c == o.name) else {
                out.skipped_unknown_class += 1;
                if out.unlisted_names.len() < UNLISTED_NAMES_KEPT
                    && !out.unlisted_names.contains(&o.name)
                {
                    out.unlisted_names.push(o.name.clone());
                }
                continue;
            };
            let [x_min, y_min, x_max, y_max] = o.bbox;
            boxes.push(BoxLabel {
                x_min,
                y_min,
                x_max,
                y_max,
                class,
            });
        }
        out.annotations.push(Annotation {
            path: img_dir.join(filename),
            boxes,
            line: i + 1,
        });
    }
    let kept = out.annotations.iter().map(|a| a.boxes.len()).sum::<usize>();
    if kept == 0 && out.skipped_unknown_class > 0 {
        return Err(DataError::NoListedClass {
            objects: out.skipped_unknown_class,
            classes: out.classes,
            unlisted: out.unlisted_names,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const XML: &str = r#"<annotation>
  <filename>000005.jpg</filename>
  <object><name>chair</name><difficult>0</difficult>
    <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
</annotation>"#;

    fn err(text: &str) -> String {
        parse_voc_xml(text, Path::new("Annotations/x.xml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_objects() {
        let r = parse_voc_xml(XML, Path::new("x.xml")).unwrap();
        assert_eq!(r.filename.as_deref(), Some("000005.jpg"));
        assert_eq!(r.objects.len(), 2);
        assert_eq!(r.objects[0].bbox, [263.0, 211.0, 324.0, 339.0]);
        assert!(!r.objects[0].difficult);
        assert!(r.objects[1].difficult);
        assert_eq!(r.objects[1].bbox[0], 1.5);
    }

    #[test]
    fn errors_name_file_object_and_value() {
        assert_eq!(
            err(&XML.replace("<xmax>324</xmax>", "<xmax>3a4</xmax>")),
            "Annotations/x.xml: object 1 (`chair`): <xmax> `3a4` is not a number"
        );
        assert_eq!(
            err(&XML.replace("<ymin>2</ymin>", "")),
            "Annotations/x.xml: object 2 (`dog`): <bndbox> has no <ymin>"
        );
        assert_eq!(
            err(&XML.replace("<difficult>1</difficult>", "<difficult>yes</difficult>")),
            "Annotations/x.xml: object 2 (`dog`): <difficult> is `yes`, expected 0 or 1"
        );
        assert_eq!(
            err(&XML.replace("<name>chair</name>", "")),
            "Annotations/x.xml: object 1 has no <name>"
        );
        assert_eq!(
            err("<foo/>"),
            "Annotations/x.xml: root element is <foo>, expected <annotation>"
        );
        assert!(err("<annotation>").starts_with("Annotations/x.xml: invalid XML: "));
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["r-10.xml", "r-2.xml", "r-1.xml", "r-100.xml", "r-02.xml"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["r-1.xml", "r-2.xml", "r-02.xml", "r-10.xml", "r-100.xml"]
        );
    }

    #[test]
    fn converts_folder_with_difficult_and_class_options() {
        let dir = tempfile::tempdir().unwrap();
        let ann = dir.path().join("Annotations");
        std::fs::create_dir(&ann).unwrap();
        std::fs::create_dir(dir.path().join("JPEGImages")).unwrap();
        std::fs::write(ann.join("000005.xml"), XML).unwrap();
        std::fs::write(
            ann.join("000007.xml"),
            "<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin>\
             <xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>",
        )
        .unwrap();

        let d = convert_voc(dir.path(), &VocOptions::default()).unwrap();
        assert_eq!(d.classes, vec!["cat", "chair"]);
        assert_eq!(d.skipped_difficult, 1);
        assert_eq!(d.annotations.len(), 2);
        assert_eq!(
            d.annotations[0].path,
            dir.path().join("JPEGImages/000005.jpg")
        );
        assert_eq!(d.annotations[0].boxes.len(), 1);
        assert_eq!(d.annotations[0].boxes[0].class, 1);
        // No <filename>: the XML's stem with .jpg.
        assert_eq!(
            d.annotations[1].path,
            dir.path().join("JPEGImages/000007.jpg")
        );
        assert_eq!(d.annotations[1].boxes[0].class, 0);

        let opts = VocOptions {
            classes: Some(vec!["dog".into(), "chair".into()]),
            include_difficult: true,
            ..Default::default()
        };
        let d = convert_voc(dir.path(), &opts).unwrap();
        assert_eq!(d.skipped_difficult, 0);
        assert_eq!(d.skipped_unknown_class, 1);
        let classes: Vec<usize> = d.annotations[0].boxes.iter().map(|b| b.class).collect();
        assert_eq!(classes, vec![1, 0]);
        assert!(d.annotations[1].boxes.is_empty());

        let set = dir.path().join("train.txt");
        std::fs::write(&set, "000007\n").unwrap();
        let opts = VocOptions {
            image_set: Some(set),
            ..Default::default()
        };
        let d = convert_voc(dir.path(), &opts).unwrap();
        assert_eq!(d.annotations.len(), 1);
        assert_eq!(d.classes, vec!["cat"]);

        std::fs::write(ann.join("000009.xml"), "<annotation><object>").unwrap();
        let e = convert_voc(dir.path(), &VocOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}: invalid XML",
                ann.join("000009.xml").display()
            )),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,300}") {
            let _ = parse_voc_xml(&text, Path::new("x.xml"));
        }

        #[test]
        fn parser_never_panics_on_mutated_xml(
            pos in 0usize..1000,
            ch in prop_oneof![Just('<'), Just('>'), Just('/'), Just('-'), Just('.'), any::<char>()],
            del in any::<bool>(),
        ) {
            let mut chars: Vec<char> = XML.chars().collect();
            let i = pos % chars.len();
            if del { chars.remove(i); } else { chars.insert(i, ch); }
            let s: String = chars.into_iter().collect();
            match parse_voc_xml(&s, Path::new("x.xml")) {
                Ok(r) => prop_assert!(r.objects.iter().all(|o| o.bbox.iter().all(|v| v.is_finite()))),
                Err(e) => prop_assert!(e.to_string().starts_with("x.xml: ")),
            }
        }

        #[test]
        fn natural_cmp_is_a_total_order(a in "[a-c0-9]{0,6}", b in "[a-c0-9]{0,6}") {
            prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
            prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
        }
    }
}
