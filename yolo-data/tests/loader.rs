//! The batch loader (keras-yolo3's `data_generator`, parallel): reproducible for a seed whatever
//! the prefetching, reshuffled per epoch, bad images skipped and reported, tensors in the layouts
//! the model and loss consume.

use std::path::{Path, PathBuf};

use yolo_data::{
    Anchors, Annotation, AugmentConfig, BatchLoader, BoxLabel, InputShape, LoaderConfig,
};

/// Writes `n` small synthetic images (alternately PNG and JPEG, one grayscale) with one box each.
fn synthetic(dir: &Path, n: usize) -> Vec<Annotation> {
    (0..n)
        .map(|k| {
            let (w, h) = (40 + 3 * k as u32, 30 + 2 * k as u32);
            let path = dir.join(format!("img{k}.{}", if k % 2 == 0 { "png" } else { "jpg" }));
            if k == 3 {
                image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 5 + y) as u8]))
                    .save(&path)
                    .unwrap();
            } else {
                image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([(x * 6) as u8, (y * 8) as u8, (k * 20) as u8])
                })
                .save(&path)
                .unwrap();
            }
            Annotation {
                path,
                boxes: vec![BoxLabel {
                    x_min: 2.0 + k as f32,
                    y_min: 3.0,
                    x_max: 30.0,
                    y_max: 25.0,
                    class: k % 2,
                }],
                line: k + 1,
            }
        })
        .collect()
}

fn config(seed: u64, prefetch: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        input: InputShape::new(64, 96).unwrap(),
        random: true,
        seed,
        augment: AugmentConfig::default(),
        shuffle: true,
        prefetch,
        multi_scale: None,
    }
}

/// Every byte of an epoch: images, targets, boxes and paths.
fn epoch_bytes(
    loader: &BatchLoader,
    epoch: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<BoxLabel>>, Vec<PathBuf>) {
    let mut floats = Vec::new();
    let mut boxes = Vec::new();
    let mut paths = Vec::new();
    for batch in loader.epoch(epoch) {
        let batch = batch.unwrap();
        floats.push(
            batch
                .images
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert_eq!(batch.objects.len(), batch.y_true.len());
        for (y, objects) in batch.y_true.iter().zip(&batch.objects) {
            let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // The batch's object slots are exactly its targets' non-zero objectness.
            let &[m, gh, gw, a, k] = y.dims() else {
                panic!("y_true dims {:?}", y.dims())
            };
            let n = gh * gw * a;
            let want: Vec<Vec<u32>> = (0..m)
                .map(|b| {
                    (0..n as u32)
                        .filter(|&s| v[(b * n + s as usize) * k + 4] != 0.0)
                        .collect()
                })
                .collect();
            assert_eq!(objects, &want);
            floats.push(v);
        }
        boxes.extend(batch.boxes);
        paths.extend(batch.paths);
    }
    (floats, boxes, paths)
}

#[test]
fn same_seed_gives_same_bytes_with_or_without_prefetch() {
    let dir = tempfile::tempdir().unwrap();
    let anns = synthetic(dir.path(), 8);
    let a = BatchLoader::new(anns.clone(), config(7, 2), Anchors::yolo_default(), 2).unwrap();
    let b = BatchLoader::new(anns.clone(), config(7, 0), Anchors::yolo_default(), 2).unwrap();
    let c = BatchLoader::new(anns, config(8, 2), Anchors::yolo_default(), 2).unwrap();
    let ea = epoch_bytes(&a, 0);
    assert_eq!(ea, epoch_bytes(&b, 0));
    assert_eq!(ea, epoch_bytes(&a, 0), "a second run of the same epoch");
    assert_ne!(
        ea.0,
        epoch_bytes(&c, 0).0,
        "another seed augments differently"
    );
}

#[test]
fn each_epoch_is_a_new_permutation_of_all_images() {
    let dir = tempfile::tempdir().unwrap();
    let anns = synthetic(dir.path(), 8);
    let loader = BatchLoader::new(anns.clone(), config(3, 1), Anchors::yolo_default(), 2).unwrap();
    assert_eq!(loader.steps_per_epoch(), 2);
    let orders: Vec<Vec<PathBuf>> = (0..3).map(|e| epoch_bytes(&loader, e).2).collect();
    for o in &orders {
        let mut sorted = o.clone();
        sorted.sort();
        let mut all: Vec<PathBuf> = anns.iter().map(|a| a.path.clone()).collect();
        all.sort();
        assert_eq!(
            sorted, all,
            "8 images, batch 4: each epoch sees every image once"
        );
    }
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
}

#[test]
fn batch_tensors_have_model_and_loss_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let anns = synthetic(dir.path(), 5);
    let mut cfg = config(1, 0);
    cfg.random = false;
    cfg.shuffle = false;
    let loader = BatchLoader::new(anns.clone(), cfg, Anchors::yolo_default(), 2).unwrap();
    assert_eq!(loader.steps_per_epoch(), 1, "keras: max(1, 5 // 4)");
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.images.dims(), &[4, 3, 64, 96]);
    let dims: Vec<Vec<usize>> = b.y_true.iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![4, 2, 3, 3, 7],
            vec![4, 4, 6, 3, 7],
            vec![4, 8, 12, 3, 7]
        ]
    );
    // No shuffle: the first four lines in order, letterboxed boxes, one object each.
    let want: Vec<PathBuf> = anns[..4].iter().map(|a| a.path.clone()).collect();
    assert_eq!(b.paths, want);
    let objects: f32 = b
        .y_true
        .iter()
        .map(|t| {
            t.narrow(4, 4, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum();
    assert_eq!(objects, 4.0);
    // Image 0 is 40x30 on 96x64: scale min(2.4, 2.133) -> 85x64 at dx 5, so column 0 is grey.
    let px = b
        .images
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(10)
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(px.to_scalar::<f32>().unwrap(), (128.0f64 / 255.0) as f32);
    // The next epoch continues the stream: image 4 first, then the wrap-around to 0, 1, 2.
    let next: Vec<PathBuf> = loader.epoch(1).next().unwrap().unwrap().paths;
    let want: Vec<PathBuf> = [4, 0, 1, 2].iter().map(|&k| anns[k].path.clone()).collect();
    assert_eq!(next, want);
}

#[test]
fn undecodable_image_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut anns = synthetic(dir.path(), 4);
    let bad = dir.path().join("corrupt.jpg");
    std::fs::write(&bad, b"\xff\xd8 definitely not a jpeg").unwrap();
    anns[2].path = bad.clone();
    anns[3].path = dir.path().join("missing.png");
    let loader = BatchLoader::new(anns, config(0, 2), Anchors::yolo_default(), 2).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b.images.dims()[0], 2);
    assert_eq!(b.y_true[0].dims()[0], 2);
    let mut skipped: Vec<&PathBuf> = b.skipped.iter().map(|(p, _)| p).collect();
    skipped.sort();
    assert_eq!(skipped, vec![&bad, &dir.path().join("missing.png")]);
    assert!(b
        .skipped
        .iter()
        .all(|(p, why)| why.contains(p.file_name().unwrap().to_str().unwrap())));
}

