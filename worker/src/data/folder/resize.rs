//! A decoded image to a stored tile: the chosen bands, the centre square of the shorter side
//! resized to `size x size` with the augmentations' antialiased filter, samples back in the
//! image's own depth (little-endian bytes, the cache's layout).
//!
//! Why a centre square: the network sees square crops and tiles are almost always square; a
//! fixed square keeps one stride per tile (no per-tile offsets) and the random-resized crop then
//! draws from the full stored tile. The edges of a non-square image are lost, which the report
//! shows through the native sizes.

use crate::data::augment::crop::{resize_crop, CropBox};
use crate::data::tile::{Pixels, Sample, Tile};

/// Append the stored form of `tile` (bands `bands`, `size x size`) to `out`.
pub fn store_tile(tile: &Tile, bands: &[usize], size: usize, out: &mut Vec<u8>) {
    match tile.pixels() {
        Pixels::U8(p) => store(p, tile, bands, size, out, out_u8),
        Pixels::U16(p) => store(p, tile, bands, size, out, out_u16),
    }
}

fn out_u8(v: f32) -> [u8; 1] {
    [(v * 255.0).round().clamp(0.0, 255.0) as u8]
}

fn out_u16(v: f32) -> [u8; 2] {
    ((v * 65535.0).round().clamp(0.0, 65535.0) as u16).to_le_bytes()
}

fn store<T: Sample + ToLe, const N: usize>(
    px: &[T],
    tile: &Tile,
    bands: &[usize],
    size: usize,
    out: &mut Vec<u8>,
    quantise: impl Fn(f32) -> [u8; N],
) {
    let (h, w, nb) = (tile.height(), tile.width(), tile.bands());
    let all: Vec<usize> = (0..nb).collect();
    let selected: Vec<T>;
    let src = if bands == all.as_slice() {
        px
    } else {
        selected = px.chunks_exact(nb).flat_map(|p| bands.iter().map(move |&b| p[b])).collect();
        &selected
    };
    let k = bands.len();
    if h == size && w == size {
        // Already the stored size: copy exactly.
        out.extend(src.iter().flat_map(|s| s.to_le()));
        return;
    }
    let side = h.min(w);
    let crop = CropBox { top: (h - side) / 2, left: (w - side) / 2, height: side, width: side };
    let mut f = vec![0.0f32; size * size * k];
    resize_crop(src, w, k, crop, size, &mut f, &mut Vec::new());
    out.extend(f.iter().flat_map(|&v| quantise(v)));
}

/// Little-endian bytes of a sample, for the exact-copy path.
trait ToLe {
    fn to_le(self) -> impl Iterator<Item = u8>;
}

impl ToLe for u8 {
    fn to_le(self) -> impl Iterator<Item = u8> {
        std::iter::once(self)
    }
}

impl ToLe for u16 {
    fn to_le(self) -> impl Iterator<Item = u8> {
        self.to_le_bytes().into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_is_copied_and_bands_are_picked() {
        let t = Tile::from_u16(2, 2, 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
        let mut out = Vec::new();
        store_tile(&t, &[2, 0], 2, &mut out);
        let got: Vec<u16> = out.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(got, vec![3, 1, 6, 4, 9, 7, 12, 10]);
    }

    #[test]
    fn centre_square_of_a_wide_image() {
        // 2 x 6 image: columns 0,1 are 0, columns 2,3 are 200, columns 4,5 are 0; the centre 2x2
        // square is all 200.
        let px: Vec<u8> = (0..12).map(|i| if (2..4).contains(&(i % 6)) { 200 } else { 0 }).collect();
        let t = Tile::from_u8(2, 6, 1, &px).unwrap();
        let mut out = Vec::new();
        store_tile(&t, &[0], 1, &mut out);
        assert_eq!(out, vec![200]);
    }
}
