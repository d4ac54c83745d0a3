//! `yolo synth`: writes the synthetic shapes dataset (images, annotation file, classes file).

use std::path::PathBuf;

use anyhow::{bail, Context};
use yolo_data::{write_synth, SynthConfig, SynthFormat, SynthShape};

/// Generates coloured shapes with exact boxes on textured backgrounds.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes DIR/images/synth-NNNNNN.png, DIR/annotations.txt (keras-yolo3 lines, absolute paths), DIR/classes.txt and DIR/synth.json (the configuration). Each class is one shape in its own hue range: circle (red), square (green), triangle (blue), diamond (yellow). The same options and seed give the same files."
)]
pub struct Args {
    /// Output folder (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Smallest object side in pixels.
    #[arg(long, default_value_t = 12)]
    pub min_object_size: u32,
    /// Largest object side in pixels.
    #[arg(long, default_value_t = 48)]
    pub max_object_size: u32,
    /// Most objects per image (at least one each).
    #[arg(long, default_value_t = 4)]
    pub max_objects: usize,
    /// Classes, comma-separated, from circle, square, triangle, diamond.
    #[arg(long, default_value = "circle,square,triangle")]
    pub classes: String,
    /// Write JPEG (quality 90) instead of PNG.
    #[arg(long)]
    pub jpeg: bool,
}

fn parse_classes(s: &str) -> anyhow::Result<Vec<SynthShape>> {
    s.split(',')
        .map(|t| {
            let t = t.trim();
            Ok(match t {
                "circle" => SynthShape::Circle,
                "square" => SynthShape::Square,
                "triangle" => SynthShape::Triangle,
                "diamond" => SynthShape::Diamond,
                _ => bail!("--classes: unknown shape `{t}` (circle, square, triangle, diamond)"),
            })
        })
        .collect()
}

/// Runs `yolo synth`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        image_size: a.size,
        count: a.count,
        classes: parse_classes(&a.classes)?,
        seed: a.seed,
        min_object_size: a.min_object_size,
        max_object_size: a.max_object_size,
        max_objects: a.max_objects,
        format: if a.jpeg {
            SynthFormat::Jpeg
        } else {
            SynthFormat::Png
        },
    };
    let d = write_synth(&cfg, &a.out)
        .with_context(|| format!("writing the synthetic dataset to {}", a.out.display()))?;
    let boxes: usize = d.annotations.iter().map(|x| x.boxes.len()).sum();
    println!(
        "wrote {} images, {boxes} boxes: {} and {} ({} classes)",
        d.annotations.len(),
        d.annotation_file.display(),
        d.classes_file.display(),
        d.classes.len()
    );
    Ok(())
}
