//! Property tests for the model side's parsers of untrusted files: darknet `.cfg` text, the
//! darknet `.weights` header and body, and safetensors checkpoints. Inputs are arbitrary bytes
//! and valid files mutated several times; the property is an `Ok` or an error naming the file,
//! never a panic (overflow checks are on in tests) and never an allocation beyond the file's size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use proptest::prelude::*;
use yolo_model::{
    cfg_convs, check_cfg_matches, darknet_cfg, load_checkpoint_partial, load_darknet_weights,
    parse_cfg, DarknetHeader, ModelError, YoloBody, YoloConfig,
};
use yolo_testutil::Mutation;

/// A tiny YOLOv3 (1 class) built once and shared by every case (loads only ever overwrite values).
fn tiny() -> &'static (VarMap, YoloConfig) {
    static M: OnceLock<(VarMap, YoloConfig)> = OnceLock::new();
    M.get_or_init(|| {
        let cfg = YoloConfig::tiny(1);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        YoloBody::new(&cfg, vb).unwrap();
        (varmap, cfg)
    })
}

/// A folder for the files the loaders read, one file name per test.
fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .join(name)
}

/// Tokens that tend to break number handling and structure.
const INTERESTING: &[&str] = &[
    "-1",
    "0",
    "-9223372036854775808",
    "9223372036854775807",
    "18446744073709551616",
    "4294967295",
    "1e9",
    "[net]",
    "[route]\nlayers=-1,-1,-1\n",
    "[shortcut]\nfrom=-1\n",
    "[convolutional]\nfilters=9223372036854775807\n",
    "[upsample]\n",
    "[yolo]\n",
    "[",
    "]",
    "=",
    "\n",
    "#",
    ";",
    ",",
    "\u{0}",
    "é",
];

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    yolo_testutil::mutations(INTERESTING.len())
}

/// Applies the mutations in order (positions wrap around the current length); `limit` keeps
/// mutations inside the first `limit` bytes (e.g. a header), when given.
fn mutate(base: &[u8], ms: &[Mutation], limit: Option<usize>) -> Vec<u8> {
    yolo_testutil::mutate(base, ms, INTERESTING, limit)
}

/// A cfg error names the file, and a line only when it has one (never the non-line 0).
fn cfg_err_ok(e: &ModelError) -> Result<(), TestCaseError> {
    let m = e.to_string();
    prop_assert!(m.starts_with("f.cfg:") && !m.starts_with("f.cfg:0:"), "{m}");
    Ok(())
}

fn cfg_ok(text: &str) -> Result<(), TestCaseError> {
    let p = Path::new("f.cfg");
    match parse_cfg(text, p) {
        Ok(sections) => match cfg_convs(&sections, p) {
            Ok(convs) => {
                for c in &convs {
                    prop_assert!(c.filters > 0 && c.size > 0 && c.stride > 0);
                }
                for cfg in [YoloConfig::tiny(1), YoloConfig::v3(80)] {
                    if let Err(e) = check_cfg_matches(&cfg, &convs, p) {
                        cfg_err_ok(&e)?;
                    }
                }
            }
            Err(e) => cfg_err_ok(&e)?,
        },
        Err(e) => cfg_err_ok(&e)?,
    }
    Ok(())
}

/// The first conv of tiny YOLOv3 as darknet stores it: 16 x (beta, gamma, mean, var) + 16x3x3x3.
const CONV0_FLOATS: usize = 4 * 16 + 16 * 27;

fn weights_file(header: &[i32], seen64: Option<u64>, floats: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for h in header {
        b.extend_from_slice(&h.to_le_bytes());
    }
    if let Some(s) = seen64 {
        b.extend_from_slice(&s.to_le_bytes());
    }
    for i in 0..floats {
        b.extend_from_slice(&(i as f32 * 0.001).to_le_bytes());
    }
    b
}

fn weights_ok(bytes: &[u8], name: &str) -> Result<(), TestCaseError> {
    let (varmap, cfg) = tiny();
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    match load_darknet_weights(varmap, cfg, &p) {
        // Only whole convs load; the first conv's 5 variables at least.
        Ok(r) => prop_assert!(r.loaded.len() >= 5 && r.loaded.len() % 5 != 1, "{r}"),
        Err(e) => prop_assert!(e.to_string().starts_with(&p.display().to_string()), "{e}"),
    }
    Ok(())
}