#[test]
fn class_out_of_range_is_an_error_naming_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let anns = synthetic(dir.path(), 4);
    let loader = BatchLoader::new(anns, config(0, 0), Anchors::yolo_default(), 1).unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(err.contains("class id 1") && err.contains(".jpg"), "{err}");
}

#[test]
fn empty_list_and_zero_batch_are_refused() {
    assert!(BatchLoader::new(vec![], config(0, 0), Anchors::yolo_default(), 1).is_err());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(0, 0);
    cfg.batch_size = 0;
    assert!(BatchLoader::new(synthetic(dir.path(), 1), cfg, Anchors::yolo_default(), 1).is_err());
}

#[test]
fn box_far_outside_the_image_is_an_error_naming_the_image() {
    // keras-yolo3 would raise IndexError in preprocess_true_boxes; here the batch is an error.
    let dir = tempfile::tempdir().unwrap();
    let mut anns = synthetic(dir.path(), 4);
    anns[1].boxes[0] = BoxLabel {
        x_min: 500.0,
        y_min: 3.0,
        x_max: 600.0,
        y_max: 20.0,
        class: 0,
    };
    let mut cfg = config(0, 0);
    cfg.random = false;
    let loader = BatchLoader::new(anns, cfg, Anchors::yolo_default(), 2).unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(err.contains("img1.jpg") && err.contains("outside"), "{err}");
}

