//! Trainer tests on a tiny generated dataset: the bottleneck cache's loss parity with the whole
//! frozen model, and the non-finite-loss error.

mod common;
use common::{config, synth};

use candle_core::Tensor;
use yolo_data::InputShape;
use yolo_loss::{yolo_loss, LossConfig};
use yolo_model::FreezeBody;
use yolo_train::{build_cache, entry_boxes, fingerprint};
use yolo_train::{letterbox_batch, y_true_tensors};
use yolo_train::{stderr_log, BottleneckCache, CacheDtype, TrainError, Trainer};

/// train_bottleneck.py trains the output convs on features of `bottleneck_model.predict` (the
/// frozen body, inference mode): the loss on cached features must equal the loss of the whole
/// model under freeze_body=2 on the same letterboxed images.
#[test]
fn bottleneck_cache_loss_equals_whole_frozen_model_loss() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 6, 80, 72);
    let cfg = config(dir.path());
    let trainer = Trainer::new(cfg.clone(), stderr_log()).unwrap();
    let data = trainer.data();
    let input = InputShape::new(64, 64).unwrap();
    let anns = &data.train;
    let fp = fingerprint(
        trainer.varmap(),
        anns,
        input,
        &data.anchors,
        CacheDtype::F32,
        true,
        "train",
    )
    .unwrap();
    let path = dir.path().join("c.bin");
    let dev = trainer.device().clone();
    build_cache(
        &path,
        trainer.model(),
        anns,
        &fp,
        input,
        CacheDtype::F32,
        cfg.seed,
        &dev,
    )
    .unwrap();
    let cache = BottleneckCache::open(&path).unwrap();
    assert_eq!(cache.len(), anns.len());

    let idx: Vec<usize> = (0..anns.len()).collect();
    let feats = cache.batch(&idx, &dev).unwrap();
    let boxes: Vec<_> = idx
        .iter()
        .map(|&i| entry_boxes(&cache.header().entries[i]))
        .collect();
    let y_true = y_true_tensors(&boxes, input, &data.anchors, 2, &dev).unwrap();
    let lc = LossConfig::default();
    let cached = yolo_loss(
        &trainer.model().forward_last(&feats).unwrap(),
        &y_true,
        &data.anchors.wh,
        2,
        &lc,
    )
    .unwrap()
    .total
    .to_scalar::<f32>()
    .unwrap();

    let b = letterbox_batch(anns, 0, input, cfg.seed, &dev).unwrap();
    assert_eq!(b.boxes, boxes, "cache stores the letterboxed boxes");
    let outs = trainer
        .model()
        .forward_t(&b.images, true, FreezeBody::AllButOutputs)
        .unwrap();
    let whole = yolo_loss(&outs, &y_true, &data.anchors.wh, 2, &lc)
        .unwrap()
        .total
        .to_scalar::<f32>()
        .unwrap();
    assert!(whole > 1.0, "a real loss: {whole}");
    let rel = ((cached - whole) / whole).abs();
    assert!(
        rel < 1e-5,
        "cached {cached} vs whole model {whole} (rel {rel})"
    );

    // The fingerprint follows the frozen weights: changing a backbone variable changes it.
    let data_lock = trainer.varmap().data().lock().unwrap();
    let (name, var) = data_lock
        .iter()
        .find(|(n, _)| n.starts_with("backbone."))
        .unwrap();
    let _ = name;
    var.set(&(var.as_tensor() + 1.0).unwrap()).unwrap();
    drop(data_lock);
    let fp2 = fingerprint(
        trainer.varmap(),
        anns,
        input,
        &data.anchors,
        CacheDtype::F32,
        true,
        "train",
    )
    .unwrap();
    assert_ne!(fp, fp2);
    assert!(BottleneckCache::open_matching(&path, &fp2).is_none());
}

/// keras-yolo3 runs can diverge to a NaN loss: one must stop the phase with an error naming the
/// phase, epoch, step and the batch's images.
#[test]
fn non_finite_loss_stops_with_phase_epoch_step_and_paths() {
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
        let nan = Tensor::full(f32::NAN, bias.dims(), bias.device()).unwrap();
        bias.set(&nan).unwrap();
    }
    let err = trainer.run().unwrap_err();
    match &err {
        TrainError::NonFinite {
            what,
            phase,
            epoch,
            step,
            paths,
            ..
        } => {
            assert_eq!(what, "loss");
            assert_eq!(phase, "frozen");
            assert_eq!((*epoch, *step), (0, 0));
            assert_eq!(paths.len(), 2);
            assert!(paths.iter().all(|p| p.ends_with(".png")), "{paths:?}");
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("phase frozen, epoch 1/1 (Keras epoch 0), step 0") && msg.contains("img"),
        "{msg}"
    );
}
