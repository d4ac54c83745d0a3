//! `yolo check-data` run as the built binary: the report on stdout, exit status 1 on errors,
//! 0 on a clean file (duplicates are warnings).

mod common;

use common::{s, yolo};
use std::path::Path;

use yolo_testutil::shared_path;

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

/// A small PNG with one IDAT chunk; returns the file and the IDAT chunk's data range.
fn png_with_idat() -> (Vec<u8>, std::ops::Range<usize>) {
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 7, y as u8 * 9, 3]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // Walk the chunks: length (4), type (4), data, CRC (4).
    let mut i = 8;
    loop {
        let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        if &png[i + 4..i + 8] == b"IDAT" {
            return (png.clone(), i + 8..i + 8 + len);
        }
        assert_ne!(&png[i + 4..i + 8], b"IEND", "no IDAT chunk");
        i += 12 + len;
    }
}

/// One real raccoon photo cut at every 2000th length and 1 and 2 bytes short of its end, a PNG
/// whose IDAT CRC is wrong, one whose IDAT data is altered under an unchanged CRC, a zero-byte
/// file, a directory and a text file, each named with a `.jpg`/`.png` extension, one line each:
/// no line may pass as a valid image.
#[test]
#[cfg_attr(
    shared_missing = "datasets/raccoon",
    ignore = "needs shared/datasets/raccoon (absent)"
)]
fn check_data_refuses_a_corpus_of_truncated_corrupt_and_odd_files() {
    let Some(raccoon) = shared_path("datasets/raccoon") else {
        return;
    };
    let jpg = std::fs::read(raccoon.join("images/raccoon-1.jpg")).unwrap();
    assert_eq!(jpg.len(), 58076);
    assert_eq!(
        &jpg[jpg.len() - 2..],
        [0xFF, 0xD9],
        "ends with its EOI marker"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    let mut names: Vec<String> = Vec::new();
    let mut cuts: Vec<usize> = (0..jpg.len()).step_by(2000).collect();
    cuts.extend([jpg.len() - 2, jpg.len() - 1]);
    for &n in &cuts {
        let name = format!("cut-{n:05}.jpg");
        std::fs::write(root.join(&name), &jpg[..n]).unwrap();
        names.push(name);
    }
    let (png, idat) = png_with_idat();
    // The whole PNG decodes: the damage below is all that is wrong with the next two.
    image::load_from_memory(&png).unwrap();
    let mut bad_crc = png.clone();
    bad_crc[idat.end + 1] ^= 0x5A; // a byte of the IDAT chunk's CRC
    std::fs::write(root.join("bad-crc.png"), &bad_crc).unwrap();
    let mut bad_data = png.clone();
    bad_data[idat.start + idat.len() / 2] ^= 0x5A; // a compressed byte, CRC kept
    std::fs::write(root.join("bad-data.png"), &bad_data).unwrap();
    std::fs::write(root.join("zero.jpg"), b"").unwrap();
    std::fs::create_dir(root.join("dir.jpg")).unwrap();
    std::fs::write(root.join("text.jpg"), b"not a picture, just some text\n").unwrap();
    let others = [
        "bad-crc.png",
        "bad-data.png",
        "zero.jpg",
        "dir.jpg",
        "text.jpg",
    ];
    names.extend(others.iter().map(|n| n.to_string()));

    let ann = root.join("ann.txt");
    let text: String = names.iter().map(|n| format!("{n} 1,1,5,5,0\n")).collect();
    std::fs::write(&ann, text).unwrap();
    let line_of = |name: &str| names.iter().position(|n| n == name).unwrap() + 1;
    let root_s = root.display().to_string();

    let run = |extra: &[&str]| {
        let mut args = vec![
            "check-data",
            s(&ann),
            "--classes",
            "1",
            "--images-root",
            s(root),
        ];
        args.extend_from_slice(extra);
        let out = yolo(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).replace(&root_s, "ROOT");
        let stderr = String::from_utf8_lossy(&out.stderr).replace(&root_s, "ROOT");
        (out.status.code(), stdout, stderr)
    };
    // The problem lines of a report, by annotation line.
    let problems = |stdout: &str| -> Vec<(usize, String)> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("ROOT/ann.txt:"))
            .filter_map(|l| {
                let (n, rest) = l.split_once(": ")?;
                Some((n.parse().ok()?, rest.to_string()))
            })
            .collect()
    };

    // Full check: every line is refused, each with exactly one unreadable-image error.
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stdout}");
    let full = problems(&stdout);
    assert_eq!(
        full.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (1..=names.len()).collect::<Vec<_>>(),
        "{stdout}"
    );
    for (n, p) in &full {
        assert!(p.starts_with("unreadable-image: "), "line {n}: {p}");
    }
    let detail = |report: &[(usize, String)], name: &str| -> String {
        let line = line_of(name);
        report
            .iter()
            .find(|(n, _)| *n == line)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| format!("line {line} ({name}) not reported"))
    };
    let cut_detail = |n: usize| {
        if n == 0 {
            return "unreadable-image: ROOT/cut-00000.jpg: empty file (0 bytes)".to_string();
        }
        format!("unreadable-image: ROOT/cut-{n:05}.jpg: image is truncated ({n} bytes): ")
    };
    for &n in &cuts {
        let p = detail(&full, &format!("cut-{n:05}.jpg"));
        assert!(p.starts_with(&cut_detail(n)), "{p}");
    }
    // Cut inside the scan data, and 1 byte short (the file ends with the EOI marker's FF).
    for n in [20000, jpg.len() - 2, jpg.len() - 1] {
        assert_eq!(
            detail(&full, &format!("cut-{n:05}.jpg")),
            format!(
                "unreadable-image: ROOT/cut-{n:05}.jpg: image is truncated ({n} bytes): the JPEG \
                 data ends before its end-of-image marker FF D9"
            )
        );
    }
    // The PNG decoder checks every chunk's CRC, IDAT's included.
    assert_eq!(
        detail(&full, "bad-crc.png"),
        "unreadable-image: ROOT/bad-crc.png: Format error decoding Png: CRC error: expected \
         0x6d3021f6 have 0x6d6a21f6 while decoding ChunkType { type: IDAT, critical: true, \
         private: false, reserved: false, safecopy: false } chunk."
    );
    assert_eq!(
        detail(&full, "bad-data.png"),
        "unreadable-image: ROOT/bad-data.png: Format error decoding Png: Unknown filter method 235."
    );
    assert_eq!(
        detail(&full, "zero.jpg"),
        "unreadable-image: ROOT/zero.jpg: empty file (0 bytes)"
    );
    // A directory is there but is not an image file: unreadable, not missing.
    assert_eq!(
        detail(&full, "dir.jpg"),
        "unreadable-image: ROOT/dir.jpg: not a regular file"
    );
    assert_eq!(
        detail(&full, "text.jpg"),
        "unreadable-image: ROOT/text.jpg: The image format could not be determined"
    );
    let count = names.len();
    assert!(
        stdout.contains(&format!(
            "ROOT/ann.txt: {count} lines, {count} boxes, {count} images checked\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\n  {:<20}{count:>8}\n", "unreadable-image")),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!("\n  {count} errors, 0 warnings\n")),
        "{stdout}"
    );
    assert_eq!(
        stderr,
        format!("Error: ROOT/ann.txt: {count} errors on {count} lines\n")
    );

    // Header only: no pixel is decoded, so the two PNGs damaged inside their IDAT chunk (whose
    // structure is whole: every chunk is there, up to IEND) pass; their box is checked against the
    // 32x24 size of the header and fits. Every other line is refused exactly as in the full check:
    // truncations by the structure walk, the zero-byte file, the directory (unreadable, not
    // missing) and the text file before any decoding.
    let (code, stdout, stderr) = run(&["--header-only"]);
    assert_eq!(code, Some(1), "{stdout}");
    let header = problems(&stdout);
    let passing = [line_of("bad-crc.png"), line_of("bad-data.png")];
    let expected: Vec<(usize, String)> = full
        .iter()
        .filter(|(n, _)| !passing.contains(n))
        .cloned()
        .collect();
    assert_eq!(header, expected, "{stdout}");
    let count = names.len() - passing.len();
    assert!(
        stdout.contains(&format!("\n  {:<20}{count:>8}\n", "unreadable-image")),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!("\n  {count} errors, 0 warnings\n")),
        "{stdout}"
    );
    assert_eq!(
        stderr,
        format!("Error: ROOT/ann.txt: {count} errors on {count} lines\n")
    );
}
