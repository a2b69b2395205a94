//! The font the plots are drawn with, bundled (DejaVu Sans, Latin-1 subset, see
//! fonts/LICENSE) and registered with plotters' ab_glyph renderer, so text renders on a machine
//! without fontconfig or any system font.

use std::sync::Once;

static FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");
static REGISTER: Once = Once::new();

/// Family name the plots use.
pub const FAMILY: &str = "sans-serif";

/// Register the bundled font (idempotent).
pub fn ensure_registered() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font (checked by the report tests); a failure here
        // would only lose text, which `plots` reports as a drawing error.
        let _ = plotters::style::register_font(FAMILY, plotters::style::FontStyle::Normal, FONT);
    });
}
