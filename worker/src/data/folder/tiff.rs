//! TIFF through the tiff crate: 1 to N bands, 8 or 16 bits, unsigned integers, chunky or planar,
//! any compression the crate reads. The first image (IFD) of a multi-page file is used.
//!
//! One quirk handled here: a file tagged RGB (or CMYK) with extra samples that are not alpha (the usual way
//! to store RGB + near-infrared) comes out of the decoder as plain RGB, the extra bands dropped.
//! Such a file is decoded from a copy whose photometric tag says "grey" (BlackIsZero), which the
//! decoder returns as `Multiband` with every sample; the pixel data is the same.

use super::decode::{Failure, Format, Probe, MAX_DECODE_BYTES};
use super::report::SkipKind;
use crate::data::tile::{PixelDepth, Pixels, Tile};
use std::borrow::Cow;
use std::io::{Cursor, Read, Seek};
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::Tag;
use tiff::{ColorType, TiffError};

/// `PhotometricInterpretation` tag and its BlackIsZero value.
const PHOTOMETRIC: u16 = 262;
const BLACK_IS_ZERO: u16 = 1;

fn open<R: Read + Seek>(r: R) -> Result<Decoder<R>, Failure> {
    let mut limits = Limits::default();
    limits.decoding_buffer_size = MAX_DECODE_BYTES as usize;
    Ok(Decoder::new(r).map_err(classify)?.with_limits(limits))
}

/// Bands and depth of the first image, and whether its extra bands need the photometric patch.
fn layout<R: Read + Seek>(d: &mut Decoder<R>) -> Result<(usize, PixelDepth, bool), Failure> {
    let formats: Vec<u16> = d.find_tag_unsigned_vec(Tag::SampleFormat).map_err(classify)?.unwrap_or_default();
    match formats.iter().find(|&&f| f != 1) {
        Some(2) => {
            return Err((
                SkipKind::Unsupported,
                "signed integer samples: save as unsigned 8 or 16-bit".into(),
            ))
        }
        Some(3) => {
            return Err((
                SkipKind::Unsupported,
                "floating-point samples: convert to 8 or 16-bit integers".into(),
            ))
        }
        Some(f) => return Err((SkipKind::Unsupported, format!("sample format {f} is not read"))),
        None => {}
    }
    let samples: usize =
        d.find_tag_unsigned::<u16>(Tag::SamplesPerPixel).map_err(classify)?.unwrap_or(1).into();
    let ct = d.colortype().map_err(classify)?;
    let known = usize::from(ct.num_samples());
    let (bits, bands, patch) = match ct {
        ColorType::Gray(b) | ColorType::GrayA(b) => (b, known, false),
        // Extra samples that are not alpha are dropped by the decoder for these: patch.
        ColorType::RGB(b) | ColorType::RGBA(b) | ColorType::CMYK(b) | ColorType::CMYKA(b) => {
            (b, samples.max(known), samples > known)
        }
        ColorType::YCbCr(b) => (b, 3, false),
        ColorType::Multiband { bit_depth, num_samples } => (bit_depth, num_samples as usize, false),
        ColorType::Palette(_) => {
            return Err((SkipKind::Unsupported, "palette (indexed-colour) TIFF: save as RGB or grey".into()))
        }
        other => return Err((SkipKind::Unsupported, format!("TIFF colour type {other:?} is not read"))),
    };
    let depth = match bits {
        8 => PixelDepth::U8,
        16 => PixelDepth::U16,
        b => {
            return Err((
                SkipKind::Unsupported,
                format!("{b}-bit samples: only 8- and 16-bit TIFFs are read"),
            ))
        }
    };
    Ok((bands, depth, patch))
}

/// Probe from the header.
pub fn probe<R: Read + Seek>(r: R) -> Result<Probe, Failure> {
    let mut d = open(r)?;
    let (width, height) = d.dimensions().map_err(classify)?;
    let (bands, depth, _) = layout(&mut d)?;
    Ok(Probe { format: Format::Tiff, height, width, bands, depth })
}

/// Decode the first image of a TIFF file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Tile<'static>, Failure> {
    let mut d = open(Cursor::new(bytes))?;
    let (bands, _, patch) = layout(&mut d)?;
    if patch {
        let patched = as_black_is_zero(bytes).ok_or_else(|| {
            (SkipKind::Corrupt, "RGB TIFF with extra bands whose header could not be read".to_string())
        })?;
        return decode_all(open(Cursor::new(&patched[..]))?, bands);
    }
    decode_all(d, bands)
}

