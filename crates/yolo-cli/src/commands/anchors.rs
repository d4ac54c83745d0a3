//! `yolo anchors`: k-means anchors over the boxes of an annotation file (keras-yolo3's kmeans.py).

use std::path::PathBuf;

use anyhow::{bail, Context};
use yolo_data::{
    box_wh, image_sizes, kmeans_anchors, letterboxed_box_wh, read_annotations, write_anchors,
};

/// Clusters box sizes with the 1 - IoU distance and writes the anchors file.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Distance: 1 - IoU of (width, height) pairs aligned at a corner. Box sizes are taken in original image pixels (as kmeans.py), or, with --input-size, after the letterbox to the network input (what the network sees; needs the images' headers). The best of several k-means++ starts is kept; the result depends only on --seed. Prints the average IoU of the boxes with their best anchor (\"Accuracy\" in kmeans.py)."
)]
pub struct Args {
    /// Annotation file (`path x_min,y_min,x_max,y_max,class ...` lines).
    pub annotations: PathBuf,
    /// Number of anchors: 9 for YOLOv3, 6 for tiny YOLOv3.
    #[arg(long, short, default_value_t = 9)]
    pub k: usize,
    /// Seed of the k-means starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Letterbox the boxes to this input size first: `416` or `HxW` (e.g. `320x416`: 320 high,
    /// 416 wide, keras-yolo3's input_shape order).
    #[arg(long)]
    pub input_size: Option<String>,
    /// Anchors file to write.
    #[arg(long, short, default_value = "yolo_anchors.txt")]
    pub out: PathBuf,
}

/// Parses `416` or `320x416` (height x width) into (width, height).
fn parse_input_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let num = |t: &str| -> anyhow::Result<u32> {
        let v: u32 = t
            .trim()
            .parse()
            .with_context(|| format!("--input-size `{s}`: `{t}` is not a whole number"))?;
        if v == 0 || !v.is_multiple_of(32) {
            bail!("--input-size `{s}`: {v} is not a positive multiple of 32");
        }
        Ok(v)
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((num(w)?, num(h)?)),
        None => {
            let v = num(s)?;
            Ok((v, v))
        }
    }
}

/// Runs `yolo anchors`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let anns = read_annotations(&a.annotations)?;
    let boxes = match a.input_size.as_deref() {
        None => box_wh(&anns),
        Some(s) => {
            let (w, h) = parse_input_size(s)?;
            let sizes = image_sizes(&anns)?;
            letterboxed_box_wh(&anns, &sizes, (w, h))
        }
    };
    let r = kmeans_anchors(&boxes, a.k, a.seed)
        .with_context(|| format!("clustering the boxes of {}", a.annotations.display()))?;
    let anchors = r.anchors();
    write_anchors(&a.out, &anchors)?;
    println!("{} boxes, k = {}, seed {}", boxes.len(), a.k, a.seed);
    println!("anchors: {}", anchors.to_file_string());
    println!("average IoU: {:.2}%", r.avg_iou * 100.0);
    println!("wrote {}", a.out.display());
    if a.k != 9 && a.k != 6 {
        eprintln!("note: YOLOv3 uses 9 anchors and tiny YOLOv3 6; the trainer reads only those");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_input_size;

    #[test]
    fn input_size_forms() {
        assert_eq!(parse_input_size("416").unwrap(), (416, 416));
        assert_eq!(parse_input_size("320x416").unwrap(), (416, 320));
        assert_eq!(
            parse_input_size("41x").unwrap_err().to_string(),
            "--input-size `41x`: `` is not a whole number"
        );
        assert_eq!(
            parse_input_size("100").unwrap_err().to_string(),
            "--input-size `100`: 100 is not a positive multiple of 32"
        );
    }
}
