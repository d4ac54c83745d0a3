//! yolo-eval: keras-yolo3's `yolo_eval` post-processing (decode, undo the letterbox, per-class
//! non-max suppression), PASCAL VOC and COCO mean average precision, drawing of detections and
//! precision-recall curves, and readers/writers for ground truth and COCO results files.
//!
//! ```
//! use yolo_eval::{EvalImage, EvalSet, GroundTruth, MapReport, ScoredBox};
//!
//! let set = EvalSet {
//!     classes: vec!["raccoon".into()],
//!     images: vec![EvalImage { id: 1, file_name: "a.jpg".into(), width: 100, height: 100 }],
//!     ground_truth: vec![GroundTruth::new(1, 0, 10.0, 10.0, 50.0, 60.0)],
//!     detections: vec![ScoredBox {
//!         image_id: 1, class_id: 0, x_min: 10.0, y_min: 10.0, x_max: 50.0, y_max: 60.0, score: 0.9,
//!     }],
//! };
//! let report = MapReport::evaluate(&set);
//! assert_eq!(report.voc.map_all_point, 1.0);
//! ```

pub mod coco;
pub mod coco_results;
pub mod dataset;
pub mod detection;
pub mod detector;
pub mod draw;
pub mod error;
pub mod evaluate;
pub mod font;
pub mod ground_truth;
pub mod nms;
pub mod postprocess;
pub mod pr_curve;
pub mod report;
pub mod voc;

pub use coco::{coco_evaluate, CocoClassResult, CocoResult};
pub use coco_results::{
    coco_result_entry, coco_results_json, parse_coco_results, read_coco_results, scored_boxes,
    ImageRef,
};
pub use dataset::{EvalImage, EvalSet, GroundTruth, ScoredBox};
pub use detection::{Detection, Detections};
pub use detector::Detector;
pub use draw::{class_color, draw_box, draw_detections, label_text};
pub use error::{EvalError, Result};
pub use evaluate::{evaluate_detections, evaluate_map};
pub use ground_truth::{
    ground_truth_from_annotations, read_annotation_ground_truth, read_coco_instances,
    read_ground_truth, read_voc_ground_truth, LoadedGroundTruth,
};
pub use nms::{box_iou_yxyx, non_max_suppression};
pub use postprocess::{
    select_detections, yolo_boxes_and_scores, yolo_boxes_and_scores_masked, yolo_correct_boxes,
    yolo_eval, yolo_eval_batch, yolo_eval_batch_masked, EvalParams, LetterboxInverse,
};
pub use pr_curve::{draw_pr_curve, save_png};
pub use report::MapReport;
pub use voc::{voc_evaluate, VocClassResult, VocResult};
