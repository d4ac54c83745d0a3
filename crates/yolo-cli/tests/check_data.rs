//! `yolo check-data` run as the built binary: the report on stdout, exit status 1 on errors,
//! 0 on a clean file (duplicates are warnings).

mod common;

use common::{s, yolo};
use std::path::Path;

/// A folder with a good 40x30 PNG, the same file cut in half, and an empty file.
fn images(dir: &Path) {
    let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 9]));
    img.save(dir.join("good.png")).unwrap();
    let png = std::fs::read(dir.join("good.png")).unwrap();
    std::fs::write(dir.join("cut.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.join("zero.png"), b"").unwrap();
}

#[test]
fn bad_file_prints_every_problem_and_summary_and_exits_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let ann = dir.path().join("train.txt");
    std::fs::write(
        &ann,
        "good.png 1,2,30,20,0\ncut.png 1,2,3,4,0\ngood.png 1,2,3,x,0\nzero.png\n\
         good.png 5,5,41,9,2\ngood.png 1,2,30,20,0\n",
    )
    .unwrap();
    let out = yolo(&[
        "check-data",
        s(&ann),
        "--classes",
        "2",
        "--images-root",
        s(dir.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let root = dir.path().display().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&root, "ROOT");
    assert_eq!(
        stdout,
        "ROOT/train.txt: unused-class: class 1 never occurs in a box: the model cannot learn it\n\
         ROOT/train.txt:2: unreadable-image: ROOT/cut.png: image is truncated (147 bytes): the PNG \
         data ends inside its IDAT chunk (135 bytes short), before its IEND chunk\n\
         ROOT/train.txt:3: malformed: bad box token `1,2,3,x,0`: `x` is not a number\n\
         ROOT/train.txt:4: unreadable-image: ROOT/zero.png: empty file (0 bytes)\n\
         ROOT/train.txt:5: outside-image: box `5,5,41,9,2` is outside the 40x30 image \
         ROOT/good.png: x_max 41 > width 40\n\
         ROOT/train.txt:5: class-out-of-range: class id 2 in box `5,5,41,9,2` is out of range: \
         there are 2 classes\n\
         ROOT/train.txt:6: duplicate-line: same as line 1\n\
         ROOT/train.txt: 6 lines, 4 boxes, 3 images checked\n\
         \x20 malformed                  1\n\
         \x20 missing-image              0\n\
         \x20 unreadable-image           2\n\
         \x20 empty-box                  0\n\
         \x20 outside-image              1\n\
         \x20 class-out-of-range         1\n\
         \x20 negative-value             0\n\
         \x20 duplicate-line             1 (warning)\n\
         \x20 unused-class               1 (warning)\n\
         \x20 5 errors, 2 warnings\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&root, "ROOT");
    assert_eq!(stderr, "Error: ROOT/train.txt: 5 errors on 4 lines\n");
}

#[test]
fn clean_file_with_a_classes_file_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let ann = dir.path().join("train.txt");
    let good = dir.path().join("good.png");
    // Absolute paths, both classes used, and a duplicate line: a warning only.
    let line = format!("{} 0,0,40,30,1 2,2,20,20,0\n", good.display());
    std::fs::write(&ann, format!("{line}{line}")).unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "cat\ndog\n").unwrap();
    let out = yolo(&["check-data", s(&ann), "--classes", s(&classes)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.ends_with("  0 errors, 1 warnings\n"), "{stdout}");
    assert!(
        stdout.contains(":2: duplicate-line: same as line 1\n"),
        "{stdout}"
    );
}

#[test]
fn unusable_arguments_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("none.txt");
    let out = yolo(&["check-data", s(&ann), "--classes", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: {}: No such file or directory (os error 2)\n",
            ann.display()
        )
    );
    let out = yolo(&["check-data", s(&ann), "--classes", "nope.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: --classes is neither a number nor a readable classes file: nope.txt: No such \
         file or directory (os error 2)\n"
    );
}
