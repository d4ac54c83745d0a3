//! Training checks its annotation file and images before phase 0: a missing image, an
//! empty box and a class id out of range stop `Trainer::new` with `yolo check-data`'s report, or,
//! with `skip_bad`, are dropped before the split, counted and listed in
//! `RUN_DIR/skipped_samples.txt`; a resume applies the same filter and gets the same split.
//! Nothing is trained: the tests only construct the dataset and the trainer (tiny 64x64 images).

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::rc::Rc;

use yolo_train::{stderr_log, Dataset, PhaseKind, RunState, TrainConfig, TrainError, Trainer};

/// 8 good lines (12 boxes), then line 9: a missing image, line 10: x_max == x_min, line 11: class 7
/// of 2, line 12: a repeat of line 1 (a warning only). Returns the config and the annotation path.
fn bad_set(dir: &Path) -> (TrainConfig, String, String) {
    common::synth(dir, 8, 64, 64);
    let ann = dir.join("train.txt");
    let mut text = std::fs::read_to_string(&ann).unwrap();
    let first = text.lines().next().unwrap().to_string();
    let img0 = dir.join("img000.png").display().to_string();
    let img1 = dir.join("img001.png").display().to_string();
    let missing = dir.join("nope.png").display().to_string();
    text.push_str(&format!("{missing} 1,1,10,10,0\n"));
    text.push_str(&format!("{img0} 10,5,10,20,0\n"));
    text.push_str(&format!("{img1} 1,1,10,10,7\n"));
    text.push_str(&format!("{first}\n"));
    std::fs::write(&ann, text).unwrap();
    (common::config(dir), ann.display().to_string(), missing)
}

/// The three error lines, as `yolo check-data` and `skipped_samples.txt` print them.
fn error_lines(ann: &str, missing: &str) -> String {
    format!(
        "{ann}:9: missing-image: {missing}: No such file or directory (os error 2)\n\
         {ann}:10: empty-box: box `10,5,10,20,0` is empty: x_max 10 is not greater than x_min 10\n\
         {ann}:11: class-out-of-range: class id 7 in box `1,1,10,10,7` is out of range: there \
         are 2 classes\n"
    )
}

/// A log sink, and the lines it collects.
fn collector() -> (Rc<RefCell<Vec<String>>>, impl FnMut(&str) + 'static) {
    let lines = Rc::new(RefCell::new(Vec::new()));
    let sink = lines.clone();
    (lines, move |m: &str| sink.borrow_mut().push(m.to_string()))
}

#[test]
fn bad_samples_stop_training_with_the_check_data_report() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, ann, missing) = bad_set(dir.path());
    let err = match Trainer::new(cfg.clone(), stderr_log()) {
        Ok(_) => panic!("a file with 3 bad lines was accepted"),
        Err(e) => e,
    };
    assert!(matches!(err, TrainError::BadSamples(_)), "{err:?}");
    let expected = format!(
        "{ann}: 3 errors on 3 of 12 lines; fix them or use --skip-bad to drop these samples\n\
         {lines}\
         {ann}:12: duplicate-line: same as line 1\n\
         {ann}: 12 lines, 16 boxes, 9 images checked\n\
         \x20 malformed                  0\n\
         \x20 missing-image              1\n\
         \x20 unreadable-image           0\n\
         \x20 empty-box                  1\n\
         \x20 outside-image              0\n\
         \x20 class-out-of-range         1\n\
         \x20 negative-value             0\n\
         \x20 duplicate-line             1 (warning)\n\
         \x20 3 errors, 1 warnings",
        lines = error_lines(&ann, &missing)
    );
    assert_eq!(err.to_string(), expected);
    // The same report as `yolo check-data` (yolo_data::check_dataset) prints.
    let report =
        yolo_data::check_dataset(Path::new(&ann), 2, &yolo_data::CheckOptions::default()).unwrap();
    assert!(expected.ends_with(&report.to_string()));
    // Nothing was written for the skipped samples.
    assert!(!cfg.run_dir.join("skipped_samples.txt").exists());
}

