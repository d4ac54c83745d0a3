//! Helpers shared by the tests that run the built `yolo` binary.
// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `yolo args...` and captures its output; no backtrace is appended to printed errors
/// (anyhow adds one when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is set).
pub fn yolo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_yolo"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run yolo")
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}
