//! On the device-generic path (what CUDA and Metal run, forced onto the CPU) the gradient check
//! of a training step is one fused flag read with the loss values; a NaN or infinite gradient
//! still comes out named, with its value. Its own binary: the switch is process-wide.

mod common;
use common::{config, synth};

use candle_core::{Device, Tensor, Var};
use yolo_train::{Adam, AdamConfig, PhaseKind, TrainError, Trainer};

/// Adam over `a` (3 values), `b` (2) and `c` (1), the generic path on.
fn setup() -> (Var, Var, Var, Adam) {
    yolo_train::set_generic_ops(true);
    let a = Var::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
    let b = Var::new(&[1.0f32, -1.0], &Device::Cpu).unwrap();
    let c = Var::new(&[4.0f32], &Device::Cpu).unwrap();
    let adam = Adam::new(
        vec![
            ("a".into(), a.clone()),
            ("b".into(), b.clone()),
            ("c".into(), c.clone()),
        ],
        AdamConfig::default(),
    )
    .unwrap();
    (a, b, c, adam)
}

fn sum(t: &Tensor) -> Tensor {
    t.sum_all().unwrap()
}

/// The host value of the step's fused finiteness flag (there is one: the gradients are off the
/// fast path).
fn flag_value(adam: &Adam, grads: &candle_core::backprop::GradStore) -> f32 {
    adam.non_finite_flag(grads)
        .unwrap()
        .expect("a device flag")
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn a_non_finite_gradient_is_named_through_the_fused_flag() {
    let (a, b, c, adam) = setup();
    // Finite gradients, however large: the flag is exactly 0 and nothing is named.
    let ok = ((sum(a.as_tensor()) * 1e30).unwrap() + sum(&b.as_tensor().sqr().unwrap())).unwrap();
    let ok = (ok + sum(c.as_tensor())).unwrap();
    let grads = ok.backward().unwrap();
    let flag = adam
        .non_finite_flag(&grads)
        .unwrap()
        .expect("a device flag");
    assert_eq!(flag.dims(), &[] as &[usize]);
    let v = flag.to_scalar::<f32>().unwrap();
    assert_eq!(v, 0.0);
    assert_eq!(
        adam.first_non_finite_grad_flagged(&grads, Some(v)).unwrap(),
        None
    );
    assert_eq!(adam.first_non_finite_grad(&grads).unwrap(), None);

    // d/db sqrt(b) at b = -1 is NaN; d/dc sqrt(c - 4) at c = 4 is +inf.
    let bad = (sum(a.as_tensor()) + sum(&b.as_tensor().sqrt().unwrap())).unwrap();
    let bad = (bad + sum(&(c.as_tensor() - 4.0).unwrap().sqrt().unwrap())).unwrap();
    let grads = bad.backward().unwrap();
    let v = flag_value(&adam, &grads);
    assert!(v.is_nan(), "{v}");
    let (name, value) = adam
        .first_non_finite_grad_flagged(&grads, Some(v))
        .unwrap()
        .expect("the NaN gradient");
    assert_eq!(name, "b");
    assert!(value.is_nan(), "{value}");
    assert_eq!(
        adam.first_non_finite_grad(&grads).unwrap().map(|(n, _)| n),
        Some("b".to_string())
    );

    // Only an infinite gradient: named too, its sum of squares is +inf.
    let inf = (sum(a.as_tensor()) + sum(&(c.as_tensor() - 4.0).unwrap().sqrt().unwrap())).unwrap();
    let grads = inf.backward().unwrap();
    let v = flag_value(&adam, &grads);
    assert!(v.is_nan(), "{v}");
    let (name, value) = adam
        .first_non_finite_grad_flagged(&grads, Some(v))
        .unwrap()
        .unwrap();
    assert_eq!((name.as_str(), value), ("c", f64::INFINITY));

    // A finite flag is trusted: no per-gradient search (and no second copy) on that step.
    assert_eq!(
        adam.first_non_finite_grad_flagged(&grads, Some(0.0))
            .unwrap(),
        None
    );
}

#[test]
fn the_flag_travels_in_the_same_copy_as_the_loss_values() {
    let (a, b, _, adam) = setup();
    // A tiny-YOLO loss of zero outputs (one image, one class, a 32x32 input) plus a NaN gradient
    // for `b`: one `values_and` brings the loss and the flag back together.
    let dev = Device::Cpu;
    let outputs = [
        Tensor::zeros((1, 18, 1, 1), candle_core::DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 18, 2, 2), candle_core::DType::F32, &dev).unwrap(),
    ];
    let y_true = [
        Tensor::zeros((1, 1, 1, 3, 6), candle_core::DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 2, 2, 3, 6), candle_core::DType::F32, &dev).unwrap(),
    ];
    let objects = yolo_loss::ObjectSlots::new(vec![vec![vec![]], vec![vec![]]]);
    let anchors = [
        [10., 14.],
        [23., 27.],
        [37., 58.],
        [81., 82.],
        [135., 169.],
        [344., 319.],
    ];
    let parts = yolo_loss::yolo_loss_with_objects(
        &outputs,
        &y_true,
        &objects,
        &anchors,
        1,
        &yolo_loss::LossConfig::default(),
    )
    .unwrap();
    let total = (&parts.total + sum(a.as_tensor())).unwrap();
    let total = (total + sum(&b.as_tensor().sqrt().unwrap())).unwrap();
    let grads = total.backward().unwrap();
    let flag = adam.non_finite_flag(&grads).unwrap().unwrap();
    let (values, extra) = parts.values_and(&[flag]).unwrap();
    assert!((values.total - 15.0 * 2f32.ln()).abs() < 1e-5, "{values:?}");
    assert_eq!(extra.len(), 1);
    let named = adam
        .first_non_finite_grad_flagged(&grads, Some(extra[0]))
        .unwrap();
    assert_eq!(named.map(|(n, _)| n), Some("b".to_string()));
}

