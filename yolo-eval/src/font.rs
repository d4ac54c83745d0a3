//! The one font every PNG of the project is written with: DejaVu Sans, embedded in the binary (so
//! no font file has to be installed) and registered with plotters' ab_glyph renderer on first use.
//! Detection labels ([`crate::draw`]), precision-recall plots ([`crate::pr_curve`]) and yolo-train's
//! `loss.png` all take their text style from here.

use std::sync::Once;

use plotters::style::{FontDesc, FontFamily, FontStyle, RGBColor, TextStyle};

/// The TrueType bytes of DejaVu Sans (licence: `assets/fonts/LICENSE`, Bitstream Vera terms).
pub static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family name the font is registered under with plotters.
pub const FAMILY: &str = "dejavu-sans";

static REGISTER: Once = Once::new();

/// Registers [`DEJAVU_SANS`] with plotters (once per process; later calls are free). Every
/// function below calls it, so callers only need it when naming [`FAMILY`] themselves.
pub fn register() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType file compiled into the binary, checked by a test below.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("embedded DejaVu Sans does not parse");
        }
    });
}

/// The font at `size` pixels.
pub fn font(size: f64) -> FontDesc<'static> {
    register();
    FontDesc::new(FontFamily::Name(FAMILY), size, FontStyle::Normal)
}

/// A text style: the font at `size` pixels in `color`.
pub fn text_style(size: f64, color: RGBColor) -> TextStyle<'static> {
    font(size).color(&color)
}

/// Width and height in pixels of `text` at `size` pixels, as plotters lays it out.
pub fn text_size(text: &str, size: f64) -> (u32, u32) {
    font(size).box_size(text).unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_registers_and_measures_text() {
        register();
        register();
        let (w1, h1) = text_size("raccoon 0.87", 12.0);
        let (w2, h2) = text_size("raccoon 0.87", 24.0);
        assert!(w1 > 30 && h1 >= 8, "{w1}x{h1}");
        assert!(w2 > w1 + 20 && h2 > h1, "{w2}x{h2} vs {w1}x{h1}");
        assert!(text_size("WWW", 12.0).0 > text_size("iii", 12.0).0);
    }
}
