//! Image decoding: any JPEG or PNG the `image` crate reads (grayscale, RGBA, 16-bit, palette)
//! becomes 8-bit RGB, the form keras-yolo3's `get_random_data` works on after Pillow's convert.

use std::path::Path;

use image::RgbImage;

use crate::error::DataError;

/// Decodes the image at `path` into 8-bit RGB.
///
/// Grayscale values are repeated over the three channels (what Pillow's `convert('RGB')` does, and
/// what resizing a grayscale image then replicating gives), alpha is dropped, 16-bit samples are
/// scaled to 8 bits. Errors name the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb(&bytes, path)
}

/// Decodes an in-memory JPEG/PNG; `path` is only used to name the image in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage, DataError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let img = reader.decode().map_err(|e| DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(match img {
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grayscale_and_rgba_png_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let gray = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 10 + y) as u8]));
        let p = dir.path().join("g.png");
        gray.save(&p).unwrap();
        let rgb = load_rgb(&p).unwrap();
        assert_eq!(rgb.dimensions(), (3, 2));
        assert_eq!(rgb.get_pixel(2, 1).0, [21, 21, 21]);

        let rgba = image::RgbaImage::from_fn(2, 2, |x, _| image::Rgba([x as u8, 7, 9, 100]));
        let p = dir.path().join("a.png");
        rgba.save(&p).unwrap();
        assert_eq!(load_rgb(&p).unwrap().get_pixel(1, 0).0, [1, 7, 9]);

        let g16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(1, 1, |_, _| {
            image::Luma([65535u16])
        });
        let p = dir.path().join("w.png");
        g16.save(&p).unwrap();
        assert_eq!(load_rgb(&p).unwrap().get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broken.jpg");
        std::fs::write(&p, b"not an image at all").unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(e.contains("broken.jpg"), "{e}");
        let missing = dir.path().join("missing.jpg");
        let e = load_rgb(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.jpg"), "{e}");
    }
}
