//! Decoding one file into a `Tile`: the format comes from the content (magic bytes), never from
//! the extension, so a text file named `.png` is "not an image" rather than a decoder error.
//!
//! PNG and JPEG go through the image crate (8- and 16-bit, grey or RGB; an alpha channel is
//! dropped, since it is not a spectral band). TIFF goes through the tiff crate (`tiff.rs`),
//! which keeps every band (1 to N, 8 or 16 bits, chunky or planar). Every failure comes back as
//! a `Failure` (kind and reason) that the report lists; decoders return errors, and a panic in
//! one (a decoder bug on hostile input) is caught as the last line of defence.

use super::report::SkipKind;
use super::tiff;
use crate::data::tile::{PixelDepth, Pixels, Tile};
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use std::borrow::Cow;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

/// Why a file cannot be used.
pub type Failure = (SkipKind, String);

/// Largest allocation one decode may make. Two decodes run at once on the user's 2 cores, and a
/// 16-bit 8-band 8k x 8k image (1 GiB) is not a tile.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// A container format, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Tiff,
}

/// The format of a file starting with `head`, if it is one we read.
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"].iter().any(|m| head.starts_with(*m)) {
        Some(Format::Tiff)
    } else {
        None
    }
}

fn not_an_image(head: &[u8]) -> Failure {
    let shown: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    (SkipKind::NotAnImage, format!("the content is not PNG, JPEG or TIFF (starts with {shown})"))
}

/// What an image holds, read from its header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    pub height: u32,
    pub width: u32,
    /// Bands after dropping alpha (PNG/JPEG) and as the tile will have them.
    pub bands: usize,
    pub depth: PixelDepth,
}

/// Probe `path` without decoding its pixels.
pub fn probe_file(path: &Path) -> Result<Probe, Failure> {
    let io = |e: std::io::Error| (SkipKind::Unreadable, format!("cannot read: {e}"));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 8];
    let n = read_up_to(&mut file, &mut head).map_err(io)?;
    if n == 0 {
        return Err((SkipKind::Empty, "empty file (0 bytes)".into()));
    }
    let format = sniff(&head[..n]).ok_or_else(|| not_an_image(&head[..n]))?;
    std::io::Seek::rewind(&mut file).map_err(io)?;
    let reader = BufReader::new(file);
    catch(|| match format {
        Format::Tiff => tiff::probe(reader),
        Format::Png | Format::Jpeg => {
            let fmt = if format == Format::Png { ImageFormat::Png } else { ImageFormat::Jpeg };
            let dec = ImageReader::with_format(reader, fmt).into_decoder().map_err(classify)?;
            let (width, height) = dec.dimensions();
            let (bands, depth) = image_layout(dec.color_type())?;
            Ok(Probe { format, height, width, bands, depth })
        }
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Bands (alpha dropped) and depth of an image-crate colour type.
fn image_layout(c: image::ColorType) -> Result<(usize, PixelDepth), Failure> {
    use image::ColorType as C;
    match c {
        C::L8 | C::La8 => Ok((1, PixelDepth::U8)),
        C::Rgb8 | C::Rgba8 => Ok((3, PixelDepth::U8)),
        C::L16 | C::La16 => Ok((1, PixelDepth::U16)),
        C::Rgb16 | C::Rgba16 => Ok((3, PixelDepth::U16)),
        other => Err(unsupported(other)),
    }
}

fn unsupported(c: image::ColorType) -> Failure {
    (SkipKind::Unsupported, format!("{c:?} samples: only 8- and 16-bit integer images are read"))
}

/// Decode a whole file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Tile<'static>, Failure> {
    if bytes.is_empty() {
        return Err((SkipKind::Empty, "empty file (0 bytes)".into()));
    }
    let format = sniff(bytes).ok_or_else(|| not_an_image(bytes))?;
    catch(|| match format {
        Format::Tiff => tiff::decode(bytes),
        Format::Png => decode_image(bytes, ImageFormat::Png),
        Format::Jpeg => {
            // zune-jpeg decodes a cut-off stream as far as it goes and fills the rest with grey;
            // a JPEG without its end-of-image marker near the end was cut off.
            let tail = &bytes[bytes.len().saturating_sub(4096)..];
            if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
                return Err((SkipKind::Corrupt, "truncated JPEG (no end-of-image marker)".into()));
            }
            decode_image(bytes, ImageFormat::Jpeg)
        }
    })
}

fn decode_image(bytes: &[u8], fmt: ImageFormat) -> Result<Tile<'static>, Failure> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), fmt);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(classify)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (bands, pixels) = match img {
        DynamicImage::ImageLuma8(b) => (1, Pixels::U8(Cow::Owned(b.into_raw()))),
        DynamicImage::ImageLumaA8(b) => (1, Pixels::U8(Cow::Owned(drop_alpha(&b.into_raw(), 2)))),
        DynamicImage::ImageRgb8(b) => (3, Pixels::U8(Cow::Owned(b.into_raw()))),
        DynamicImage::ImageRgba8(b) => (3, Pixels::U8(Cow::Owned(drop_alpha(&b.into_raw(), 4)))),
        DynamicImage::ImageLuma16(b) => (1, Pixels::U16(Cow::Owned(b.into_raw()))),
        DynamicImage::ImageLumaA16(b) => (1, Pixels::U16(Cow::Owned(drop_alpha(&b.into_raw(), 2)))),
        DynamicImage::ImageRgb16(b) => (3, Pixels::U16(Cow::Owned(b.into_raw()))),
        DynamicImage::ImageRgba16(b) => (3, Pixels::U16(Cow::Owned(drop_alpha(&b.into_raw(), 4)))),
        other => return Err(unsupported(other.color())),
    };
    Tile::new(h, w, bands, pixels).map_err(|e| (SkipKind::Corrupt, e.to_string()))
}

/// Keep the first `n - 1` of every `n` samples.
fn drop_alpha<T: Copy>(px: &[T], n: usize) -> Vec<T> {
    px.chunks_exact(n).flat_map(|p| p[..n - 1].iter().copied()).collect()
}

fn classify(e: ImageError) -> Failure {
    match e {
        ImageError::Unsupported(u) => (SkipKind::Unsupported, u.to_string()),
        ImageError::Limits(l) => (SkipKind::Unsupported, format!("too large to decode: {l}")),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            (SkipKind::Corrupt, "truncated (the data ends early)".into())
        }
        other => (SkipKind::Corrupt, other.to_string()),
    }
}

/// Run a decoder, turning a panic into a failure (the decoders return errors for bad input;
/// this only guards against their bugs, so that one file never stops a run).
fn catch<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err((SkipKind::Corrupt, format!("the decoder failed on this file ({msg})")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(sniff(b"II*\0...."), Some(Format::Tiff));
        assert_eq!(sniff(b"MM\0*...."), Some(Format::Tiff));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(decode(b"hello world").unwrap_err().0, SkipKind::NotAnImage);
        assert_eq!(decode(b"").unwrap_err().0, SkipKind::Empty);
    }

    #[test]
    fn alpha_is_dropped() {
        assert_eq!(drop_alpha(&[1u8, 2, 3, 255, 4, 5, 6, 255], 4), vec![1, 2, 3, 4, 5, 6]);
    }
}
