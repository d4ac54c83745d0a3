//! Build script of the packages with AMX tile tests (`yolo-kernels`, and `yolo-train` through
//! `build = "../yolo-kernels/build_amx_probe.rs"`): sets `cfg(no_amx)` when the machine that
//! builds (and so runs) the tests has no AMX-BF16, or `YOLO_NO_AMX` is set, so those tests carry
//! `#[cfg_attr(no_amx, ignore = "...")]` and show as ignored instead of passing without running.

#[allow(dead_code)]
#[path = "src/amx_support.rs"]
mod amx_support;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_amx)");
    println!("cargo::rerun-if-env-changed=YOLO_NO_AMX");
    let host_is_target = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    let turned_off = std::env::var_os("YOLO_NO_AMX").is_some();
    if turned_off || !(host_is_target && amx_support::amx_bf16_supported()) {
        println!("cargo::rustc-cfg=no_amx");
    }
}
