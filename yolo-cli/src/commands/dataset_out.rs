//! Output shared by the dataset converters (`voc2txt`, `coco2txt`).

use std::path::{Path, PathBuf};

use yolo_data::{write_annotations, write_classes, Annotation};

/// Writes the annotation file and the classes file (default: `classes.txt` beside `out`) and
/// prints what was written.
pub fn write_converted(
    out: &Path,
    classes_out: Option<PathBuf>,
    annotations: &[Annotation],
    classes: &[String],
) -> anyhow::Result<()> {
    write_annotations(out, annotations)?;
    let classes_out = classes_out.unwrap_or_else(|| out.with_file_name("classes.txt"));
    write_classes(&classes_out, classes)?;
    let boxes: usize = annotations.iter().map(|x| x.boxes.len()).sum();
    println!(
        "wrote {} lines, {boxes} boxes to {}; {} classes to {}",
        annotations.len(),
        out.display(),
        classes.len(),
        classes_out.display()
    );
    Ok(())
}
