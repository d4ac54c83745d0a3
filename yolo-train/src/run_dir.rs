//! The directory a run writes into: a new run never mixes its files with an older run's, and
//! temporary files left by a killed process are removed at the next start.

use std::path::{Path, PathBuf};

use crate::bottleneck::cache_paths;
use crate::config::PhaseKind;
use crate::dataset::SKIPPED_SAMPLES_FILE;
use crate::error::{Result, TrainError};

/// Files whose presence means a directory holds a run with at least one finished epoch (and so
/// weights). A run stopped before that leaves only its `config.toml`, which the next run replaces.
const RUN_MARKERS: [&str; 2] = ["state.json", "metrics.csv"];

/// Everything a run writes at the top of its directory besides the phase weights (which
/// [`PhaseKind::weights_file`] names) and the bottleneck cache (kept on purpose).
const RUN_FILES: [&str; 5] = [
    "state.json",
    "config.toml",
    "metrics.csv",
    "loss.png",
    SKIPPED_SAMPLES_FILE,
];

/// Sub-directories a run owns entirely.
const RUN_DIRS: [&str; 2] = ["last", "checkpoints"];

/// Whether `dir` holds (the start of) a run.
pub fn holds_run(dir: &Path) -> bool {
    RUN_MARKERS.iter().any(|m| dir.join(m).exists())
}

/// The directory a new run asked for `dir` goes to: `dir` itself when it holds no run, else the
/// first of `dir2`, `dir3`, ... that holds none (ultralytics' `runs/train`, `runs/train2`).
pub fn next_free(dir: &Path) -> PathBuf {
    if !holds_run(dir) {
        return dir.to_path_buf();
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    (2usize..)
        .map(|k| dir.with_file_name(format!("{name}{k}")))
        .find(|d| !holds_run(d))
        .expect("an unbounded range always has a free name")
}

/// Deletes the files an earlier run wrote in `dir` (see [`RUN_FILES`], [`RUN_DIRS`] and the phase
/// weights); files the run did not write are left alone. Returns what was deleted.
pub fn clear_run(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let files = RUN_FILES
        .iter()
        .copied()
        .chain(PhaseKind::ALL.iter().map(|p| p.weights_file()));
    for f in files {
        let p = dir.join(f);
        if p.is_file() {
            std::fs::remove_file(&p).map_err(|e| TrainError::io(&p, e))?;
            removed.push(p);
        }
    }
    for d in RUN_DIRS {
        let p = dir.join(d);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).map_err(|e| TrainError::io(&p, e))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// The process id in a temporary file name of this project's atomic writers
/// (`.<name>.tmp<pid>`), if `name` is one.
fn temp_owner(name: &str) -> Option<u32> {
    let (stem, pid) = name.rsplit_once(".tmp")?;
    if !stem.starts_with('.') || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is running. Where `/proc` is not available only this process counts as
/// alive, so a temporary file of another live process could be removed there; runs sharing a
/// directory are not supported anyway.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    proc.is_dir() && proc.join(pid.to_string()).exists()
}

/// Removes the temporary files (`.<name>.tmp<pid>`) that processes no longer running left in
/// the run directory, its `cache/`, `last/` and `checkpoints/<phase>/` folders (an interrupted
/// cache build leaves one as big as the cache). Returns what was removed.
pub fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let mut folders = vec![dir.to_path_buf(), dir.join("last")];
    if let Some(cache) = cache_paths(dir).0.parent() {
        folders.push(cache.to_path_buf());
    }
    folders.extend(
        PhaseKind::ALL
            .iter()
            .map(|p| dir.join("checkpoints").join(p.name())),
    );
    let mut removed = Vec::new();
    for f in folders {
        let Ok(entries) = std::fs::read_dir(&f) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = temp_owner(&name).is_some_and(|pid| !process_alive(pid));
            if stale && e.path().is_file() && std::fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_with_their_pid() {
        assert_eq!(temp_owner(".bottleneck_train.bin.tmp4242"), Some(4242));
        assert_eq!(temp_owner(".state.json.tmp7"), Some(7));
        assert_eq!(temp_owner("state.json.tmp7"), None);
        assert_eq!(temp_owner(".state.json.tmp"), None);
        assert_eq!(temp_owner(".x.tmp12a"), None);
        assert_eq!(temp_owner("weights.safetensors"), None);
    }

    #[test]
    fn next_free_counts_up_past_directories_that_hold_runs() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("train");
        assert_eq!(next_free(&d), d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        std::fs::write(d.join("config.toml"), "").unwrap();
        assert_eq!(
            next_free(&d),
            d,
            "a folder without a finished epoch is used as it is"
        );
        std::fs::write(d.join("state.json"), "{}").unwrap();
        assert_eq!(next_free(&d), t.path().join("train2"));
        std::fs::create_dir_all(t.path().join("train2")).unwrap();
        std::fs::write(t.path().join("train2/metrics.csv"), "").unwrap();
        assert_eq!(next_free(&d), t.path().join("train3"));
    }

    #[test]
    fn clear_run_deletes_exactly_the_run_files() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for f in [
            "state.json",
            "config.toml",
            "metrics.csv",
            "loss.png",
            "trained_weights_final.safetensors",
            "trained_weights_stage_1.safetensors",
            "notes.txt",
            "last/weights-frozen-e001.safetensors",
            "checkpoints/frozen/ep003.safetensors",
            "cache/bottleneck_train.bin",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        let removed = clear_run(d).unwrap();
        assert_eq!(removed.len(), 8);
        let mut left: Vec<String> = walk(d);
        left.sort();
        assert_eq!(left, ["cache/bottleneck_train.bin", "notes.txt"]);
        assert!(!holds_run(d));
    }

    fn walk(d: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                for sub in walk(&p) {
                    out.push(format!("{}/{sub}", e.file_name().to_string_lossy()));
                }
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_live_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::create_dir_all(d.join("cache")).unwrap();
        // No Linux pid reaches 2^31 - 2; pid 1 and this process are always alive.
        let dead = d.join("cache/.bottleneck_train.bin.tmp2147483646");
        let ours = d.join(format!(".state.json.tmp{}", std::process::id()));
        let other = d.join("cache/bottleneck_train.bin");
        for p in [&dead, &ours, &other] {
            std::fs::write(p, "x").unwrap();
        }
        let removed = remove_stale_temps(d);
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists() && ours.exists() && other.exists());
    }
}
