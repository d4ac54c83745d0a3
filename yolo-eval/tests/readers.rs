//! Ground-truth readers (annotation file, VOC folder, COCO instances) and COCO results files.

use std::fs;

use yolo_eval::{
    coco_results_json, read_coco_instances, read_coco_results, read_ground_truth, Detection,
    ImageRef, MapReport,
};

fn classes() -> Vec<String> {
    vec!["raccoon".into(), "dog".into()]
}

#[test]
fn annotation_file_and_results_by_file_name_evaluate_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("val.txt");
    fs::write(
        &ann,
        "imgs/a.jpg 10,20,110,220,0\nimgs/b.jpg 5,5,50,60,1 70,70,90,95,0\n",
    )
    .unwrap();
    let gt = read_ground_truth(&ann, Some(&classes())).unwrap();
    assert_eq!(gt.set.images.len(), 2);
    assert_eq!(gt.set.images[1].id, 2);
    assert_eq!(gt.set.ground_truth.len(), 3);
    let dets = vec![
        (
            ImageRef::Name("imgs/a.jpg".into()),
            vec![Detection {
                class: 0,
                score: 0.9,
                y_min: 20.0,
                x_min: 10.0,
                y_max: 220.0,
                x_max: 110.0,
            }],
        ),
        // base-name match: "b.jpg" finds "imgs/b.jpg"
        (
            ImageRef::Name("other/dir/b.jpg".into()),
            vec![
                Detection {
                    class: 1,
                    score: 0.8,
                    y_min: 5.0,
                    x_min: 5.0,
                    y_max: 60.0,
                    x_max: 50.0,
                },
                Detection {
                    class: 0,
                    score: 0.7,
                    y_min: 70.0,
                    x_min: 70.0,
                    y_max: 95.0,
                    x_max: 90.0,
                },
            ],
        ),
    ];
    let res = dir.path().join("res.json");
    fs::write(
        &res,
        serde_json::to_string(&coco_results_json(&dets, &gt.category_ids)).unwrap(),
    )
    .unwrap();
    let mut set = gt.set.clone();
    set.detections = read_coco_results(&res, &gt).unwrap();
    assert_eq!(set.detections[2].image_id, 2);
    let r = MapReport::evaluate(&set);
    assert_eq!(r.voc.map_all_point, 1.0);
}

#[test]
fn annotation_class_beyond_classes_file_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("val.txt");
    fs::write(&ann, "a.jpg 1,1,5,5,0\nb.jpg 1,1,5,5,7\n").unwrap();
    let err = read_ground_truth(&ann, Some(&classes()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("val.txt:2") && err.contains("class id 7"),
        "{err}"
    );
    let err = read_ground_truth(&ann, None).unwrap_err().to_string();
    assert!(err.contains("classes file"), "{err}");
}

#[test]
fn voc_folder_keeps_difficult_and_skips_unknown_classes() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("Annotations");
    fs::create_dir(&ann).unwrap();
    fs::write(
        ann.join("0001.xml"),
        r#"<annotation><filename>0001.jpg</filename><size><width>640</width><height>480</height><depth>3</depth></size>
<object><name>raccoon</name><difficult>1</difficult><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>100</xmax><ymax>200</ymax></bndbox></object>
<object><name>cat</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>
<object><name>dog</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>70</xmax><ymax>80</ymax></bndbox></object>
</annotation>"#,
    )
    .unwrap();
    let gt = read_ground_truth(dir.path(), Some(&classes())).unwrap();
    assert_eq!(gt.set.images[0].file_name, "0001.jpg");
    assert_eq!(gt.set.images[0].width, 640);
    assert_eq!(gt.set.ground_truth.len(), 2);
    assert!(gt.set.ground_truth[0].difficult);
    assert_eq!(gt.set.ground_truth[1].class_id, 1);
    assert_eq!(gt.set.ground_truth[1].x_max, 70.0);

    fs::write(
        ann.join("0002.xml"),
        "<annotation><object><name>dog</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
    )
    .unwrap();
    let err = read_ground_truth(dir.path(), Some(&classes()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("0002.xml") && err.contains("<xmin> `a` is not a number"),
        "{err}"
    );
}

