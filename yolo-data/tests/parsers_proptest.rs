//! Property tests for every parser of untrusted files on the data side: VOC XML, COCO JSON,
//! annotation files (through `check_annotation_bytes`, which drives the line parser and the box
//! checks), classes and anchors files. Inputs are arbitrary bytes and valid files mutated several
//! times (bytes deleted, inserted, replaced, spans duplicated, "interesting" tokens such as huge or
//! negative numbers spliced in). The property: an `Ok` or an `Err` naming the file, never a panic,
//! and anything returned obeys the parser's documented invariants. (The unit tests next to each
//! parser also run single-character mutations.)

use std::path::Path;

use proptest::prelude::*;
use yolo_data::{
    check_annotation_bytes, parse_anchors, parse_annotations, parse_classes, parse_coco,
    parse_voc_xml, CheckOptions, CocoOptions, ProblemKind,
};
use yolo_testutil::Mutation;

const VOC: &str = r#"<annotation>
  <folder>VOC2007</folder>
  <filename>000005.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>chair</name><difficult>0</difficult>
    <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
</annotation>"#;

const COCO: &str = r#"{"images": [
  {"id": 42, "file_name": "a.jpg", "width": 640, "height": 480},
  {"id": 7, "file_name": "b.jpg", "width": 100, "height": 100}],
 "annotations": [
  {"id": 1, "image_id": 42, "category_id": 18, "bbox": [10.7, 20.2, 30.9, 40.5], "iscrowd": 0},
  {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 60]},
  {"id": 3, "image_id": 42, "category_id": 1, "bbox": [100, 100, 20, 20], "iscrowd": 1}],
 "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}"#;

const LINES: &str = "img/a.jpg 10,20,300,400,0 5.5,6,7,8,2\nimg/b.jpg\n\nimg/c.jpg 1,1,9,9,1\n";
const CLASSES: &str = "person\ndog\ncat\n";
const ANCHORS: &str = "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326\n";

/// Tokens that tend to break number and structure handling.
const INTERESTING: &[&str] = &[
    "-1",
    "0",
    "1e39",
    "-1e39",
    "NaN",
    "inf",
    "99999999999999999999",
    "18446744073709551616",
    "4294967296",
    "1e308",
    ".",
    "-",
    ",",
    " ",
    "\n",
    "\r\n",
    "\t",
    "<",
    ">",
    "</",
    "/>",
    "&amp;",
    "&#0;",
    "<!DOCTYPE a [<!ENTITY e \"x\">]>",
    "&e;",
    "\"",
    "[",
    "]",
    "{",
    "}",
    ":",
    "null",
    "\u{feff}",
    "\u{0}",
    "é",
    "\u{10ffff}",
];

/// Applies the mutations in order (positions wrap around the current length).
fn mutate(base: &str, ms: &[Mutation]) -> Vec<u8> {
    yolo_testutil::mutate(base.as_bytes(), ms, INTERESTING, None)
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    yolo_testutil::mutations(INTERESTING.len())
}

fn voc_ok(text: &str) -> Result<(), TestCaseError> {
    match parse_voc_xml(text, Path::new("x.xml")) {
        Ok(r) => {
            for o in &r.objects {
                prop_assert!(o.bbox.iter().all(|v| v.is_finite()));
                prop_assert!(!o.name.is_empty());
            }
        }
        Err(e) => prop_assert!(e.to_string().starts_with("x.xml: "), "{e}"),
    }
    Ok(())
}

fn coco_ok(bytes: &[u8], opts: &CocoOptions) -> Result<(), TestCaseError> {
    match parse_coco(bytes, Path::new("i.json"), opts) {
        Ok(d) => {
            for a in &d.annotations {
                for b in &a.boxes {
                    prop_assert!(b.class < d.classes.len());
                    prop_assert!([b.x_min, b.y_min, b.x_max, b.y_max]
                        .iter()
                        .all(|v| v.is_finite()));
                }
            }
        }
        Err(e) => prop_assert!(e.to_string().starts_with("i.json: "), "{e}"),
    }
    Ok(())
}

