//! The tensor-op loss with object slots listed on the host ([`yolo_loss_with_objects`]) is the
//! loss that reads them from `y_true`'s own object mask, bit for bit: values, ignore masks, best
//! IoUs and gradients, for YOLOv3 (3 layers) and tiny (2 layers), every box loss, on a random
//! batch with several boxes per image and an image without any.

mod common;

use std::collections::BTreeSet;

use candle_core::{Device, Tensor, Var};
use common::{flat_parts, grads_of, raw_vars, tensors, to_vec, Rng, TINY_ANCHORS, YOLO_ANCHORS};
use yolo_loss::{
    yolo_loss, yolo_loss_tensor_ops, yolo_loss_tensor_ops_with_objects, yolo_loss_with_objects,
    BoxLoss, LossConfig, LossError, LossParts, ObjectSlots,
};

/// Images per batch; image 1 has no box in any layer.
const M: usize = 3;
/// Classes.
const C: usize = 3;

/// Random Keras-layout targets for `grids`, built on the host as a loader does, and the object
/// slots recorded while placing the boxes (not read back from the targets): 2 to 5 boxes per
/// image and layer at distinct slots, none for image 1.
fn random_targets(grids: &[(usize, usize)], seed: u64) -> (Vec<Tensor>, ObjectSlots) {
    let mut rng = Rng::new(seed);
    let k = 5 + C;
    let mut tensors = Vec::new();
    let mut layers = Vec::new();
    for &(gh, gw) in grids {
        let n = gh * gw * 3;
        let mut data = vec![0f32; M * n * k];
        let mut per_image = Vec::new();
        for b in 0..M {
            let mut slots = BTreeSet::new();
            if b != 1 {
                let want = 2 + (rng.uniform() * 4.0) as usize;
                while slots.len() < want.min(n) {
                    slots.insert(((rng.uniform() * n as f32) as usize).min(n - 1));
                }
            }
            for &s in &slots {
                let (j, i) = (s / (3 * gw), (s / 3) % gw);
                let at = (b * n + s) * k;
                data[at] = (i as f32 + rng.uniform()) / gw as f32;
                data[at + 1] = (j as f32 + rng.uniform()) / gh as f32;
                data[at + 2] = 0.02 + 0.6 * rng.uniform();
                data[at + 3] = 0.02 + 0.6 * rng.uniform();
                data[at + 4] = 1.0;
                data[at + 5 + ((rng.uniform() * C as f32) as usize).min(C - 1)] = 1.0;
            }
            per_image.push(slots.into_iter().map(|s| s as u32).collect::<Vec<_>>());
        }
        tensors.push(Tensor::from_vec(data, (M, gh, gw, 3, k), &Device::Cpu).unwrap());
        layers.push(per_image);
    }
    (tensors, ObjectSlots::new(layers))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Both results hold the same values, ignore masks and best IoUs, and give the same gradients
/// with respect to `vars`, bit for bit.
fn assert_identical(a: &LossParts, b: &LossParts, vars: &[Var], what: &str) {
    assert_eq!(bits(&flat_parts(a)), bits(&flat_parts(b)), "{what}: values");
    for l in 0..a.xy.len() {
        assert_eq!(
            bits(&to_vec(&a.ignore_mask[l])),
            bits(&to_vec(&b.ignore_mask[l])),
            "{what}: ignore mask of layer {l}"
        );
        assert_eq!(
            bits(&to_vec(&a.best_iou[l])),
            bits(&to_vec(&b.best_iou[l])),
            "{what}: best IoU of layer {l}"
        );
    }
    let (ga, gb) = (grads_of(a, vars), grads_of(b, vars));
    for (l, (x, y)) in ga.iter().zip(&gb).enumerate() {
        assert_eq!(bits(x), bits(y), "{what}: gradient of output {l}");
    }
}

/// A name, the anchors and the output grids (coarsest first).
type Layout = (&'static str, &'static [[f32; 2]], Vec<(usize, usize)>);

#[test]
fn host_listed_slots_give_the_same_loss_and_gradients_as_the_object_mask() {
    let layouts: [Layout; 2] = [
        ("YOLOv3", &YOLO_ANCHORS, vec![(2, 3), (4, 6), (8, 12)]),
        ("tiny", &TINY_ANCHORS, vec![(2, 2), (4, 4)]),
    ];
    for (seed, (name, anchors, grids)) in layouts.into_iter().enumerate() {
        let (yt, objects) = random_targets(&grids, 17 + seed as u64);
        // The recorded slots are the targets' object mask, and image 1 has none.
        assert_eq!(ObjectSlots::from_y_true(&yt).unwrap(), objects, "{name}");
        for l in 0..grids.len() {
            let layer = objects.layer(l);
            assert!(layer[1].is_empty() && layer[0].len() >= 2 && layer[2].len() >= 2);
        }
        let vars = raw_vars(M, C, &grids, 1.0, 5 + seed as u64);
        for (box_loss, ignore_thresh) in [
            (BoxLoss::Keras, 0.5),
            (BoxLoss::Keras, 0.05),
            (BoxLoss::Giou, 0.5),
            (BoxLoss::Ciou, 0.2),
        ] {
            let cfg = LossConfig {
                box_loss,
                ignore_thresh,
                label_smoothing: 0.1,
                ..LossConfig::default()
            };
            let what = format!("{name}, {}, ignore_thresh {ignore_thresh}", box_loss.name());
            let from_mask = yolo_loss_tensor_ops(&tensors(&vars), &yt, anchors, C, &cfg).unwrap();
            let listed =
                yolo_loss_tensor_ops_with_objects(&tensors(&vars), &yt, &objects, anchors, C, &cfg)
                    .unwrap();
            assert!(flat_parts(&listed).iter().all(|v| v.is_finite()), "{what}");
            assert_identical(&from_mask, &listed, &vars, &what);
            // The dispatching entry points agree too (fused CPU kernel for keras-yolo3's terms,
            // which reads the objectness itself and only checks the slots).
            let a = yolo_loss(&tensors(&vars), &yt, anchors, C, &cfg).unwrap();
            let b =
                yolo_loss_with_objects(&tensors(&vars), &yt, &objects, anchors, C, &cfg).unwrap();
            assert_identical(&a, &b, &vars, &format!("{what}, yolo_loss"));
        }
    }
}

#[test]
fn slots_that_do_not_fit_the_batch_are_errors() {
    let grids = [(2, 2), (4, 4)];
    let (yt, objects) = random_targets(&grids, 3);
    let raws = tensors(&raw_vars(M, C, &grids, 1.0, 1));
    let cfg = LossConfig::default();
    let run = |o: &ObjectSlots| {
        [
            yolo_loss_with_objects(&raws, &yt, o, &TINY_ANCHORS, C, &cfg).unwrap_err(),
            yolo_loss_tensor_ops_with_objects(&raws, &yt, o, &TINY_ANCHORS, C, &cfg).unwrap_err(),
        ]
    };
    for e in run(&ObjectSlots::new(objects.layers()[..1].to_vec())) {
        assert!(matches!(e, LossError::Objects(_)), "{e}");
        assert!(
            e.to_string().contains("for 1 layers, the loss has 2"),
            "{e}"
        );
    }
    for e in run(&objects.first_images(2)) {
        assert!(
            e.to_string().contains("for 2 images, the batch has 3"),
            "{e}"
        );
    }
    let mut layers = objects.layers().to_vec();
    layers[1][2].push(4 * 4 * 3);
    for e in run(&ObjectSlots::new(layers)) {
        assert!(
            e.to_string()
                .contains("layer 1, image 2: slot 48 is outside the layer's 48 slots"),
            "{e}"
        );
    }
}
