//! `yolo info`: version and compiled-in devices.

/// No options.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Prints the version and which accelerator backends this binary was built with.
pub fn run(_args: Args) -> anyhow::Result<()> {
    println!("yolo {}", env!("CARGO_PKG_VERSION"));
    println!(
        "devices: cpu{}{}",
        if candle_core::utils::cuda_is_available() {
            ", cuda"
        } else {
            ""
        },
        if candle_core::utils::metal_is_available() {
            ", metal"
        } else {
            ""
        }
    );
    Ok(())
}
