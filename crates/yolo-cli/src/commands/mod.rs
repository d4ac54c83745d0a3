//! Subcommands: one file each; this module only declares and dispatches them.
//!
//! To add a command: a file `name.rs` with `#[derive(clap::Args)] pub struct Args` and
//! `pub fn run(args: Args) -> anyhow::Result<()>`, then one line in each of the three lists below.

use clap::{Parser, Subcommand};

// -- list 1: modules
mod detect;
mod eval;
mod info;

/// Train and use YOLOv3 detectors: a Rust re-creation of keras-yolo3's training pipeline.
#[derive(Parser, Debug)]
#[command(name = "yolo", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of `yolo`.
#[derive(Subcommand, Debug)]
pub enum Command {
    // -- list 2: variants
    /// Detect objects in images: draw the boxes and write a COCO results file.
    Detect(detect::Args),
    /// VOC and COCO mAP of a model on annotations, or of a results file against ground truth.
    Eval(eval::Args),
    /// Print the version and the devices this build supports.
    Info(info::Args),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        // -- list 3: dispatch
        Command::Detect(a) => detect::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Info(a) => info::run(a),
    }
}
