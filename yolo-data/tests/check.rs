//! `check_dataset` / `yolo check-data`'s library side: every kind of bad input, with the exact
//! message checked, on a temporary folder of good, truncated, corrupt, empty and non-image files.

use std::path::{Path, PathBuf};

use yolo_data::{check_dataset, CheckOptions, CheckReport, ProblemKind};

/// A 64x48 image with some structure, so the JPEG has real scan data.
fn picture() -> image::RgbImage {
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let img = picture();
    img.save(root.join("good.jpg")).unwrap();
    img.save(root.join("good.png")).unwrap();
    let jpg = std::fs::read(root.join("good.jpg")).unwrap();
    let png = std::fs::read(root.join("good.png")).unwrap();
    std::fs::write(root.join("trunc.jpg"), &jpg[..jpg.len() / 2]).unwrap();
    std::fs::write(root.join("trunc.png"), &png[..png.len() / 2]).unwrap();
    // A JPEG start-of-image marker followed by a frame header with an impossible length.
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x02, 0x08];
    corrupt.extend_from_slice(&[0x55; 64]);
    std::fs::write(root.join("corrupt.jpg"), corrupt).unwrap();
    std::fs::write(root.join("empty.jpg"), b"").unwrap();
    std::fs::write(
        root.join("text.jpg"),
        b"this is a text file, not a picture\n",
    )
    .unwrap();
    std::fs::create_dir(root.join("folder.jpg")).unwrap();
    Fixture { _dir: dir, root }
}

fn run(f: &Fixture, text: &str, classes: usize, decode: bool) -> CheckReport {
    let ann = f.root.join("train.txt");
    std::fs::write(&ann, text).unwrap();
    let opts = CheckOptions {
        images_root: Some(f.root.clone()),
        decode,
        ..Default::default()
    };
    check_dataset(&ann, classes, &opts).unwrap()
}

/// The report's problem lines with the temporary folder written as `ROOT`.
fn lines(r: &CheckReport, root: &Path) -> Vec<String> {
    let root = root.display().to_string();
    r.to_string()
        .lines()
        .map(|l| l.replace(&root, "ROOT"))
        .collect()
}

#[test]
fn every_kind_of_bad_input_is_reported_with_file_line_and_exact_message() {
    let f = fixture();
    let many = format!(
        "good.jpg{}",
        " 1,2,3,4,0".repeat(yolo_data::MAX_BOXES_PER_LINE + 1)
    );
    let mut text = [
        "good.jpg 1,2,30,40,0",               // 1 fine
        "good.png 0,0,64,48,1",               // 2 fine: x_max == width is inside
        "good.jpg 3,4,x,9,0 1,2,3 5,6,7,8,1", // 3 two bad tokens
        "trunc.jpg 1,2,3,4,0",                // 4 truncated JPEG
        "corrupt.jpg",                        // 5 corrupt JPEG header
        "empty.jpg",                          // 6 zero-size
        "text.jpg",                           // 7 not an image
        "missing.jpg 1,2,3,4,0",              // 8 missing
        "good.jpg 10,5,10,9,0 10,9,20,9,1",   // 9 empty boxes (x, then y)
        "good.jpg 1,2,70,50,0 64,2,70,9,0",   // 10 outside the 64x48 image
        "good.jpg 1,2,3,4,5",                 // 11 class 5 of 2
        "good.jpg -3,2,10,-1,0",              // 12 negative (and empty in y)
        "  good.jpg\t1,2,30,40,0  ",          // 13 same tokens as line 1
        "",                                   // 14 blank: ignored
        "trunc.png",                          // 15 truncated PNG
        "folder.jpg",                         // 16 a directory
        &many,                                // 17 too many boxes
    ]
    .join("\n")
    .into_bytes();
    text.extend_from_slice(b"\nbad\xff.jpg 1,2,3,4,0\n"); // 18 not UTF-8
    let ann = f.root.join("train.txt");
    std::fs::write(&ann, &text).unwrap();
    let opts = CheckOptions {
        images_root: Some(f.root.clone()),
        ..Default::default()
    };
    let r = check_dataset(&ann, 2, &opts).unwrap();
    let n = yolo_data::MAX_BOXES_PER_LINE;
    let want = vec![
        "ROOT/train.txt:3: malformed: bad box token `3,4,x,9,0`: `x` is not a number".to_string(),
        "ROOT/train.txt:3: malformed: bad box token `1,2,3`: expected 5 comma-separated values \
         x_min,y_min,x_max,y_max,class, found 3"
            .into(),
        "ROOT/train.txt:4: unreadable-image: ROOT/trunc.jpg: image is truncated (578 bytes): the \
         JPEG data ends inside a marker segment (FF C4) that needs 31 more bytes, before its \
         end-of-image marker FF D9"
            .into(),
        "ROOT/train.txt:5: unreadable-image: ROOT/corrupt.jpg: Format error decoding Jpeg: Error \
         parsing SOF segment. Reason:Length of start of frame differs from expected 263,value is 2"
            .into(),
        "ROOT/train.txt:6: unreadable-image: ROOT/empty.jpg: empty file (0 bytes)".into(),
        "ROOT/train.txt:7: unreadable-image: ROOT/text.jpg: The image format could not be \
         determined"
            .into(),
        "ROOT/train.txt:8: missing-image: ROOT/missing.jpg: No such file or directory (os error 2)"
            .into(),
        "ROOT/train.txt:9: empty-box: box `10,5,10,9,0` is empty: x_max 10 is not greater than \
         x_min 10"
            .into(),
        "ROOT/train.txt:9: empty-box: box `10,9,20,9,1` is empty: y_max 9 is not greater than \
         y_min 9"
            .into(),
        "ROOT/train.txt:10: outside-image: box `1,2,70,50,0` is outside the 64x48 image \
         ROOT/good.jpg: x_max 70 > width 64, y_max 50 > height 48"
            .into(),
        "ROOT/train.txt:10: outside-image: box `64,2,70,9,0` is outside the 64x48 image \
         ROOT/good.jpg: x_min 64 >= width 64, x_max 70 > width 64"
            .into(),
        "ROOT/train.txt:11: class-out-of-range: class id 5 in box `1,2,3,4,5` is out of range: \
         there are 2 classes"
            .into(),
        "ROOT/train.txt:12: empty-box: box `-3,2,10,-1,0` is empty: y_max -1 is not greater than \
         y_min 2"
            .into(),
        "ROOT/train.txt:12: negative-value: box `-3,2,10,-1,0` has x_min -3, y_max -1".into(),
        "ROOT/train.txt:13: duplicate-line: same as line 1".into(),
        "ROOT/train.txt:15: unreadable-image: ROOT/trunc.png: image is truncated (1899 bytes): the \
         PNG data ends inside its IDAT chunk (1887 bytes short), before its IEND chunk"
            .into(),
        "ROOT/train.txt:16: unreadable-image: ROOT/folder.jpg: not a regular file".into(),
        format!(
            "ROOT/train.txt:17: malformed: {} boxes on one line, at most {n} are accepted",
            n + 1
        ),
        "ROOT/train.txt:18: malformed: line is not valid UTF-8".into(),
        "ROOT/train.txt: 17 lines, 11 boxes, 9 images checked".into(),
        "  malformed                  4".into(),
        "  missing-image              1".into(),
        "  unreadable-image           6".into(),
        "  empty-box                  3".into(),
        "  outside-image              2".into(),
        "  class-out-of-range         1".into(),
        "  negative-value             1".into(),
        "  duplicate-line             1 (warning)".into(),
        "  18 errors, 1 warnings".into(),
    ];
    assert_eq!(lines(&r, &f.root), want);
    assert!(r.has_errors());
    assert_eq!(r.error_count(), 18);
    assert_eq!(r.count(ProblemKind::Malformed), 4);
    assert_eq!(r.count(ProblemKind::DuplicateLine), 1);
    // Lines to drop under --skip-bad: every line with an error, not the duplicate.
    let bad: Vec<usize> = r.bad_lines().into_iter().collect();
    assert_eq!(bad, vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 17, 18]);
}

