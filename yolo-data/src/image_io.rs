//! Image decoding: any JPEG or PNG the `image` crate reads (grayscale, RGBA, 16-bit, palette)
//! becomes 8-bit RGB, the form keras-yolo3's `get_random_data` works on after Pillow's convert.
//!
//! Truncated files are refused before decoding. The JPEG decoder pads a file cut off in its scan
//! data with grey and reports nothing, so the file's structure is walked first (as Pillow's "image
//! file is truncated" check does): a JPEG must reach its end-of-image marker `FF D9` after the
//! scan data, a PNG its `IEND` chunk. Bytes after the end-of-image marker (or after `IEND`) are
//! accepted: phone and camera firmware appends trailers there and Pillow reads such files. A file
//! whose structure is damaged in another way is left to the decoder, which names the problem; the
//! PNG decoder also checks every chunk's CRC.
//!
//! Decoding allocates at most [`DEFAULT_MAX_IMAGE_MIB`] MiB per image unless the environment
//! variable [`MAX_IMAGE_MIB_VAR`] says otherwise.

use std::path::Path;

use image::RgbImage;

use crate::error::DataError;

/// The decoder's memory limit per image, in MiB, when [`MAX_IMAGE_MIB_VAR`] is not set (the
/// `image` crate's default: a 12000x12000 RGB photo fits, a 14000x14000 one does not).
pub const DEFAULT_MAX_IMAGE_MIB: u64 = 512;

/// Environment variable that raises (or lowers) the decoder's memory limit per image, in MiB.
pub const MAX_IMAGE_MIB_VAR: &str = "YOLO_MAX_IMAGE_MIB";

/// The memory limit in MiB: [`MAX_IMAGE_MIB_VAR`] if set, else [`DEFAULT_MAX_IMAGE_MIB`].
fn max_image_mib() -> Result<u64, DataError> {
    match std::env::var(MAX_IMAGE_MIB_VAR) {
        Err(_) => Ok(DEFAULT_MAX_IMAGE_MIB),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(DataError::Config(format!(
                "{MAX_IMAGE_MIB_VAR}=`{v}` is not a positive whole number of MiB"
            ))),
        },
    }
}

/// Decodes the image at `path` into 8-bit RGB.
///
/// Grayscale values are repeated over the three channels (what Pillow's `convert('RGB')` does, and
/// what resizing a grayscale image then replicating gives), alpha is dropped, 16-bit samples are
/// scaled to 8 bits. Errors name the file; a truncated file is [`DataError::TruncatedImage`].
pub fn load_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb(&bytes, path)
}

/// Decodes an in-memory JPEG/PNG; `path` is only used to name the image in errors. A truncated
/// file (see the module doc) is refused with [`DataError::TruncatedImage`], an image above the
/// memory limit with a message stating the limit and how to raise it.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage, DataError> {
    check_complete(bytes, path)?;
    let codec = |e: image::ImageError| DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| codec(e.into()))?;
    let mib = max_image_mib()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(mib.saturating_mul(1024 * 1024));
    reader.limits(limits);
    let img = match reader.decode() {
        Ok(img) => img,
        Err(image::ImageError::Limits(_)) => {
            let size = image_dimensions(bytes, path)
                .map(|(w, h)| format!("{w}x{h}"))
                .unwrap_or_else(|_| "too large".into());
            return Err(DataError::Image {
                path: path.to_path_buf(),
                message: format!(
                    "image is {size}: decoding it needs more than the limit of {mib} MiB; \
                     downscale it, or raise the limit with the environment variable \
                     {MAX_IMAGE_MIB_VAR} (MiB, e.g. {MAX_IMAGE_MIB_VAR}={})",
                    mib * 4
                ),
            });
        }
        Err(e) => return Err(codec(e)),
    };
    Ok(match img {
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// The `(width, height)` from an in-memory image's header, without decoding the pixels.
pub fn image_dimensions(bytes: &[u8], path: &Path) -> Result<(u32, u32), DataError> {
    let codec = |message: String| DataError::Image {
        path: path.to_path_buf(),
        message,
    };
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| codec(e.to_string()))?
        .into_dimensions()
        .map_err(|e| codec(e.to_string()))
}

/// Reads the file at `path`, refuses it when truncated ([`check_complete`]) and returns the size
/// from its header: the cheap check of `yolo check-data --header-only` (no pixel is decoded).
pub fn read_image_header(path: &Path) -> Result<(u32, u32), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    check_complete(&bytes, path)?;
    image_dimensions(&bytes, path)
}

