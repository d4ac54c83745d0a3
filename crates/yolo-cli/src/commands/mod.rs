//! Subcommands: one file each, this module only dispatches.

use clap::{Parser, Subcommand};

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
    /// Print the version and the compiled-in devices.
    Info,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info => {
            println!("yolo {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