/// A small valid checkpoint: two variables of the tiny model, one of them half precision.
fn small_checkpoint() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let p = scratch("base.safetensors");
        let t: HashMap<String, Tensor> = [
            (
                "backbone.conv0.bn.bias".to_string(),
                Tensor::full(0.25f32, 16, &Device::Cpu).unwrap(),
            ),
            (
                "backbone.conv0.bn.running_var".to_string(),
                Tensor::ones(16, DType::F16, &Device::Cpu).unwrap(),
            ),
        ]
        .into();
        candle_core::safetensors::save(&t, &p).unwrap();
        std::fs::read(&p).unwrap()
    })
}

fn checkpoint_ok(bytes: &[u8], name: &str) -> Result<(), TestCaseError> {
    let (varmap, _) = tiny();
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    match load_checkpoint_partial(varmap, &p) {
        Ok(r) => prop_assert!(r.loaded.len() + r.skipped_shape.len() <= 2, "{r}"),
        Err(ModelError::Format { path, .. }) => prop_assert_eq!(path, p),
        // A mutated dtype of a model variable: an integer or boolean tensor.
        Err(ModelError::Dtype { path, .. }) => prop_assert_eq!(path, p),
        // candle errors (e.g. a dtype conversion) carry no path but are still errors.
        Err(ModelError::Candle(_)) => {}
        Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cfg_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        cfg_ok(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn cfg_mutated_valid(ms in mutations(), v3 in any::<bool>()) {
        let cfg = if v3 { YoloConfig::v3(3) } else { YoloConfig::tiny(3) };
        let text = darknet_cfg(&cfg);
        cfg_ok(&String::from_utf8_lossy(&mutate(text.as_bytes(), &ms, None)))?;
    }

    #[test]
    fn weights_header_any_values(a in any::<i32>(), b in any::<i32>(), c in any::<i32>(), tail in proptest::collection::vec(any::<u8>(), 0..12)) {
        let mut bytes = weights_file(&[a, b, c], None, 0);
        bytes.extend_from_slice(&tail);
        match DarknetHeader::parse(&bytes, Path::new("w")) {
            Ok(h) => {
                prop_assert!(h.len_bytes() <= bytes.len());
                prop_assert_eq!(&h.to_bytes()[..], &bytes[..h.len_bytes()]);
            }
            Err(e) => prop_assert!(e.to_string().starts_with("w: "), "{e}"),
        }
    }

    #[test]
    fn weights_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        weights_ok(&bytes, "arb.weights")?;
    }

    #[test]
    fn weights_mutated_valid(ms in mutations(), seen32 in any::<bool>(), header_only in any::<bool>()) {
        let base = if seen32 {
            weights_file(&[0, 1, 0, 7], None, CONV0_FLOATS)
        } else {
            weights_file(&[0, 2, 0], Some(7), CONV0_FLOATS)
        };
        let limit = header_only.then_some(20);
        weights_ok(&mutate(&base, &ms, limit), "mut.weights")?;
    }

    #[test]
    fn checkpoint_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        checkpoint_ok(&bytes, "arb.safetensors")?;
    }

    #[test]
    fn checkpoint_mutated_valid(ms in mutations(), header_only in any::<bool>()) {
        let base = small_checkpoint();
        // Header = 8-byte length + JSON; mutate there most of the time.
        let header_len = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
        let limit = header_only.then_some(header_len);
        checkpoint_ok(&mutate(base, &ms, limit), "mut.safetensors")?;
    }
}

/// Regression (found by `weights_header_any_values`): a version such as 300000000.0 made
/// `major * 10 + minor` overflow (a panic with overflow checks on) before the `< 1000` test.
#[test]
fn weights_header_with_huge_version_is_not_an_overflow() {
    let bytes = weights_file(&[300_000_000, 5, 0, 9], None, 0);
    let h = DarknetHeader::parse(&bytes, Path::new("w")).unwrap();
    assert_eq!(
        (h.major, h.minor, h.seen, h.len_bytes()),
        (300_000_000, 5, 9, 16)
    );
    let bytes = weights_file(&[i32::MAX, i32::MAX, 0, 9], None, 0);
    assert_eq!(
        DarknetHeader::parse(&bytes, Path::new("w"))
            .unwrap()
            .len_bytes(),
        16
    );
}

/// Regression: a route joining two layers with ~i64::MAX filters overflowed the channel sum.
#[test]
fn cfg_route_channel_sum_overflow_is_an_error() {
    let text = "[net]\n[convolutional]\nfilters=9223372036854775807\n[route]\nlayers=-1,-1,-1\n";
    let p = Path::new("f.cfg");
    let err = cfg_convs(&parse_cfg(text, p).unwrap(), p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "f.cfg:4: route layers -1,-1,-1 give more channels than fit in a usize"
    );
}
