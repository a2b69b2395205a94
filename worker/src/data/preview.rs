//! Preview grids: rows of [tile, view 1, view 2] so a person can see what the model sees.
//! Views are de-normalised with the augmenter's statistics; tiles with three or more bands
//! show bands 0..3 as RGB, others show band 0 as grey. 16-bit tiles (satellite data rarely
//! fills the 16-bit range, and would show black) are displayed stretched per band from
//! mean - 2.5 std to mean + 2.5 std; 8-bit tiles as they are.

use super::augment::crop::{resize_crop, CropBox};
use super::augment::{Augmenter, Scratch};
use super::dataset::Dataset;
use super::tile::{Pixels, Tile};
use crate::error::{Result, WorkerError};
use image::{Rgb, RgbImage};
use std::io::Write;
use std::path::Path;

const GAP: u32 = 2;
const TRIPLET_GAP: u32 = 10;
const BACKGROUND: Rgb<u8> = Rgb([24, 24, 28]);

/// The preview of `indices` at `epoch`: `per_row` triplets per row.
pub fn preview_image<D: Dataset + ?Sized>(
    ds: &D,
    aug: &Augmenter,
    epoch: u64,
    indices: &[u32],
    per_row: usize,
) -> Result<RgbImage> {
    let per_row = per_row.max(1);
    let s = aug.size() as u32;
    let rows = indices.len().div_ceil(per_row) as u32;
    let trip_w = 3 * s + 2 * GAP;
    let width = per_row as u32 * trip_w + (per_row as u32 - 1) * TRIPLET_GAP;
    let height = rows * s + rows.saturating_sub(1) * GAP;
    let mut img = RgbImage::from_pixel(width.max(1), height.max(1), BACKGROUND);
    let norm = aug.normalisation();
    let ident = (vec![0.0; aug.bands()], vec![1.0; aug.bands()]);
    let deep = match indices.first() {
        Some(&i) => ds.tile(i as usize)?.depth() == super::tile::PixelDepth::U16,
        None => false,
    };
    let shown = display_range(&norm, deep);
    let mut scratch = Scratch::default();
    let (mut v1, mut v2) = (vec![0.0; aug.view_len()], vec![0.0; aug.view_len()]);
    for (k, &i) in indices.iter().enumerate() {
        let tile = ds.tile(i as usize)?;
        aug.pair_into(&tile, epoch, i, &mut v1, &mut v2, &mut scratch)?;
        let x0 = (k % per_row) as u32 * (trip_w + TRIPLET_GAP);
        let y0 = (k / per_row) as u32 * (s + GAP);
        blit(&mut img, x0, y0, s, &fit(&tile, aug.size()), tile.bands(), &ident, &shown);
        blit(&mut img, x0 + s + GAP, y0, s, &v1, tile.bands(), &norm, &shown);
        blit(&mut img, x0 + 2 * (s + GAP), y0, s, &v2, tile.bands(), &norm, &shown);
    }
    Ok(img)
}

/// Write the preview as a PNG, atomically (a temporary file renamed into place, so a failed
/// write never leaves a truncated image where a good one was).
pub fn write_preview<D: Dataset + ?Sized>(
    path: &Path,
    ds: &D,
    aug: &Augmenter,
    epoch: u64,
    indices: &[u32],
    per_row: usize,
) -> Result<()> {
    let img = preview_image(ds, aug, epoch, indices, per_row)?;
    write_png(path, &img)
}

/// Save an RGB image as PNG through a temporary file in the same folder.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let name =
        path.file_name().ok_or_else(|| WorkerError::Data(format!("{}: not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)
            .map_err(|e| WorkerError::io(format!("creating {}", tmp.display()), e))?;
        let mut w = std::io::BufWriter::new(file);
        PngEncoder::new_with_quality(&mut w, CompressionType::Best, FilterType::Adaptive)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .map_err(|e| WorkerError::Data(format!("encoding {}: {e}", path.display())))?;
        w.flush().map_err(|e| WorkerError::io(format!("writing {}", tmp.display()), e))?;
        w.get_ref().sync_all().map_err(|e| WorkerError::io(format!("syncing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| WorkerError::io(format!("renaming into {}", path.display()), e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The whole tile resized to size x size (0..1 units), for the first column.
fn fit(tile: &Tile, size: usize) -> Vec<f32> {
    let mut out = vec![0.0; size * size * tile.bands()];
    let all = CropBox { top: 0, left: 0, height: tile.height(), width: tile.width() };
    let mut tmp = Vec::new();
    match tile.pixels() {
        Pixels::U8(p) => resize_crop(p, tile.width(), tile.bands(), all, size, &mut out, &mut tmp),
        Pixels::U16(p) => resize_crop(p, tile.width(), tile.bands(), all, size, &mut out, &mut tmp),
    }
    out
}

/// Per band, the 0..1 value shown black and the factor to white: the full range for 8-bit
/// tiles, mean +- 2.5 std for 16-bit ones.
fn display_range(norm: &(Vec<f32>, Vec<f32>), deep: bool) -> Vec<(f32, f32)> {
    let stretch = |(m, s): (&f32, &f32)| {
        let lo = (m - 2.5 * s).max(0.0);
        (lo, 1.0 / ((m + 2.5 * s).min(1.0) - lo).max(1e-6))
    };
    norm.0.iter().zip(&norm.1).map(|ms| if deep { stretch(ms) } else { (0.0, 1.0) }).collect()
}

/// Draw an s x s HWC f32 image at (x0, y0), undoing normalisation (v * std + mean) and mapping
/// each band through its display range.
#[allow(clippy::too_many_arguments)]
fn blit(
    img: &mut RgbImage,
    x0: u32,
    y0: u32,
    s: u32,
    v: &[f32],
    bands: usize,
    norm: &(Vec<f32>, Vec<f32>),
    shown: &[(f32, f32)],
) {
    let show = |p: &[f32], b: usize| {
        let u = p[b] * norm.1[b] + norm.0[b];
        (((u - shown[b].0) * shown[b].1).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    for y in 0..s {
        for x in 0..s {
            let p = &v[((y * s + x) as usize) * bands..][..bands];
            let rgb = if bands >= 3 { [show(p, 0), show(p, 1), show(p, 2)] } else { [show(p, 0); 3] };
            img.put_pixel(x0 + x, y0 + y, Rgb(rgb));
        }
    }
}