fn check_ok(bytes: &[u8]) -> Result<(), TestCaseError> {
    let opts = CheckOptions {
        check_images: false,
        ..Default::default()
    };
    let r = check_annotation_bytes(bytes, Path::new("t.txt"), 3, &opts);
    let n_lines = bytes.split(|&b| b == b'\n').count();
    prop_assert!(r.lines <= n_lines);
    for p in &r.problems {
        // Whole-file problems (no box at all, a class never used) carry line 0.
        let line_ok = if p.kind.is_file_level() {
            p.line == 0
        } else {
            p.line >= 1 && p.line <= n_lines
        };
        prop_assert!(line_ok, "{p:?}");
        prop_assert!(!p.detail.contains('\n'), "{p:?}");
        prop_assert!(p.kind != ProblemKind::MissingImage && p.kind != ProblemKind::UnreadableImage);
    }
    prop_assert!(r.bad_lines().len() <= r.lines);
    // The report agrees with the strict parser: a file parses iff no line is malformed.
    if let Ok(text) = std::str::from_utf8(bytes) {
        let strict = parse_annotations(text, Path::new("t.txt"));
        prop_assert_eq!(strict.is_ok(), r.count(ProblemKind::Malformed) == 0);
        if let Ok(lines) = strict {
            prop_assert_eq!(lines.iter().map(|a| a.boxes.len()).sum::<usize>(), r.boxes);
        }
    }
    // Display never panics and has one line per problem plus the summary, which lists the
    // whole-file kinds only when found.
    let file_kinds: std::collections::BTreeSet<&str> = r
        .problems
        .iter()
        .filter(|p| p.kind.is_file_level())
        .map(|p| p.kind.name())
        .collect();
    prop_assert_eq!(
        r.to_string().lines().count(),
        r.problems.len() + 10 + file_kinds.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn voc_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        voc_ok(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn voc_mutated_valid(ms in mutations()) {
        voc_ok(&String::from_utf8_lossy(&mutate(VOC, &ms)))?;
    }

    #[test]
    fn coco_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        coco_ok(&bytes, &CocoOptions::default())?;
    }

    #[test]
    fn coco_mutated_valid(ms in mutations(), decimals in any::<bool>(), crowd in any::<bool>()) {
        let opts = CocoOptions { keep_decimals: decimals, include_crowd: crowd, ..Default::default() };
        coco_ok(&mutate(COCO, &ms), &opts)?;
    }

    #[test]
    fn coco_arbitrary_numbers(
        id in any::<u64>(), w in any::<f64>(), x in any::<f64>(), cat in any::<u64>(), crowd in any::<u8>(),
    ) {
        let json = format!(
            r#"{{"images":[{{"id":{id},"file_name":"a.jpg","width":{w:e}}}],"annotations":[{{"image_id":{id},"category_id":{cat},"bbox":[{x:e},{x:e},{w:e},{w:e}],"iscrowd":{crowd}}}],"categories":[{{"id":{cat},"name":"c"}}]}}"#
        );
        coco_ok(json.as_bytes(), &CocoOptions::default())?;
    }

    #[test]
    fn annotation_file_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_ok(&bytes)?;
    }

    #[test]
    fn annotation_file_mutated_valid(ms in mutations()) {
        check_ok(&mutate(LINES, &ms))?;
    }

    #[test]
    fn classes_and_anchors_mutated_valid(ms in mutations()) {
        let text = String::from_utf8_lossy(&mutate(CLASSES, &ms)).into_owned();
        if let Ok(names) = parse_classes(&text, Path::new("c.txt")) {
            prop_assert!(!names.is_empty() && names.iter().all(|n| !n.is_empty()));
        }
        let text = String::from_utf8_lossy(&mutate(ANCHORS, &ms)).into_owned();
        match parse_anchors(&text, Path::new("a.txt")) {
            Ok(a) => {
                prop_assert!(a.wh.len() == 9 || a.wh.len() == 6);
                prop_assert!(a.wh.iter().flatten().all(|v| v.is_finite() && *v > 0.0));
            }
            Err(e) => prop_assert!(e.to_string().starts_with("a.txt"), "{e}"),
        }
    }
}

/// A COCO file claiming absurd sizes and ids allocates nothing in proportion to the claims: the
/// numbers are data, only the JSON text itself is held.
#[test]
fn coco_with_absurd_claims_is_handled_without_allocating_for_them() {
    let json = r#"{"images":[{"id":18446744073709551615,"file_name":"a.jpg","width":1e300,
        "height":18446744073709551615}],
      "annotations":[{"id":1,"image_id":18446744073709551615,"category_id":0,
        "bbox":[0,0,1e300,1e300]}],
      "categories":[{"id":0,"name":"x"}]}"#;
    let e = parse_coco(
        json.as_bytes(),
        Path::new("i.json"),
        &CocoOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "i.json: annotation id 1: bbox [0.0, 0.0, 1e300, 1e300] is out of range"
    );
    // An id beyond u64 is a JSON error, not a wrap-around.
    let json = r#"{"images":[{"id":18446744073709551616,"file_name":"a.jpg"}],"categories":[]}"#;
    let e = parse_coco(
        json.as_bytes(),
        Path::new("i.json"),
        &CocoOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("i.json: invalid COCO JSON: "),
        "{e}"
    );
}

/// An XML entity bomb ("billion laughs") is refused instead of expanded.
#[test]
fn voc_entity_bomb_is_an_error() {
    let mut xml =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE annotation [\n<!ENTITY a0 \"lol\">\n");
    for i in 1..10 {
        let prev = format!("&a{};", i - 1).repeat(10);
        xml.push_str(&format!("<!ENTITY a{i} \"{prev}\">\n"));
    }
    xml.push_str("]>\n<annotation><filename>&a9;</filename></annotation>");
    let e = parse_voc_xml(&xml, Path::new("bomb.xml")).unwrap_err();
    assert!(e.to_string().starts_with("bomb.xml: invalid XML: "), "{e}");
}
