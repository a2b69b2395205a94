//! Helpers of the image-folder tests: temporary folders and real image files written with the
//! image and tiff crates (and one hand-written planar TIFF, which the tiff encoder cannot make).
#![allow(dead_code)]

use image::{ImageBuffer, Luma, Rgb};
use moco_worker::data::folder::FolderOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use tiff::encoder::{colortype, TiffEncoder};
use tiff::tags::ExtraSamples;

/// A folder under the system temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("moco-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `rel` inside, parent folders created.
    pub fn file(&self, rel: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for tests: quiet, a given crop and stored size, the cache inside the folder.
pub fn opts(crop: usize, stored: usize) -> FolderOptions {
    let mut o = FolderOptions::new(crop);
    o.stored_size = stored;
    o.verbose = false;
    o
}

/// The value of band `b` at (x, y) in the test pattern: a different ramp per band, so a band
/// mix-up or a transposition shows.
pub fn pattern(x: u32, y: u32, b: u32) -> u8 {
    ((x * 3 + y * 5 + b * 40) % 256) as u8
}

pub fn pattern16(x: u32, y: u32, b: u32) -> u16 {
    (x * 300 + y * 7 + b * 1000) as u16
}

pub fn png_rgb(path: &Path, w: u32, h: u32) {
    ImageBuffer::from_fn(w, h, |x, y| Rgb([pattern(x, y, 0), pattern(x, y, 1), pattern(x, y, 2)]))
        .save(path)
        .unwrap();
}

pub fn png_gray(path: &Path, w: u32, h: u32) {
    ImageBuffer::from_fn(w, h, |x, y| Luma([pattern(x, y, 0)])).save(path).unwrap();
}

pub fn png_rgb16(path: &Path, w: u32, h: u32) {
    ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
        Rgb([pattern16(x, y, 0), pattern16(x, y, 1), pattern16(x, y, 2)])
    })
    .save(path)
    .unwrap();
}

pub fn jpeg_rgb(path: &Path, w: u32, h: u32) {
    ImageBuffer::from_fn(w, h, |x, y| Rgb([pattern(x, y, 0), pattern(x, y, 1), pattern(x, y, 2)]))
        .save(path)
        .unwrap();
}

/// A flat-colour JPEG (so lossy compression keeps the values within a few levels).
pub fn jpeg_flat(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    ImageBuffer::from_pixel(w, h, Rgb(rgb)).save(path).unwrap();
}

fn interleaved<T: Copy>(w: u32, h: u32, bands: u32, f: impl Fn(u32, u32, u32) -> T) -> Vec<T> {
    let mut v = Vec::with_capacity((w * h * bands) as usize);
    for y in 0..h {
        for x in 0..w {
            for b in 0..bands {
                v.push(f(x, y, b));
            }
        }
    }
    v
}

pub fn tiff_rgb8(path: &Path, w: u32, h: u32) {
    let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    enc.write_image::<colortype::RGB8>(w, h, &interleaved(w, h, 3, pattern)).unwrap();
}

pub fn tiff_gray16(path: &Path, w: u32, h: u32) {
    let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    enc.write_image::<colortype::Gray16>(w, h, &interleaved(w, h, 1, pattern16)).unwrap();
}

/// `bands` 8-bit bands as grey + unspecified extra samples (how GDAL writes multispectral).
pub fn tiff_multi8(path: &Path, w: u32, h: u32, bands: u32) {
    let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut img = enc.new_image::<colortype::Gray8>(w, h).unwrap();
    img.extra_samples(&vec![ExtraSamples::Unspecified; bands as usize - 1]).unwrap();
    img.write_data(&interleaved(w, h, bands, pattern)).unwrap();
}

