//! `yolo info`: version and compiled-in devices; with a model, what it is and where its classes,
//! anchors, masks and input size come from.

use super::model_args::ModelArgs;

/// Optionally a model to describe.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Prints the version and which accelerator backends this binary was built with, then the
/// model's description when one is named (resolved without loading its weights).
pub fn run(args: Args) -> anyhow::Result<()> {
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
    if args.model.given() {
        let source = yolo_train::ModelSource::resolve(&args.model.request())?;
        for line in source.describe() {
            println!("{line}");
        }
    }
    Ok(())
}
