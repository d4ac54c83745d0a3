//! `yolo check-data`: audits an annotation file and its images before training (see
//! `yolo_data::check_dataset`); exits non-zero when any error is found.

use std::path::PathBuf;

use yolo_data::{check_dataset, read_classes, CheckOptions};

/// Options of `yolo check-data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Annotation file (`path x_min,y_min,x_max,y_max,class ...`).
    pub annotations: PathBuf,
    /// Number of classes, or a classes file (one name a line).
    #[arg(long, value_name = "N|FILE")]
    pub classes: String,
    /// Folder relative image paths are resolved against (default: the working directory, as
    /// `yolo train` does).
    #[arg(long, value_name = "DIR", alias = "images-root")]
    pub images_dir: Option<PathBuf>,
    /// Decode no pixel: read each image's header and walk its structure (fast; still catches
    /// truncated files, misses corrupt scan data and bad PNG checksums).
    #[arg(long)]
    pub header_only: bool,
    /// Check the lines only, not the images.
    #[arg(long)]
    pub no_images: bool,
}

/// Prints one line per problem and a summary; fails when there is an error (not a warning).
pub fn run(a: Args) -> anyhow::Result<()> {
    let (num_classes, class_names) = match a.classes.parse::<usize>() {
        Ok(n) => (n, Vec::new()),
        Err(_) => {
            let names = read_classes(std::path::Path::new(&a.classes)).map_err(|e| {
                anyhow::anyhow!("--classes is neither a number nor a readable classes file: {e}")
            })?;
            (names.len(), names)
        }
    };
    let opts = CheckOptions {
        images_root: a.images_dir,
        check_images: !a.no_images,
        decode: !a.header_only,
        class_names,
    };
    let report = check_dataset(&a.annotations, num_classes, &opts)?;
    println!("{report}");
    if report.has_errors() {
        anyhow::bail!(
            "{}: {} errors on {} lines",
            a.annotations.display(),
            report.error_count(),
            report.bad_lines().len()
        );
    }
    Ok(())
}
