//! `yolo`: the command line of the workspace. It only parses arguments and calls the crates.

use clap::Parser;

mod commands;

fn main() -> anyhow::Result<()> {
    let cli = commands::Cli::parse();
    commands::run(cli)
}