/// Refuses a JPEG that ends before its end-of-image marker and a PNG that ends before its `IEND`
/// chunk, with [`DataError::TruncatedImage`] naming the file and its length. Other formats, and
/// files whose structure is damaged in another way, pass (the decoder judges them).
pub fn check_complete(bytes: &[u8], path: &Path) -> Result<(), DataError> {
    let found = if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg_truncation(bytes)
    } else if bytes.starts_with(PNG_SIGNATURE) {
        png_truncation(bytes)
    } else {
        None
    };
    match found {
        None => Ok(()),
        Some(reason) => Err(DataError::TruncatedImage {
            path: path.to_path_buf(),
            bytes: bytes.len(),
            reason,
        }),
    }
}

const PNG_SIGNATURE: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Why a JPEG is truncated, or `None` when it reaches its end-of-image marker or its structure is
/// odd in a way the decoder should judge. Walks the marker segments by their lengths (so an EXIF
/// thumbnail's own `FF D9` is skipped), and through each scan's entropy-coded data.
fn jpeg_truncation(b: &[u8]) -> Option<String> {
    let n = b.len();
    let missing = || Some("the JPEG data ends before its end-of-image marker FF D9".to_string());
    let mut i = 2;
    loop {
        if i >= n {
            return missing();
        }
        if b[i] != 0xFF {
            // Not a marker where one must be: damaged, not cut off; the decoder says what.
            return None;
        }
        while i < n && b[i] == 0xFF {
            i += 1;
        }
        if i >= n {
            return missing();
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xD9 => return None,
            // Standalone markers: TEM, restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 | 0xD8 => return None,
            _ => {}
        }
        if i + 2 > n {
            return missing();
        }
        let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        if len < 2 {
            return None;
        }
        if i + len > n {
            return Some(format!(
                "the JPEG data ends inside a marker segment (FF {marker:02X}) that needs {} more \
                 bytes, before its end-of-image marker FF D9",
                i + len - n
            ));
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: runs until a marker other than a stuffed zero, a restart
            // marker or fill bytes.
            loop {
                match b[i..].iter().position(|&x| x == 0xFF) {
                    None => return missing(),
                    Some(k) => i += k,
                }
                if i + 1 >= n {
                    return missing();
                }
                match b[i + 1] {
                    0x00 | 0xD0..=0xD7 => i += 2,
                    0xFF => i += 1,
                    _ => break,
                }
            }
        }
    }
}

/// Why a PNG is truncated, or `None` when it reaches its `IEND` chunk (or its structure is odd in
/// a way the decoder should judge). Walks the chunks by their lengths.
fn png_truncation(b: &[u8]) -> Option<String> {
    let n = b.len();
    let mut i = PNG_SIGNATURE.len();
    loop {
        if i == n {
            return Some("the PNG data ends before its IEND chunk".into());
        }
        if i + 8 > n {
            return Some("the PNG data ends inside a chunk header, before its IEND chunk".into());
        }
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let kind = &b[i + 4..i + 8];
        if len > i32::MAX as usize || !kind.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let name = String::from_utf8_lossy(kind);
        if i + 12 + len > n {
            return Some(format!(
                "the PNG data ends inside its {name} chunk ({} bytes short), before its IEND chunk",
                i + 12 + len - n
            ));
        }
        if kind == b"IEND" {
            return None;
        }
        i += 12 + len;
    }
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
