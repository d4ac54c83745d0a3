//! `yolo`: the command line of the workspace. It only parses arguments and calls the crates.

use clap::Parser;

mod commands;

/// mimalloc keeps freed pages for reuse. glibc's malloc hands every large tensor buffer back to
/// the kernel (`munmap`) and maps it again on the next step, so a training step spent a fifth of
/// its time in page faults, page zeroing and TLB shootdowns.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = commands::Cli::parse();
    commands::run(cli)
}
