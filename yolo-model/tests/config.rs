//! Configuration values: keras-yolo3's `freeze_body` levels and serde names.

use yolo_model::{FreezeBody, Variant, YoloConfig};

#[test]
fn freeze_body_levels_are_keras_yolo3s_0_1_2() {
    assert_eq!(FreezeBody::from_level(0), Some(FreezeBody::None));
    assert_eq!(FreezeBody::from_level(1), Some(FreezeBody::Body));
    assert_eq!(FreezeBody::from_level(2), Some(FreezeBody::AllButOutputs));
    assert_eq!(FreezeBody::from_level(3), None);
    assert_eq!(FreezeBody::AllButOutputs as u8, 2);
    assert_eq!(FreezeBody::Body.level(), 1);
}

#[test]
fn config_serde_round_trip_and_names() {
    let cfg = YoloConfig::v3(20);
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(
        json,
        r#"{"variant":"yolov3","num_classes":20,"num_anchors":3}"#
    );
    assert_eq!(serde_json::from_str::<YoloConfig>(&json).unwrap(), cfg);
    // Older files: the snake_case name and the `tiny` bool.
    let old = r#"{"variant":"yolo_v3","num_classes":20,"num_anchors":3}"#;
    assert_eq!(serde_json::from_str::<YoloConfig>(old).unwrap(), cfg);
    assert_eq!(
        serde_json::from_str::<Variant>("true").unwrap(),
        Variant::Tiny
    );
    assert_eq!(
        serde_json::from_str::<Variant>("false").unwrap(),
        Variant::YoloV3
    );
    let e = serde_json::from_str::<Variant>(r#""yolov4""#).unwrap_err();
    assert!(e.to_string().contains("unknown variant `yolov4`"), "{e}");
    let f: FreezeBody = serde_json::from_str(r#""all_but_outputs""#).unwrap();
    assert_eq!(f, FreezeBody::AllButOutputs);
    assert_eq!(serde_json::to_string(&Variant::Tiny).unwrap(), r#""tiny""#);
    assert_eq!(YoloConfig::tiny(80).out_channels(), 255);
    assert_eq!(YoloConfig::tiny(1).strides(), vec![32, 16]);
}