fn decode_all<R: Read + Seek>(mut d: Decoder<R>, bands: usize) -> Result<Tile<'static>, Failure> {
    let (w, h) = d.dimensions().map_err(classify)?;
    let (w, h) = (w as usize, h as usize);
    let mut buf = DecodingResult::U8(Vec::new());
    let layout = d.read_image_to_buffer(&mut buf).map_err(classify)?;
    if buf.as_buffer(0).as_bytes().len() < layout.complete_len {
        return Err((SkipKind::Unsupported, "too large to decode (planar image over the size limit)".into()));
    }
    let planes = layout.planes.max(1);
    let pixels = match buf {
        DecodingResult::U8(v) => Pixels::U8(Cow::Owned(interleave(v, planes, h * w))),
        DecodingResult::U16(v) => Pixels::U16(Cow::Owned(interleave(v, planes, h * w))),
        _ => return Err((SkipKind::Unsupported, "only 8- and 16-bit unsigned samples are read".into())),
    };
    Tile::new(h, w, bands, pixels)
        .map_err(|e| (SkipKind::Corrupt, format!("decoded data does not match the header: {e}")))
}

/// Planar (band after band) to HWC; chunky data (one plane) is already HWC.
fn interleave<T: Copy + Default>(v: Vec<T>, planes: usize, pixels: usize) -> Vec<T> {
    if planes <= 1 || v.len() < planes * pixels {
        return v;
    }
    let mut out = vec![T::default(); planes * pixels];
    for (p, plane) in v.chunks_exact(pixels).take(planes).enumerate() {
        for (i, &s) in plane.iter().enumerate() {
            out[i * planes + p] = s;
        }
    }
    out
}

fn classify(e: TiffError) -> Failure {
    match e {
        TiffError::UnsupportedError(u) => (SkipKind::Unsupported, format!("TIFF: {u}")),
        TiffError::LimitsExceeded => (SkipKind::Unsupported, "TIFF too large to decode".into()),
        TiffError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            (SkipKind::Corrupt, "truncated TIFF (the data ends early)".into())
        }
        other => (SkipKind::Corrupt, format!("TIFF: {other}")),
    }
}

/// A copy of `bytes` whose first image's photometric tag is BlackIsZero (see the module docs).
/// Classic and BigTIFF, either byte order; `None` when the header is not where it should be.
pub fn as_black_is_zero(bytes: &[u8]) -> Option<Vec<u8>> {
    let le = match bytes.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let get = |off: usize, n: usize| -> Option<u64> {
        let b = bytes.get(off..off.checked_add(n)?)?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if le { b[n - 1 - i] } else { b[i] };
            v = (v << 8) | byte as u64;
        }
        Some(v)
    };
    let big = match get(2, 2)? {
        42 => false,
        43 => true,
        _ => return None,
    };
    let (ifd, count_len, entry_len, value_at) =
        if big { (get(8, 8)?, 8, 20, 12) } else { (get(4, 4)?, 2, 12, 8) };
    let ifd = usize::try_from(ifd).ok()?;
    let entries = usize::try_from(get(ifd, count_len)?).ok()?;
    for k in 0..entries.min(4096) {
        let e = ifd + count_len + k * entry_len;
        if get(e, 2)? == PHOTOMETRIC as u64 {
            // A SHORT stored inline: the value sits at the start of the value field.
            let at = e + value_at;
            bytes.get(at..at + 2)?;
            let mut out = bytes.to_vec();
            let v = if le { BLACK_IS_ZERO.to_le_bytes() } else { BLACK_IS_ZERO.to_be_bytes() };
            out[at..at + 2].copy_from_slice(&v);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_to_hwc() {
        assert_eq!(interleave(vec![1, 2, 3, 10, 20, 30], 2, 3), vec![1, 10, 2, 20, 3, 30]);
        assert_eq!(interleave(vec![1, 2, 3], 1, 3), vec![1, 2, 3]);
    }

    #[test]
    fn patch_needs_a_tiff_header() {
        assert!(as_black_is_zero(b"not a tiff").is_none());
        assert!(as_black_is_zero(b"II*\0\xff\xff\xff\x7f").is_none());
    }
}
