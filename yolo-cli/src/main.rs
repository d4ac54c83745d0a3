//! `yolo`: the command line of the workspace. It only parses arguments and calls the crates.

use clap::Parser;

mod commands;

/// mimalloc keeps freed pages for reuse. glibc's malloc hands every large tensor buffer back to
/// the kernel (`munmap`) and maps it again on the next step, so a training step spent a fifth of
/// its time in page faults, page zeroing and TLB shootdowns.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (not among libmimalloc-sys' constants).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> anyhow::Result<()> {
    // Never hand freed pages back to the kernel: a training step frees and reallocates gigabytes,
    // and mimalloc's default 10 ms purge made every step fault in and zero them again (tiny 416
    // bs8 step 2.6-2.8 s instead of 3.1 s; peak RSS +9%). The environment can still override it.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc allows it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    let cli = commands::Cli::parse();
    if let Err(e) = commands::run(cli) {
        eprint!("{}", error_report(&e));
        let bt = e.backtrace();
        if bt.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("\nStack backtrace:\n{bt}");
        }
        std::process::exit(1);
    }
    Ok(())
}

/// The error as anyhow prints it (`Error: ...`, then `Caused by:`), less the causes whose text
/// an earlier line already holds: the crates' I/O errors name the file and include the OS error,
/// which is also their source, so it would otherwise be printed twice.
fn error_report(e: &anyhow::Error) -> String {
    let mut shown = vec![e.to_string()];
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !shown.iter().any(|s| s.contains(&text)) {
            shown.push(text);
        }
    }
    let mut out = format!("Error: {}\n", shown[0]);
    if shown.len() > 1 {
        out.push_str("\nCaused by:\n");
        for c in &shown[1..] {
            out.push_str(&format!("    {c}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone (os error 2)");
        let e = anyhow::Error::new(io).context("a.txt: gone (os error 2)");
        assert_eq!(error_report(&e), "Error: a.txt: gone (os error 2)\n");
        let e = anyhow::anyhow!("inner detail").context("outer");
        assert_eq!(
            error_report(&e),
            "Error: outer\n\nCaused by:\n    inner detail\n"
        );
    }
}
