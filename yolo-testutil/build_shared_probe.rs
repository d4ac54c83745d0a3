//! Build script shared by every package whose tests read `shared/` (each Cargo.toml names it with
//! `build = "../yolo-testutil/build_shared_probe.rs"`). For each top-level resource the tests use
//! that is absent it emits `--cfg shared_missing="<resource>"`, so those tests carry
//! `#[cfg_attr(shared_missing = "<resource>", ignore = "...")]` and cargo counts them as ignored
//! instead of passing without running. Under `CI=true` it emits nothing: the tests run and panic.
//!
//! `shared/` is located as `yolo_testutil::shared_dir()` does: `$YOLO_SHARED_DIR`, else the first
//! `shared/` with `fixtures/` or `datasets/` walking up from the package's manifest directory.
//! Limitation: when no `shared/` exists at all there is no cheap folder to watch (the checkout's
//! parent holds `target/`), so after creating `../shared` later, touch this file or set
//! `YOLO_SHARED_DIR` to re-run the probe.

use std::path::{Path, PathBuf};

/// Every top-level `shared/` resource a test names (grep the tests for `shared_path(` and
/// `keras_fixture(` when adding one).
const RESOURCES: &[&str] = &[
    "fixtures/keras-yolo3",
    "fixtures/map",
    "fixtures/pretrained-tiny",
    "datasets/raccoon",
    "models/yolov3-tiny",
];

fn locate_shared(env_dir: Option<PathBuf>, manifest_dir: &Path) -> Option<PathBuf> {
    if let Some(dir) = env_dir {
        return Some(dir);
    }
    manifest_dir
        .ancestors()
        .map(|d| d.join("shared"))
        .find(|c| c.join("fixtures").is_dir() || c.join("datasets").is_dir())
}

fn main() {
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=YOLO_SHARED_DIR");
    let values: Vec<String> = RESOURCES.iter().map(|r| format!("\"{r}\"")).collect();
    println!(
        "cargo::rustc-check-cfg=cfg(shared_missing, values({}))",
        values.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return;
    }
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let shared = locate_shared(
        std::env::var_os("YOLO_SHARED_DIR").map(PathBuf::from),
        &manifest_dir,
    );
    for rel in RESOURCES {
        let path = shared.as_ref().map(|s| s.join(rel));
        match &path {
            // Watch the resource itself (small folders), so removing it re-runs the probe.
            Some(p) if p.exists() => println!("cargo::rerun-if-changed={}", p.display()),
            _ => {
                println!("cargo::rustc-cfg=shared_missing=\"{rel}\"");
                // Watch the nearest existing parent inside shared/, so adding the resource
                // re-runs the probe (a missing watched path would re-run it on every build).
                if let (Some(p), Some(s)) = (&path, &shared) {
                    if let Some(parent) = p
                        .ancestors()
                        .skip(1)
                        .find(|a| a.starts_with(s) && a.exists())
                    {
                        println!("cargo::rerun-if-changed={}", parent.display());
                    }
                }
            }
        }
    }
}
