//! A decoded image tile: height x width x bands, HWC interleaved, 8- or 16-bit.
//!
//! Pixels are `Cow` so that a dataset can hand out a view into memory it owns (the in-memory
//! synthetic set, a memory-mapped cache) or a freshly decoded buffer, through one type.

use crate::error::{Result, WorkerError};
use std::borrow::Cow;

/// Bit depth of a tile's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelDepth {
    U8,
    U16,
}

impl PixelDepth {
    /// The value that maps to 1.0 in the 0..1 range the pipeline works in.
    pub fn max_value(self) -> f32 {
        match self {
            PixelDepth::U8 => u8::MAX as f32,
            PixelDepth::U16 => u16::MAX as f32,
        }
    }
}

/// A sample type the pipeline can read, scaled to 0..1 by dividing by its maximum.
pub trait Sample: Copy + Send + Sync + 'static {
    const DEPTH: PixelDepth;
    fn to_unit(self) -> f32;
}

impl Sample for u8 {
    const DEPTH: PixelDepth = PixelDepth::U8;
    #[inline(always)]
    fn to_unit(self) -> f32 {
        self as f32 * (1.0 / 255.0)
    }
}

impl Sample for u16 {
    const DEPTH: PixelDepth = PixelDepth::U16;
    #[inline(always)]
    fn to_unit(self) -> f32 {
        self as f32 * (1.0 / 65535.0)
    }
}

/// The samples of a tile, HWC interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pixels<'a> {
    U8(Cow<'a, [u8]>),
    U16(Cow<'a, [u16]>),
}

impl Pixels<'_> {
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(p) => p.len(),
            Pixels::U16(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn depth(&self) -> PixelDepth {
        match self {
            Pixels::U8(_) => PixelDepth::U8,
            Pixels::U16(_) => PixelDepth::U16,
        }
    }
}

/// A decoded tile. Fields are private so that `pixels.len() == height * width * bands` and
/// all three are non-zero always hold: index arithmetic downstream relies on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile<'a> {
    height: usize,
    width: usize,
    bands: usize,
    pixels: Pixels<'a>,
}

impl<'a> Tile<'a> {
    pub fn new(height: usize, width: usize, bands: usize, pixels: Pixels<'a>) -> Result<Tile<'a>> {
        if height == 0 || width == 0 || bands == 0 {
            return Err(WorkerError::Data(format!("tile must be non-empty, got {height}x{width}x{bands}")));
        }
        let want = height.checked_mul(width).and_then(|n| n.checked_mul(bands));
        if want != Some(pixels.len()) {
            return Err(WorkerError::Data(format!(
                "tile {height}x{width}x{bands} needs {} samples, got {}",
                height as u128 * width as u128 * bands as u128,
                pixels.len()
            )));
        }
        Ok(Tile { height, width, bands, pixels })
    }

    /// An 8-bit tile that borrows its samples.
    pub fn from_u8(height: usize, width: usize, bands: usize, px: &'a [u8]) -> Result<Tile<'a>> {
        Tile::new(height, width, bands, Pixels::U8(Cow::Borrowed(px)))
    }

    /// A 16-bit tile that borrows its samples.
    pub fn from_u16(height: usize, width: usize, bands: usize, px: &'a [u16]) -> Result<Tile<'a>> {
        Tile::new(height, width, bands, Pixels::U16(Cow::Borrowed(px)))
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn bands(&self) -> usize {
        self.bands
    }

    pub fn pixels(&self) -> &Pixels<'a> {
        &self.pixels
    }

    pub fn depth(&self) -> PixelDepth {
        self.pixels.depth()
    }

    /// Sample (y, x, band) in 0..1. For tests and previews; hot loops match on `pixels`.
    pub fn unit(&self, y: usize, x: usize, band: usize) -> f32 {
        let i = (y * self.width + x) * self.bands + band;
        match &self.pixels {
            Pixels::U8(p) => p[i].to_unit(),
            Pixels::U16(p) => p[i].to_unit(),
        }
    }

    /// A view of this tile that borrows its samples (no copy).
    pub fn borrowed(&self) -> Tile<'_> {
        let pixels = match &self.pixels {
            Pixels::U8(p) => Pixels::U8(Cow::Borrowed(&p[..])),
            Pixels::U16(p) => Pixels::U16(Cow::Borrowed(&p[..])),
        };
        Tile { height: self.height, width: self.width, bands: self.bands, pixels }
    }

    /// Detach from the dataset's memory.
    pub fn into_owned(self) -> Tile<'static> {
        let pixels = match self.pixels {
            Pixels::U8(p) => Pixels::U8(Cow::Owned(p.into_owned())),
            Pixels::U16(p) => Pixels::U16(Cow::Owned(p.into_owned())),
        };
        Tile { height: self.height, width: self.width, bands: self.bands, pixels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_inconsistent_shapes() {
        assert!(Tile::from_u8(2, 2, 3, &[0; 11]).is_err());
        assert!(Tile::from_u8(0, 2, 3, &[]).is_err());
        assert!(Tile::from_u16(2, 2, 4, &[0; 16]).is_ok());
    }

    #[test]
    fn unit_scales_by_depth() {
        let t = Tile::from_u16(1, 2, 1, &[0, 65535]).unwrap();
        assert_eq!(t.unit(0, 1, 0), 1.0);
        let t = Tile::from_u8(1, 2, 1, &[255, 51]).unwrap().into_owned();
        assert_eq!(t.unit(0, 0, 0), 1.0);
        assert!((t.unit(0, 1, 0) - 0.2).abs() < 1e-6);
    }
}
