//! Text inputs as editors and converters leave them: a UTF-8 byte order mark at the start of every
//! kind of text file the readers take, an annotation file with no box, a VOC conversion where every
//! object is of an unlisted class, and an image whose header declares a size beyond the decoder's
//! memory limit. Every message is checked word for word.

use std::path::Path;

use yolo_data::{
    check_annotation_bytes, convert_coco, convert_voc, decode_rgb, read_anchors, read_annotations,
    read_classes, read_image_header, read_text, strip_bom, strip_bom_bytes, Anchors, BoxLabel,
    CheckOptions, CocoOptions, DataError, ProblemKind, VocOptions, DEFAULT_MAX_IMAGE_MIB,
    MAX_IMAGE_MIB_VAR,
};

const BOM: &str = "\u{feff}";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn bom_helpers_strip_one_leading_mark_only() {
    assert_eq!(strip_bom("\u{feff}raccoon"), "raccoon");
    assert_eq!(strip_bom("raccoon"), "raccoon");
    // Only a leading mark, and only one.
    assert_eq!(strip_bom("a\u{feff}b"), "a\u{feff}b");
    assert_eq!(strip_bom("\u{feff}\u{feff}x"), "\u{feff}x");
    assert_eq!(strip_bom_bytes(b"\xEF\xBB\xBFx"), b"x");
    assert_eq!(strip_bom_bytes(b"\xEF\xBBx"), b"\xEF\xBBx");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.txt");
    write(&p, "\u{feff}line 1\nline 2\n");
    assert_eq!(read_text(&p).unwrap(), "line 1\nline 2\n");
}

#[test]
fn bom_is_stripped_from_classes_annotation_and_anchors_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let classes = d.join("classes.txt");
    write(&classes, &format!("{BOM}raccoon\ncat\n"));
    assert_eq!(read_classes(&classes).unwrap(), vec!["raccoon", "cat"]);

    let ann = d.join("train.txt");
    write(
        &ann,
        &format!("{BOM}img/1.jpg 81,88,522,408,0\nimg/2.jpg 1,2,3,4,1\n"),
    );
    let anns = read_annotations(&ann).unwrap();
    assert_eq!(anns.len(), 2);
    assert_eq!(anns[0].path, Path::new("img/1.jpg"));
    assert_eq!(
        anns[0].boxes,
        vec![BoxLabel {
            x_min: 81.0,
            y_min: 88.0,
            x_max: 522.0,
            y_max: 408.0,
            class: 0
        }]
    );
    assert_eq!(anns[1].path, Path::new("img/2.jpg"));

    // The check ignores the mark too: the first line's image path is `img/1.jpg`, no problem.
    let opts = CheckOptions {
        check_images: false,
        ..Default::default()
    };
    let r = check_annotation_bytes(&std::fs::read(&ann).unwrap(), &ann, 2, &opts);
    assert!(r.problems.is_empty(), "{r}");
    assert_eq!((r.lines, r.boxes), (2, 2));

    let anchors = d.join("anchors.txt");
    let default = Anchors::yolo_default();
    write(&anchors, &format!("{BOM}{}", default.to_file_string()));
    assert_eq!(read_anchors(&anchors).unwrap(), default);
}

/// A raccoon-style VOC folder: `annotations/` with one XML file of one `raccoon` object.
fn voc_folder(root: &Path, xml_prefix: &str, name: &str) {
    std::fs::create_dir_all(root.join("annotations")).unwrap();
    std::fs::create_dir_all(root.join("images")).unwrap();
    write(
        &root.join("annotations/raccoon-1.xml"),
        &format!(
            "{xml_prefix}<annotation><filename>raccoon-1.jpg</filename>\
             <object><name>{name}</name><difficult>0</difficult>\
             <bndbox><xmin>81</xmin><ymin>88</ymin><xmax>522</xmax><ymax>408</ymax></bndbox>\
             </object></annotation>\n"
        ),
    );
}

#[test]
fn bom_is_stripped_from_voc_xml_image_set_and_the_classes_file_given_to_voc2txt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("voc");
    voc_folder(&root, BOM, "raccoon");
    let classes = dir.path().join("classes.txt");
    write(&classes, &format!("{BOM}raccoon\n"));
    let set = dir.path().join("train_set.txt");
    write(&set, &format!("{BOM}raccoon-1\n"));
    let opts = VocOptions {
        classes: Some(read_classes(&classes).unwrap()),
        image_set: Some(set),
        ..Default::default()
    };
    let d = convert_voc(&root, &opts).unwrap();
    assert_eq!(d.classes, vec!["raccoon"]);
    assert_eq!(d.skipped_unknown_class, 0);
    assert_eq!(d.annotations.len(), 1);
    assert_eq!(d.annotations[0].path, root.join("images/raccoon-1.jpg"));
    assert_eq!(d.annotations[0].boxes.len(), 1);
    assert_eq!(d.annotations[0].boxes[0].class, 0);
}

#[test]
fn bom_is_stripped_from_a_coco_json_file() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("instances.json");
    write(
        &json,
        &format!(
            "{BOM}{{\"images\":[{{\"id\":1,\"file_name\":\"a.jpg\"}}],\
             \"annotations\":[{{\"id\":1,\"image_id\":1,\"category_id\":3,\
             \"bbox\":[10,20,30,40],\"iscrowd\":0}}],\
             \"categories\":[{{\"id\":3,\"name\":\"raccoon\"}}]}}"
        ),
    );
    let d = convert_coco(&json, &CocoOptions::default()).unwrap();
    assert_eq!(d.classes, vec!["raccoon"]);
    assert_eq!(d.annotations.len(), 1);
    assert_eq!(d.annotations[0].boxes.len(), 1);
}

