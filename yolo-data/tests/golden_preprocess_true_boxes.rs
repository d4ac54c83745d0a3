//! Golden tests: keras-yolo3's `preprocess_true_boxes` on every fixture case, bit for bit
//! (cell-boundary centres, tiny's shared anchor 3 and dropped anchor 0, overwrites, and the
//! rank-among-valid-rows quirk of `pre_quirks_256x256_yolo_c3`).

use yolo_data::{preprocess_true_boxes, Anchors, BoxLabel, InputShape};
use yolo_testutil::{keras_fixture, read_json, read_tensors};

fn check_case(case: &str) {
    let Some(st) = keras_fixture(&format!("preprocess_true_boxes/{case}.safetensors")) else {
        return;
    };
    let Some(js) = keras_fixture(&format!("preprocess_true_boxes/{case}.json")) else {
        return;
    };
    let t = read_tensors(&st);
    let meta = read_json(&js);
    let num_classes = meta["num_classes"].as_u64().unwrap() as usize;

    let tb = &t["true_boxes"];
    let (m, rows) = (tb.shape[0], tb.shape[1]);
    // Keep every row, zero padding included, exactly as keras-yolo3 receives the (m, 20, 5) array.
    let boxes: Vec<Vec<BoxLabel>> = (0..m)
        .map(|b| {
            (0..rows)
                .map(|r| {
                    let v = &tb.data[(b * rows + r) * 5..(b * rows + r + 1) * 5];
                    BoxLabel {
                        x_min: v[0],
                        y_min: v[1],
                        x_max: v[2],
                        y_max: v[3],
                        class: v[4] as usize,
                    }
                })
                .collect()
        })
        .collect();
    let anchors = Anchors {
        custom_masks: None,
        wh: t["anchors"]
            .data
            .chunks_exact(2)
            .map(|c| [c[0], c[1]])
            .collect(),
    };
    let hw = t["input_shape"].ints.as_ref().unwrap();
    let input = InputShape::new(hw[0] as usize, hw[1] as usize).unwrap();

    let y = preprocess_true_boxes(&boxes, input, &anchors, num_classes).unwrap();
    assert_eq!(y.len(), anchors.num_layers(), "{case}");
    for (l, yl) in y.iter().enumerate() {
        let want = &t[&format!("y_true_{l}")];
        assert_eq!(yl.shape.to_vec(), want.shape, "{case} layer {l} shape");
        let diffs: Vec<usize> = (0..want.data.len())
            .filter(|&i| yl.data[i].to_bits() != want.data[i].to_bits())
            .collect();
        assert!(
            diffs.is_empty(),
            "{case} layer {l}: {} elements differ, first at flat index {} (got {}, want {})",
            diffs.len(),
            diffs[0],
            yl.data[diffs[0]],
            want.data[diffs[0]]
        );
    }
    // The fixture's written-slot list, as a second view: every listed slot has objectness 1.
    for slot in meta["written_slots"].as_array().unwrap() {
        let g = |k: &str| slot[k].as_u64().unwrap() as usize;
        let yl = &y[g("layer")];
        let at = yl.offset(g("b"), g("j"), g("i"), g("k"));
        assert_eq!(yl.data[at + 4], 1.0, "{case} slot {slot}");
    }
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn preprocess_true_boxes_416x416_yolo_c3() {
    check_case("pre_416x416_yolo_c3");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn preprocess_true_boxes_320x416_yolo_c3_non_square() {
    check_case("pre_320x416_yolo_c3");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn preprocess_true_boxes_320x416_tiny_c80() {
    check_case("pre_320x416_tiny_c80");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn preprocess_true_boxes_416x416_tiny_c3() {
    check_case("pre_416x416_tiny_c3");
}

#[test]
#[cfg_attr(
    shared_missing = "fixtures/keras-yolo3",
    ignore = "needs shared/fixtures/keras-yolo3 (absent)"
)]
fn preprocess_true_boxes_quirks_rank_among_valid_rows() {
    check_case("pre_quirks_256x256_yolo_c3");
}

#[test]
fn boundary_centre_lands_one_cell_left_like_keras() {
    // A 62x45 box (exactly anchor 4: layer 1, slot 1, 26x26 grid) centred at x = 272, y = 122.
    // 272 / 416 = 17 / 26 exactly, but f32(272 / 416) * 26 (in f64) is just below 17, so
    // keras-yolo3 writes column 16, as the fixture README states.
    let b = BoxLabel {
        x_min: 241.0,
        y_min: 100.0,
        x_max: 303.0,
        y_max: 145.0,
        class: 0,
    };
    let y = preprocess_true_boxes(
        &[vec![b]],
        InputShape::square416(),
        &Anchors::yolo_default(),
        1,
    )
    .unwrap();
    let j = 7; // floor(122 / 416 * 26) = floor(7.625)
    assert_eq!(y[1].data[y[1].offset(0, j, 16, 1) + 4], 1.0);
    assert_eq!(y[1].data[y[1].offset(0, j, 17, 1) + 4], 0.0);
    assert_eq!(
        y[1].data[y[1].offset(0, j, 16, 1)],
        (272.0f64 / 416.0) as f32
    );
}
