//! `yolo anchors`: k-means anchors over the boxes of an annotation file (keras-yolo3's kmeans.py).
//! By default the boxes are first letterboxed to the network input (`--input-size`, 416x416), the
//! space the anchors live in; `--original` clusters original image pixels as kmeans.py does.

use std::path::PathBuf;

use anyhow::{bail, Context};
use yolo_data::{
    box_wh, image_sizes, kmeans_anchors, letterboxed_box_wh, read_annotations, write_anchors,
};

/// Clusters box sizes with the 1 - IoU distance and writes the anchors file.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Distance: 1 - IoU of (width, height) pairs aligned at a corner. By default each box is first scaled by its image's letterbox scale min(W/iw, H/ih) to the network input (--input-size, 416x416), which is where the trainer uses the anchors; only the image headers are read, and image paths are taken as written (relative ones against the working directory, as `yolo train` does). --original clusters the sizes in original image pixels instead, as keras-yolo3's kmeans.py does (no image is read). The best of several k-means++ starts is kept; the result depends only on --seed. The anchors are printed and written sorted by area, in the format `yolo train --anchors` reads, with the average IoU of the boxes with their best anchor (\"Accuracy\" in kmeans.py)."
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
    /// Network input size the boxes are letterboxed to before clustering: `416` or `HxW` (e.g.
    /// `320x416`: 320 high, 416 wide, keras-yolo3's input_shape order).
    #[arg(long, default_value = "416", conflicts_with = "original")]
    pub input_size: String,
    /// Cluster box sizes in original image pixels, as keras-yolo3's kmeans.py (no image is read;
    /// the anchors then only suit a network input near the images' size).
    #[arg(long)]
    pub original: bool,
    /// Anchors file to write (one line, as `yolo train --anchors` reads).
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

/// The line naming the space the boxes were clustered in.
fn space_line(input: Option<(u32, u32)>) -> String {
    match input {
        None => "clustered in original image pixels (--original)".into(),
        Some((w, h)) if w == h => format!("clustered in the {w}x{h} letterboxed input space"),
        Some((w, h)) => {
            format!("clustered in the {h}x{w} (height x width) letterboxed input space")
        }
    }
}

/// Runs `yolo anchors`.
pub fn run(a: Args) -> anyhow::Result<()> {
    // Check the option before reading anything.
    let input = if a.original {
        None
    } else {
        Some(parse_input_size(&a.input_size)?)
    };
    let anns = read_annotations(&a.annotations)?;
    let listed: usize = anns.iter().map(|x| x.boxes.len()).sum();
    if listed == 0 {
        bail!(
            "{}: no boxes to cluster ({} image lines, none with a box)",
            a.annotations.display(),
            anns.len()
        );
    }
    let boxes = match input {
        None => box_wh(&anns),
        Some(size) => {
            let with_boxes: Vec<_> = anns.into_iter().filter(|x| !x.boxes.is_empty()).collect();
            let sizes = image_sizes(&with_boxes, &a.annotations)?;
            letterboxed_box_wh(&with_boxes, &sizes, size)
        }
    };
    if boxes.is_empty() {
        bail!(
            "{}: no boxes to cluster: none of the {listed} boxes has a positive width and height{}",
            a.annotations.display(),
            if input.is_some() {
                " after the letterbox"
            } else {
                ""
            }
        );
    }
    let r = kmeans_anchors(&boxes, a.k, a.seed)
        .with_context(|| format!("clustering the boxes of {}", a.annotations.display()))?;
    let anchors = r.anchors_by_area();
    write_anchors(&a.out, &anchors)?;
    println!("{} boxes, k = {}, seed {}", boxes.len(), a.k, a.seed);
    println!("{}", space_line(input));
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
    use super::{parse_input_size, space_line};

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

    #[test]
    fn space_lines() {
        assert_eq!(
            space_line(Some((416, 416))),
            "clustered in the 416x416 letterboxed input space"
        );
        assert_eq!(
            space_line(Some((416, 320))),
            "clustered in the 320x416 (height x width) letterboxed input space"
        );
        assert_eq!(
            space_line(None),
            "clustered in original image pixels (--original)"
        );
    }
}