#[test]
fn annotation_file_without_any_box_is_a_no_boxes_error() {
    let opts = CheckOptions {
        check_images: false,
        ..Default::default()
    };
    let file = Path::new("train.txt");

    // Lines, but none with a box (what voc2txt used to write when every object was unlisted).
    let r = check_annotation_bytes(b"\xEF\xBB\xBFa.jpg\nb.jpg\n\nc.jpg\n", file, 1, &opts);
    assert_eq!(r.problems.len(), 1, "{r}");
    let p = &r.problems[0];
    assert_eq!((p.line, p.kind), (0, ProblemKind::NoBoxes));
    assert!(r.has_errors() && r.has_file_errors());
    assert!(r.bad_lines().is_empty());
    assert_eq!(
        r.problem_line(p),
        "train.txt: no-boxes: none of the 3 lines has a box: nothing to learn (check the \
         classes file and the conversion: were all objects dropped as unlisted classes?)"
    );
    assert_eq!(
        r.to_string(),
        "train.txt: no-boxes: none of the 3 lines has a box: nothing to learn (check the \
         classes file and the conversion: were all objects dropped as unlisted classes?)\n\
         train.txt: 3 lines, 0 boxes, 0 images checked\n\
         \x20 malformed                  0\n\
         \x20 missing-image              0\n\
         \x20 unreadable-image           0\n\
         \x20 empty-box                  0\n\
         \x20 outside-image              0\n\
         \x20 class-out-of-range         0\n\
         \x20 negative-value             0\n\
         \x20 duplicate-line             0 (warning)\n\
         \x20 no-boxes                   1\n\
         \x20 1 errors, 0 warnings"
    );

    // No line at all (only a byte order mark and blank lines).
    let r = check_annotation_bytes(b"\xEF\xBB\xBF\n\n", file, 1, &opts);
    assert_eq!(r.problems.len(), 1, "{r}");
    assert_eq!(
        r.problem_line(&r.problems[0]),
        "train.txt: no-boxes: the file has no annotation line: nothing to learn"
    );
    assert_eq!(r.lines, 0);
}

#[test]
fn voc_conversion_with_only_unlisted_classes_is_a_no_listed_class_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("voc");
    voc_folder(&root, "", "raccoon");
    let opts = VocOptions {
        classes: Some(vec!["dog".into()]),
        ..Default::default()
    };
    let e = convert_voc(&root, &opts).unwrap_err();
    assert!(
        matches!(e, DataError::NoListedClass { objects: 1, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "none of the 1 objects has a listed class: the first unlisted names are \"raccoon\"; \
         the list has 1 name (\"dog\"); nothing to learn"
    );

    // A byte order mark the classes file kept (read without read_classes) shows, escaped.
    let opts = VocOptions {
        classes: Some(vec!["\u{feff}raccoon".into(), "cat".into()]),
        ..Default::default()
    };
    let e = convert_voc(&root, &opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "none of the 1 objects has a listed class: the first unlisted names are \"raccoon\"; \
         the list has 2 names (\"\\u{feff}raccoon\", \"cat\"); nothing to learn"
    );
}

/// A real PNG of `w`x`h`, with its IHDR's width and height then set to `big`x`big` (and the IHDR
/// CRC recomputed, so that the file is well formed apart from its pixel data being too short).
fn png_declaring(big: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), ... CRC at 29..33.
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&big.to_be_bytes());
    bytes[20..24].copy_from_slice(&big.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A real JPEG with its start-of-frame's height and width set to `big`x`big`.
fn jpeg_declaring(big: u16) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&big.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&big.to_be_bytes());
    bytes
}

/// CRC-32 (ISO 3309, as PNG uses).
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn image_declaring_huge_dimensions_names_the_limit_and_the_variable() {
    // The test relies on the default limit; nothing in this test binary sets the variable.
    assert!(
        std::env::var_os(MAX_IMAGE_MIB_VAR).is_none(),
        "unset {MAX_IMAGE_MIB_VAR} to run this test"
    );
    assert_eq!(MAX_IMAGE_MIB_VAR, "YOLO_MAX_IMAGE_MIB");
    assert_eq!(DEFAULT_MAX_IMAGE_MIB, 512);
    let dir = tempfile::tempdir().unwrap();

    let png = png_declaring(60000);
    let p = dir.path().join("huge.png");
    std::fs::write(&p, &png).unwrap();
    // The header alone reads fine: the size is what it declares.
    assert_eq!(read_image_header(&p).unwrap(), (60000, 60000));
    let e = decode_rgb(&png, Path::new("img/huge.png")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "img/huge.png: image is 60000x60000: decoding it needs more than the limit of 512 MiB; \
         downscale it, or raise the limit with the environment variable YOLO_MAX_IMAGE_MIB \
         (MiB, e.g. YOLO_MAX_IMAGE_MIB=2048)"
    );

    let jpg = jpeg_declaring(60000);
    let e = decode_rgb(&jpg, Path::new("img/huge.jpg")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "img/huge.jpg: image is 60000x60000: decoding it needs more than the limit of 512 MiB; \
         downscale it, or raise the limit with the environment variable YOLO_MAX_IMAGE_MIB \
         (MiB, e.g. YOLO_MAX_IMAGE_MIB=2048)"
    );
}