#[test]
fn coco_instances_map_category_ids_and_results_by_int_id() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("instances.json");
    fs::write(
        &p,
        r#"{"images": [{"id": 7, "file_name": "x.jpg", "width": 100, "height": 80}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 10, 20, 30], "area": 500, "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 1}]}"#,
    )
    .unwrap();
    let gt = read_coco_instances(&p).unwrap();
    assert_eq!(gt.set.classes, vec!["car", "dog"]);
    assert_eq!(gt.category_ids, vec![3, 18]);
    let g = &gt.set.ground_truth;
    assert_eq!(
        (g[0].class_id, g[0].x_max, g[0].y_max, g[0].area),
        (1, 30.0, 40.0, Some(500.0))
    );
    assert!(g[1].iscrowd);

    let res = dir.path().join("res.json");
    fs::write(
        &res,
        r#"[{"image_id": 7, "category_id": 18, "bbox": [10, 10, 20, 30], "score": 0.9}]"#,
    )
    .unwrap();
    let d = read_coco_results(&res, &gt).unwrap();
    assert_eq!((d[0].class_id, d[0].x_max), (1, 30.0));

    fs::write(
        &res,
        r#"[{"image_id": 8, "category_id": 18, "bbox": [10, 10, 20, 30], "score": 0.9}]"#,
    )
    .unwrap();
    let err = read_coco_results(&res, &gt).unwrap_err().to_string();
    assert!(
        err.contains("res.json") && err.contains("image_id 8"),
        "{err}"
    );
    fs::write(
        &res,
        r#"[{"image_id": 7, "category_id": 5, "bbox": [10, 10, 20, 30], "score": 0.9}]"#,
    )
    .unwrap();
    let err = read_coco_results(&res, &gt).unwrap_err().to_string();
    assert!(err.contains("category_id 5"), "{err}");
    fs::write(
        &res,
        r#"[{"image_id": 7, "category_id": 18, "bbox": [10, 10, 20], "score": 0.9}]"#,
    )
    .unwrap();
    assert!(read_coco_results(&res, &gt)
        .unwrap_err()
        .to_string()
        .contains("bbox"));
}

/// The raccoon dataset's 200 VOC files (`annotations/` folder): every object read, and detections
/// equal to the ground truth score 1.
#[test]
#[cfg_attr(
    shared_missing = "datasets/raccoon",
    ignore = "needs shared/datasets/raccoon (absent)"
)]
fn raccoon_voc_folder_reads_all_objects() {
    let Some(dir) = yolo_testutil::shared_path("datasets/raccoon") else {
        return;
    };
    let gt = read_ground_truth(&dir, Some(&["raccoon".to_string()])).unwrap();
    assert_eq!(gt.set.images.len(), 200);
    assert_eq!(gt.set.images[0].file_name, "raccoon-1.jpg");
    assert_eq!(
        (gt.set.images[0].width, gt.set.images[0].height),
        (650, 417)
    );
    let first = &gt.set.ground_truth[0];
    assert_eq!(
        (first.x_min, first.y_min, first.x_max, first.y_max),
        (81.0, 88.0, 522.0, 408.0)
    );
    assert!(gt.set.ground_truth.len() >= 200);
    let mut set = gt.set.clone();
    set.detections = set
        .ground_truth
        .iter()
        .map(|g| yolo_eval::ScoredBox {
            image_id: g.image_id,
            class_id: g.class_id,
            x_min: g.x_min,
            y_min: g.y_min,
            x_max: g.x_max,
            y_max: g.y_max,
            score: 0.5,
        })
        .collect();
    let r = MapReport::evaluate(&set);
    assert_eq!(r.voc.map_all_point, 1.0);
}