/// `bands` 16-bit bands as grey + unspecified extra samples.
pub fn tiff_multi16(path: &Path, w: u32, h: u32, bands: u32) {
    let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut img = enc.new_image::<colortype::Gray16>(w, h).unwrap();
    img.extra_samples(&vec![ExtraSamples::Unspecified; bands as usize - 1]).unwrap();
    img.write_data(&interleaved(w, h, bands, pattern16)).unwrap();
}

/// RGB + near-infrared tagged as RGB with one unspecified extra sample (the decoder alone
/// would drop the fourth band).
pub fn tiff_rgbn8(path: &Path, w: u32, h: u32) {
    let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut img = enc.new_image::<colortype::RGB8>(w, h).unwrap();
    img.extra_samples(&[ExtraSamples::Unspecified]).unwrap();
    img.write_data(&interleaved(w, h, 4, pattern)).unwrap();
}

/// An uncompressed, planar (band after band) 8-bit TIFF written by hand: GDAL's
/// INTERLEAVE=BAND layout, which the tiff encoder does not produce.
pub fn tiff_planar8(path: &Path, w: u32, h: u32, bands: u32) {
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    let plane = w * h;
    let n_entries: u16 = 10;
    let ifd_off = 8u32;
    let bps_off = ifd_off + 2 + 12 * n_entries as u32 + 4; // BitsPerSample array
    let offs_off = bps_off + 2 * bands; // StripOffsets array
    let counts_off = offs_off + 4 * bands; // StripByteCounts array
    let data_off = counts_off + 4 * bands;
    // (tag, type, count, value or offset), in ascending tag order as TIFF requires.
    let entries = [
        (256, LONG, 1, w),              // ImageWidth
        (257, LONG, 1, h),              // ImageLength
        (258, SHORT, bands, bps_off),   // BitsPerSample
        (259, SHORT, 1, 1),             // Compression: none
        (262, SHORT, 1, 1),             // Photometric: BlackIsZero
        (273, LONG, bands, offs_off),   // StripOffsets, one strip per band
        (277, SHORT, 1, bands),         // SamplesPerPixel
        (278, LONG, 1, h),              // RowsPerStrip
        (279, LONG, bands, counts_off), // StripByteCounts
        (284, SHORT, 1, 2),             // PlanarConfiguration: planar
    ];
    let mut f = Vec::new();
    f.extend_from_slice(b"II*\0");
    f.extend_from_slice(&ifd_off.to_le_bytes());
    f.extend_from_slice(&n_entries.to_le_bytes());
    for (tag, typ, count, value) in entries {
        f.extend_from_slice(&(tag as u16).to_le_bytes());
        f.extend_from_slice(&typ.to_le_bytes());
        f.extend_from_slice(&count.to_le_bytes());
        // A SHORT stored inline sits in the first two bytes of the field (little-endian).
        f.extend_from_slice(&value.to_le_bytes());
    }
    f.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(f.len() as u32, bps_off);
    for _ in 0..bands {
        f.extend_from_slice(&8u16.to_le_bytes());
    }
    for b in 0..bands {
        f.extend_from_slice(&(data_off + b * plane).to_le_bytes());
    }
    for _ in 0..bands {
        f.extend_from_slice(&plane.to_le_bytes());
    }
    for b in 0..bands {
        for y in 0..h {
            for x in 0..w {
                f.push(pattern(x, y, b));
            }
        }
    }
    std::fs::write(path, f).unwrap();
}

/// Write raw bytes.
pub fn raw(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path).unwrap().write_all(bytes).unwrap();
}

/// Sample (y, x, band) of tile `i` of a dataset as an integer of its depth.
pub fn sample(ds: &dyn moco_worker::data::Dataset, i: usize, y: usize, x: usize, b: usize) -> u32 {
    let t = ds.tile(i).unwrap();
    let k = (y * t.width() + x) * t.bands() + b;
    match t.pixels() {
        moco_worker::data::Pixels::U8(p) => p[k] as u32,
        moco_worker::data::Pixels::U16(p) => p[k] as u32,
    }
}
