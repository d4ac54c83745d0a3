//! `yolo train` on an annotation file with errors, as the built binary: it stops before training
//! with `yolo check-data`'s report and exit status 1; `--skip-bad` is a config setting.

mod common;

use common::{s, yolo};

#[test]
fn train_stops_with_the_check_data_report_and_skip_bad_sets_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 3, y as u8 * 3, 9]));
    let good = dir.path().join("good.png");
    img.save(&good).unwrap();
    let ann = dir.path().join("train.txt");
    let g = s(&good);
    std::fs::write(
        &ann,
        format!("{g} 1,2,30,20,0\n{g} 5,5,5,9,0\n{g} 1,2,30,20,1\n"),
    )
    .unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "a\n").unwrap();
    let run = dir.path().join("run");
    let args = [
        "train",
        "--annotations",
        s(&ann),
        "--classes",
        s(&classes),
        "--run-dir",
        s(&run),
        "--tiny",
        "--input",
        "64",
        "--quiet",
    ];
    let out = yolo(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let a = ann.display();
    for line in [
        format!("{a}: 2 errors on 2 of 3 lines; fix them or use --skip-bad to drop these samples"),
        format!("{a}:2: empty-box: box `5,5,5,9,0` is empty: x_max 5 is not greater than x_min 5"),
        format!(
            "{a}:3: class-out-of-range: class id 1 in box `1,2,30,20,1` is out of range: there \
             are 1 classes"
        ),
        "  2 errors, 0 warnings".to_string(),
    ] {
        assert!(
            stderr.lines().any(|l| l.ends_with(&line)),
            "{line}\n{stderr}"
        );
    }
    assert!(!run.join("state.json").exists());

    let mut with_flag = args.to_vec();
    with_flag.extend(["--skip-bad", "--print-config"]);
    let out = yolo(&with_flag);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "skip_bad = true"), "{stdout}");
}
