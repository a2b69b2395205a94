//! The `Dataset` trait every tile source implements (synthetic, in-memory, folder, cache), and
//! the per-band statistics used for normalisation.

use super::tile::{Pixels, Sample, Tile};
use crate::error::{Result, WorkerError};
use rayon::prelude::*;

/// A finite, indexable set of tiles with the same number of bands.
///
/// Implementations must be cheap to call from many threads at once (`tile` is called once per
/// image per step from the batch builder's pool) and deterministic: `tile(i)` returns the same
/// pixels every time.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bands (channels) of every tile.
    fn bands(&self) -> usize;

    /// Tile `index` (< len). Borrowed where the dataset holds the pixels in memory, owned where
    /// it decodes on demand. An error names the index and, where there is one, the file.
    fn tile(&self, index: usize) -> Result<Tile<'_>>;

    /// Class of tile `index` for evaluation (kNN, linear probe); `None` when unlabeled.
    fn label(&self, index: usize) -> Option<u32>;

    /// Names of the classes, indexed by label; empty when unlabeled.
    fn class_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Per-band mean and standard deviation in the 0..1 range of the pixel type.
    fn stats(&self) -> &BandStats;
}

/// Smallest standard deviation used for normalisation: a constant band (std 0) would otherwise
/// divide by zero; with the floor it normalises to ~0 and jitter cannot blow it up.
pub const MIN_STD: f32 = 1.0 / 255.0;

/// Per-band mean and standard deviation, in 0..1 units of the pixel type.
#[derive(Debug, Clone, PartialEq)]
pub struct BandStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl BandStats {
    /// Checked constructor: equal non-zero lengths, finite values; std is floored at `MIN_STD`.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<BandStats> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(WorkerError::Data(format!(
                "band statistics need one mean and one std per band, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if mean.iter().chain(&std).any(|v| !v.is_finite()) || std.iter().any(|&s| s < 0.0) {
            return Err(WorkerError::Data(format!("band statistics not finite/positive: {mean:?} {std:?}")));
        }
        let std = std.into_iter().map(|s| s.max(MIN_STD)).collect();
        Ok(BandStats { mean, std })
    }

    pub fn bands(&self) -> usize {
        self.mean.len()
    }

    /// Statistics over up to `max_tiles` tiles (evenly spaced indices when the dataset is
    /// larger), over every pixel of each. Per-tile sums are computed in parallel in f64 and
    /// added in index order, so the result does not depend on the thread count.
    pub fn compute<D: Dataset + ?Sized>(ds: &D, max_tiles: usize) -> Result<BandStats> {
        let n = ds.len();
        if n == 0 {
            return Err(WorkerError::Data("cannot compute band statistics of an empty dataset".into()));
        }
        let take = n.min(max_tiles.max(1));
        let bands = ds.bands();
        let per_tile: Vec<(Vec<f64>, Vec<f64>, u64)> = (0..take)
            .into_par_iter()
            .map(|k| {
                let i = (k as u128 * n as u128 / take as u128) as usize;
                let tile = ds.tile(i)?;
                if tile.bands() != bands {
                    return Err(WorkerError::Data(format!(
                        "tile {i} has {} bands, the dataset {bands}",
                        tile.bands()
                    )));
                }
                let (s, q) = match tile.pixels() {
                    Pixels::U8(p) => sums(p, bands),
                    Pixels::U16(p) => sums(p, bands),
                };
                Ok((s, q, (tile.height() * tile.width()) as u64))
            })
            .collect::<Result<_>>()?;
        let mut sum = vec![0f64; bands];
        let mut sq = vec![0f64; bands];
        let mut count = 0u64;
        for (s, q, c) in per_tile {
            for b in 0..bands {
                sum[b] += s[b];
                sq[b] += q[b];
            }
            count += c;
        }
        let c = count as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / c) as f32).collect();
        let std = (0..bands).map(|b| ((sq[b] / c - (sum[b] / c).powi(2)).max(0.0)).sqrt() as f32).collect();
        BandStats::new(mean, std)
    }
}

fn sums<T: Sample>(px: &[T], bands: usize) -> (Vec<f64>, Vec<f64>) {
    let mut s = vec![0f64; bands];
    let mut q = vec![0f64; bands];
    for pixel in px.chunks_exact(bands) {
        for (b, &v) in pixel.iter().enumerate() {
            let v = v.to_unit() as f64;
            s[b] += v;
            q[b] += v * v;
        }
    }
    (s, q)
}