/// With multi-scale on, every batch has one of the allowed sizes (64x96 keeps its aspect), the
/// size changes only every `every` batches, images, targets and boxes follow it, the draws repeat
/// with the seed and prefetching, and the letterbox path (`random` off) keeps the base input.
#[test]
fn multi_scale_batches_follow_the_drawn_size() {
    let dir = tempfile::tempdir().unwrap();
    let anns = synthetic(dir.path(), 8);
    let multi = yolo_data::MultiScale {
        sizes: vec![64, 96, 128],
        every: 2,
    };
    let shapes = |random: bool, prefetch: usize| -> Vec<(usize, usize)> {
        let cfg = LoaderConfig {
            random,
            multi_scale: Some(multi.clone()),
            ..config(5, prefetch)
        };
        let loader = BatchLoader::new(anns.clone(), cfg, Anchors::tiny_default(), 2).unwrap();
        let mut out = Vec::new();
        for e in 0..4 {
            for b in loader.epoch(e) {
                let b = b.unwrap();
                let (_, c, h, w) = b.images.dims4().unwrap();
                assert_eq!(c, 3);
                assert_eq!(b.y_true[0].dims()[1..3], [h / 32, w / 32]);
                assert_eq!(b.y_true[1].dims()[1..3], [h / 16, w / 16]);
                for bl in b.boxes.iter().flatten() {
                    assert!(
                        bl.x_max <= w as f32 && bl.y_max <= h as f32,
                        "{bl:?} in {h}x{w}"
                    );
                }
                out.push((h, w));
            }
        }
        out
    };
    let got = shapes(true, 0);
    assert_eq!(got.len(), 8);
    for (s, hw) in got.iter().enumerate() {
        assert!(
            [(32, 64), (64, 96), (96, 128)].contains(hw),
            "batch {s}: {hw:?}"
        );
        if s % 2 == 1 {
            assert_eq!(*hw, got[s - 1], "batches {} and {s} share a draw", s - 1);
        }
    }
    assert!(
        got.iter().collect::<std::collections::BTreeSet<_>>().len() >= 2,
        "{got:?}"
    );
    assert_eq!(shapes(true, 2), got, "prefetching draws the same sizes");
    assert!(shapes(false, 0).iter().all(|&hw| hw == (64, 96)));
    let bad = LoaderConfig {
        multi_scale: Some(yolo_data::MultiScale {
            sizes: vec![100],
            every: 1,
        }),
        ..config(5, 0)
    };
    let e = BatchLoader::new(anns, bad, Anchors::tiny_default(), 2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("size 100 must be a positive multiple of 32"),
        "{e}"
    );
}

/// MixUp on every sample: each image is a blend (not the plain sample), its boxes come from two
/// annotations (the synthetic classes alternate, so both classes show up), the batches repeat
/// with the seed and prefetching, and the boxes stay inside the input. Off, the loader gives the
/// same bytes as without the field.
#[test]
fn mixup_blends_two_samples_and_keeps_both_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let anns = synthetic(dir.path(), 8);
    let loader = |mixup: f64, prefetch: usize| {
        let mut cfg = config(9, prefetch);
        cfg.augment.mixup = mixup;
        BatchLoader::new(anns.clone(), cfg, Anchors::tiny_default(), 2).unwrap()
    };
    let (plain, plain_boxes, _) = epoch_bytes(&loader(0.0, 0), 0);
    let (mixed, mixed_boxes, paths) = epoch_bytes(&loader(1.0, 0), 0);
    assert_eq!(
        epoch_bytes(&loader(1.0, 2), 0).0,
        mixed,
        "prefetching changes nothing"
    );
    assert_eq!(paths.len(), 8);
    // Floats per batch: the images first, then the two y_true tensors.
    assert_ne!(plain[0], mixed[0], "the first batch's images are blends");
    assert_eq!(plain[0].len(), mixed[0].len());
    assert!(mixed[0].iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(plain_boxes.iter().all(|b| b.len() <= 1));
    let two = mixed_boxes.iter().filter(|b| b.len() == 2).count();
    assert!(two >= 6, "most samples keep both boxes: {mixed_boxes:?}");
    let mixed_classes = mixed_boxes
        .iter()
        .filter(|b| b.iter().any(|x| x.class == 0) && b.iter().any(|x| x.class == 1))
        .count();
    assert!(mixed_classes >= 1, "{mixed_boxes:?}");
    for b in mixed_boxes.iter().flatten() {
        assert!(
            b.x_min >= 0.0 && b.x_max <= 96.0 && b.y_min >= 0.0 && b.y_max <= 64.0,
            "{b:?}"
        );
    }
    // Half the samples mixed: the others are exactly the plain samples' boxes.
    let (_, half_boxes, _) = epoch_bytes(&loader(0.5, 0), 0);
    let same = half_boxes
        .iter()
        .zip(&plain_boxes)
        .filter(|(a, b)| a == b)
        .count();
    assert!((1..8).contains(&same), "{same} of 8 unmixed");
}
