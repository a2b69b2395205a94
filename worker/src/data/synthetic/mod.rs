//! The synthetic aerial dataset (`--data synthetic[:N[:SIZE]]`): procedural RGB u8 tiles of six
//! scene classes (residential, road, field, water, forest, solar), for trying the trainer with
//! zero setup and for testing it (the class label makes kNN evaluation meaningful).
//!
//! Tile `i` is drawn from its own ChaCha8 stream keyed by (seed, i) and its class is
//! `i % 6`, so a tile never depends on any other and the classes are exactly balanced.
//!
//! Storage: the tiles are rendered once, in parallel, into one contiguous buffer, and `tile(i)`
//! borrows from it. Rendering a tile costs about as much as augmenting it twice, so rendering
//! on demand would double the per-step data cost every epoch; one buffer also behaves like the
//! memory-mapped cache the real path uses, and the band statistics come from the exact bytes.
//! 2048 tiles of 96 px take 57 MB. Above `MATERIALISE_LIMIT` bytes the dataset renders on
//! demand instead (same bytes, tested), so a huge N never exhausts memory.

mod field;
mod forest;
pub mod noise;
mod render;
mod residential;
mod road;
mod solar;
mod trees;
mod water;

pub use render::{SceneClass, CLASS_NAMES, NUM_CLASSES};

use super::dataset::{BandStats, Dataset};
use super::rng::{stream, Domain};
use super::spec::SyntheticSpec;
use super::tile::Tile;
use crate::error::{Result, WorkerError};
use rayon::prelude::*;

/// Largest pixel buffer kept in memory; larger datasets render tiles on demand.
pub const MATERIALISE_LIMIT: usize = 1 << 30;
/// Tiles sampled for the band statistics when rendering on demand.
const LAZY_STATS_TILES: usize = 512;

pub struct SyntheticDataset {
    spec: SyntheticSpec,
    seed: u64,
    /// All tiles, HWC, back to back; `None` when rendering on demand.
    pixels: Option<Vec<u8>>,
    stats: BandStats,
}

impl SyntheticDataset {
    /// Build the dataset, rendering every tile now (on the current rayon pool) unless it
    /// would exceed `MATERIALISE_LIMIT`.
    pub fn new(spec: SyntheticSpec, seed: u64) -> Result<SyntheticDataset> {
        let bytes = spec.count.checked_mul(spec.size * spec.size * 3);
        let materialise = bytes.is_some_and(|b| b <= MATERIALISE_LIMIT);
        SyntheticDataset::build(spec, seed, materialise)
    }

    /// As `new`, choosing the storage explicitly (tests compare the two).
    pub fn build(spec: SyntheticSpec, seed: u64, materialise: bool) -> Result<SyntheticDataset> {
        if spec.count == 0 || u32::try_from(spec.count).is_err() || spec.size < 16 {
            return Err(WorkerError::Data(format!(
                "synthetic dataset needs 1..2^32 tiles of at least 16 px, got {} of {} px",
                spec.count, spec.size
            )));
        }
        let per = spec.size * spec.size * 3;
        let pixels = materialise.then(|| {
            let mut buf = vec![0u8; spec.count * per];
            buf.par_chunks_mut(per)
                .enumerate()
                .for_each(|(i, out)| out.copy_from_slice(&render_tile(spec.size, seed, i)));
            buf
        });
        let placeholder = BandStats { mean: vec![0.0; 3], std: vec![1.0; 3] };
        let mut ds = SyntheticDataset { spec, seed, pixels, stats: placeholder };
        let sample = if ds.pixels.is_some() { usize::MAX } else { LAZY_STATS_TILES };
        ds.stats = BandStats::compute(&ds, sample)?;
        Ok(ds)
    }

    pub fn spec(&self) -> SyntheticSpec {
        self.spec
    }

    pub fn is_materialised(&self) -> bool {
        self.pixels.is_some()
    }

    pub fn class_of(index: usize) -> SceneClass {
        SceneClass::ALL[index % NUM_CLASSES]
    }
}

/// Tile `index` of the dataset with this seed: size x size x 3, u8, HWC.
pub fn render_tile(size: usize, seed: u64, index: usize) -> Vec<u8> {
    let mut rng = stream(seed, Domain::Synthetic, 0, index as u64);
    render::render(size, SyntheticDataset::class_of(index), &mut rng)
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.spec.count
    }

    fn bands(&self) -> usize {
        3
    }

    fn tile(&self, index: usize) -> Result<Tile<'_>> {
        if index >= self.spec.count {
            return Err(WorkerError::Data(format!(
                "tile {index} out of range (dataset has {})",
                self.spec.count
            )));
        }
        let s = self.spec.size;
        match &self.pixels {
            Some(buf) => {
                let per = s * s * 3;
                Tile::from_u8(s, s, 3, &buf[index * per..(index + 1) * per])
            }
            None => Ok(Tile::from_u8(s, s, 3, &render_tile(s, self.seed, index))?.into_owned()),
        }
    }

    fn label(&self, index: usize) -> Option<u32> {
        (index < self.spec.count).then(|| SyntheticDataset::class_of(index) as u32)
    }

    fn class_names(&self) -> Vec<String> {
        CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    }

    fn stats(&self) -> &BandStats {
        &self.stats
    }
}
