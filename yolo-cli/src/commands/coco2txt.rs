//! `yolo coco2txt`: a COCO instances JSON file to a keras-yolo3 annotation file and a classes file.

use std::path::PathBuf;

use anyhow::Context;
use yolo_data::{convert_coco, CocoOptions};

/// Converts COCO `instances_*.json` to `path x_min,y_min,x_max,y_max,class ...` lines.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Boxes go from COCO's x,y,width,height to corners, truncated to integers as keras-yolo3's coco_annotation.py (unless --keep-decimals). Categories are renumbered 0..K-1 in id order and their names written to the classes file. Crowd regions (iscrowd=1) are skipped unless --include-crowd."
)]
pub struct Args {
    /// The COCO instances JSON file.
    pub json: PathBuf,
    /// Folder of the images, prepended to each `file_name`.
    #[arg(long, default_value = ".")]
    pub images_dir: PathBuf,
    /// Annotation file to write.
    #[arg(long, short, default_value = "train.txt")]
    pub out: PathBuf,
    /// Classes file to write (default: `classes.txt` beside the annotation file).
    #[arg(long)]
    pub classes_out: Option<PathBuf>,
    /// Keep crowd regions as boxes.
    #[arg(long)]
    pub include_crowd: bool,
    /// Keep fractional coordinates instead of truncating them.
    #[arg(long)]
    pub keep_decimals: bool,
    /// Leave out images without objects.
    #[arg(long)]
    pub skip_empty: bool,
}

/// Runs `yolo coco2txt`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = CocoOptions {
        images_dir: a.images_dir,
        include_crowd: a.include_crowd,
        keep_decimals: a.keep_decimals,
        skip_empty_images: a.skip_empty,
    };
    let d = convert_coco(&a.json, &opts)
        .with_context(|| format!("converting COCO file {}", a.json.display()))?;
    super::dataset_out::write_converted(&a.out, a.classes_out, &d.annotations, &d.classes)?;
    if d.skipped_crowd > 0 {
        println!("skipped {} crowd regions", d.skipped_crowd);
    }
    Ok(())
}