#[test]
fn skip_bad_drops_lists_and_splits_only_the_good_lines_and_resume_gets_the_same_split() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, ann, missing) = bad_set(dir.path());
    cfg.skip_bad = true;
    let data = Dataset::load(&cfg).unwrap();
    let listed = std::fs::read_to_string(cfg.run_dir.join("skipped_samples.txt")).unwrap();
    assert_eq!(listed, error_lines(&ann, &missing));
    assert_eq!(data.check.skipped_lines, vec![9, 10, 11]);
    assert_eq!(data.check.warnings, 1);
    assert_eq!((data.check.lines, data.check.images), (12, 9));
    // 8 good lines plus the duplicate (a warning: kept), split 7 / 2 (val_split 0.25).
    let lines: BTreeSet<usize> = data.train.iter().chain(&data.val).map(|a| a.line).collect();
    assert_eq!(
        lines,
        [1, 2, 3, 4, 5, 6, 7, 8, 12]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!((data.train.len(), data.val.len()), (7, 2));
    let summary = data.check.summary();
    assert!(
        summary.starts_with("checked 12 annotation lines and 9 images in "),
        "{summary}"
    );
    assert!(
        summary.ends_with(&format!(
            " s; 1 warnings (duplicate lines, kept); skipped 3 bad samples (listed in {})",
            cfg.run_dir.join("skipped_samples.txt").display()
        )),
        "{summary}"
    );

    // The trainer sees the same data, and a resume of its run (state saved as a run saves it)
    // filters the same way, so the split is the same. Both give the summary to the log sink they
    // were opened with.
    let (lines, sink) = collector();
    let t = Trainer::new(cfg.clone(), sink).unwrap();
    assert_eq!(t.data().train, data.train);
    assert_eq!(t.data().val, data.val);
    let logged_summary = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.starts_with("checked 12 annotation lines and 9 images in "))
    };
    assert!(logged_summary(&lines.borrow()), "{:?}", lines.borrow());
    RunState::new(cfg.clone(), PhaseKind::Bottleneck)
        .save(&cfg.run_dir)
        .unwrap();
    let (lines, sink) = collector();
    let resumed = Trainer::resume(&cfg.run_dir, &[], sink).unwrap();
    assert!(logged_summary(&lines.borrow()), "{:?}", lines.borrow());
    assert!(resumed.state().config.skip_bad);
    assert_eq!(resumed.data().train, data.train);
    assert_eq!(resumed.data().val, data.val);
}

#[test]
fn a_state_without_skip_bad_resumes_with_it_off() {
    let dir = tempfile::tempdir().unwrap();
    common::synth(dir.path(), 8, 64, 64);
    let cfg = common::config(dir.path());
    RunState::new(cfg.clone(), PhaseKind::Bottleneck)
        .save(&cfg.run_dir)
        .unwrap();
    let state = cfg.run_dir.join("state.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let removed = json["config"].as_object_mut().unwrap().remove("skip_bad");
    assert_eq!(removed, Some(serde_json::Value::Bool(false)));
    std::fs::write(&state, serde_json::to_vec(&json).unwrap()).unwrap();
    let t = Trainer::resume(&cfg.run_dir, &[], stderr_log()).unwrap();
    assert!(!t.state().config.skip_bad);
    assert_eq!(t.data().train.len() + t.data().val.len(), 8);
    assert_eq!(t.data().check.skipped_lines, Vec::<usize>::new());
    assert!(!cfg.run_dir.join("skipped_samples.txt").exists());
}

#[test]
fn warnings_alone_do_not_stop_training() {
    let dir = tempfile::tempdir().unwrap();
    common::synth(dir.path(), 8, 64, 64);
    let ann = dir.path().join("train.txt");
    let text = std::fs::read_to_string(&ann).unwrap();
    let first = text.lines().next().unwrap().to_string();
    std::fs::write(&ann, format!("{text}{first}\n")).unwrap();
    let data = Dataset::load(&common::config(dir.path())).unwrap();
    assert_eq!(data.train.len() + data.val.len(), 9);
    assert_eq!(data.check.warnings, 1);
    assert!(data.check.skipped_file.is_none());
}