/// A whole phase on the generic path: the cached-feature steps and the image steps run on the
/// slots their batches bring, and a NaN loss (whose gradients are NaN too) is still reported as
/// the loss, ahead of the gradients, although both now come back in the same copy.
#[test]
fn training_runs_on_the_generic_path_and_a_nan_loss_is_reported_as_the_loss() {
    yolo_train::set_generic_ops(true);
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8, 64, 64);
    let mut cfg = config(dir.path());
    for p in [PhaseKind::Bottleneck, PhaseKind::Frozen] {
        let c = cfg.phase_mut(p);
        (c.initial_epoch, c.epochs, c.batch_size) = (0, 1, 2);
    }
    cfg.unfreeze.enabled = false;
    // The bottleneck phase (cached features) and the frozen phase (images) both train.
    let mut trainer = Trainer::new(cfg, |_| {}).unwrap();
    trainer.run().unwrap();
    let history = &trainer.state().history;
    assert_eq!(history.len(), 2);
    assert!(
        history
            .iter()
            .all(|r| r.train.total.is_finite() && r.val.total.is_finite()),
        "{history:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8, 64, 64);
    let mut cfg = config(dir.path());
    cfg.bottleneck.enabled = false;
    cfg.unfreeze.enabled = false;
    cfg.frozen.epochs = 1;
    cfg.frozen.batch_size = 2;
    let mut trainer = Trainer::new(cfg, |_| {}).unwrap();
    {
        let data = trainer.varmap().data().lock().unwrap();
        let (_, bias) = data
            .iter()
            .find(|(n, _)| n.starts_with("head.out0") && n.ends_with("bias"))
            .unwrap();
        bias.set(&Tensor::full(f32::NAN, bias.dims(), bias.device()).unwrap())
            .unwrap();
    }
    match trainer.run().unwrap_err() {
        TrainError::NonFinite { what, step, .. } => {
            assert_eq!((what.as_str(), step), ("loss", 0));
        }
        other => panic!("expected NonFinite, got {other}"),
    }
}
