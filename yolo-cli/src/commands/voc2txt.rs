//! `yolo voc2txt`: a Pascal VOC folder to a keras-yolo3 annotation file and a classes file
//! (keras-yolo3's `voc_annotation.py`).

use std::path::PathBuf;

use anyhow::Context;
use yolo_data::{convert_voc, read_classes, DataError, VocOptions};

/// Converts VOC XML annotations to `path x_min,y_min,x_max,y_max,class ...` lines.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Finds `Annotations/` + `JPEGImages/` (VOC) or `annotations/` + `images/` under ROOT, or XML files in ROOT itself. Objects marked difficult are skipped unless --include-difficult; with --classes, objects of other classes are skipped, otherwise every name met becomes a class (sorted). Each image path is the images folder joined with the XML's <filename>."
)]
pub struct Args {
    /// The dataset folder.
    pub root: PathBuf,
    /// Annotation file to write.
    #[arg(long, short, default_value = "train.txt")]
    pub out: PathBuf,
    /// Classes file to use (one name a line); without it classes are collected from the XML.
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Classes file to write (default: `classes.txt` beside the annotation file).
    #[arg(long)]
    pub classes_out: Option<PathBuf>,
    /// Keep objects marked `<difficult>1</difficult>` (voc_annotation.py drops them).
    #[arg(long)]
    pub include_difficult: bool,
    /// Image-set file (`ImageSets/Main/train.txt`) listing the ids to convert, in order.
    #[arg(long)]
    pub image_set: Option<PathBuf>,
    /// Folder of the XML files (overrides the detected one).
    #[arg(long)]
    pub annotations_dir: Option<PathBuf>,
    /// Folder of the images (overrides the detected one).
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
}

/// Runs `yolo voc2txt`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let classes = a.classes.as_deref().map(read_classes).transpose()?;
    let opts = VocOptions {
        classes,
        include_difficult: a.include_difficult,
        image_set: a.image_set,
        annotations_dir: a.annotations_dir,
        images_dir: a.images_dir,
    };
    let d = match convert_voc(&a.root, &opts) {
        Ok(d) => d,
        // Name the classes file: it is what the names failed to match.
        Err(e @ DataError::NoListedClass { .. }) => match &a.classes {
            Some(c) => anyhow::bail!(
                "{}: {e} (converting VOC folder {})",
                c.display(),
                a.root.display()
            ),
            None => anyhow::bail!("converting VOC folder {}: {e}", a.root.display()),
        },
        Err(e) => {
            return Err(e).with_context(|| format!("converting VOC folder {}", a.root.display()))
        }
    };
    super::dataset_out::write_converted(&a.out, a.classes_out, &d.annotations, &d.classes)?;
    if d.skipped_difficult + d.skipped_unknown_class > 0 {
        println!(
            "skipped {} difficult objects, {} objects of unlisted classes",
            d.skipped_difficult, d.skipped_unknown_class
        );
    }
    Ok(())
}