#[test]
fn a_clean_file_has_no_problems_and_duplicates_are_only_warnings() {
    let f = fixture();
    let r = run(
        &f,
        "good.jpg 1,2,30,40,0\n\ngood.png 0,0,64,48,0\ngood.png\n",
        1,
        true,
    );
    assert!(r.problems.is_empty(), "{r}");
    assert!(!r.has_errors());
    assert_eq!((r.lines, r.boxes, r.images), (3, 2, 2));
    assert!(r.bad_lines().is_empty());

    let r = run(&f, "good.jpg 1,2,30,40,0\ngood.jpg 1,2,30,40,0\n", 1, true);
    assert!(!r.has_errors());
    assert_eq!(r.count(ProblemKind::DuplicateLine), 1);
    assert!(r.bad_lines().is_empty());
}

#[test]
fn header_only_mode_catches_a_png_cut_after_its_header_as_full_decoding_does() {
    let f = fixture();
    let full = run(&f, "trunc.png 1,2,3,4,0\n", 1, true);
    assert_eq!(full.bad_lines().into_iter().collect::<Vec<_>>(), vec![1]);
    let header = run(&f, "trunc.png 1,2,3,4,0\n", 1, false);
    assert_eq!(header.bad_lines().into_iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!(header.problems[0].detail, full.problems[0].detail);
    // Header-only still sees the size, so box bounds are checked.
    let header = run(&f, "good.png 1,2,65,4,0\n", 1, false);
    assert_eq!(
        header.problems[0].detail,
        format!(
            "box `1,2,65,4,0` is outside the 64x48 image {}: x_max 65 > width 64",
            f.root.join("good.png").display()
        )
    );
    // And it still rejects what has no valid header.
    let header = run(&f, "text.jpg\nempty.jpg\n", 1, false);
    assert_eq!(header.count(ProblemKind::UnreadableImage), 2, "{header}");
}

#[test]
fn images_are_skipped_when_asked_and_paths_resolve_as_written_without_a_root() {
    let f = fixture();
    let ann = f.root.join("a.txt");
    std::fs::write(&ann, "missing.jpg 1,2,3,4,0\n").unwrap();
    let no_images = CheckOptions {
        check_images: false,
        ..Default::default()
    };
    let r = check_dataset(&ann, 1, &no_images).unwrap();
    assert!(r.problems.is_empty() && r.images == 0, "{r}");
    // Without a root, `missing.jpg` is looked up in the working directory.
    let r = check_dataset(&ann, 1, &CheckOptions::default()).unwrap();
    assert_eq!(
        r.problems[0].detail,
        "missing.jpg: No such file or directory (os error 2)"
    );
    // An absolute path is used as is.
    let abs = f.root.join("good.jpg");
    std::fs::write(&ann, format!("{} 1,2,3,4,0\n", abs.display())).unwrap();
    let r = check_dataset(&ann, 1, &CheckOptions::default()).unwrap();
    assert!(r.problems.is_empty(), "{r}");
}

#[test]
fn an_unreadable_annotation_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.txt");
    let e = check_dataset(&p, 1, &CheckOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: No such file or directory (os error 2)", p.display())
    );
}
