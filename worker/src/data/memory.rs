//! `MemoryDataset`: tiles held in memory as owned buffers. For tests, small folders decoded at
//! start, and any source that already has its tiles decoded.

use super::dataset::{BandStats, Dataset};
use super::tile::Tile;
use crate::error::{Result, WorkerError};

/// Tiles and optional labels in memory. Tiles may differ in size but not in band count.
pub struct MemoryDataset {
    tiles: Vec<Tile<'static>>,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
    stats: BandStats,
}

impl MemoryDataset {
    /// Statistics are computed over every tile.
    pub fn new(tiles: Vec<Tile<'static>>, labels: Option<Vec<u32>>) -> Result<MemoryDataset> {
        let Some(first) = tiles.first() else {
            return Err(WorkerError::Data("dataset has no tiles".into()));
        };
        let bands = first.bands();
        if let Some((i, t)) = tiles.iter().enumerate().find(|(_, t)| t.bands() != bands) {
            return Err(WorkerError::Data(format!("tile {i} has {} bands, tile 0 has {bands}", t.bands())));
        }
        if let Some(l) = &labels {
            if l.len() != tiles.len() {
                return Err(WorkerError::Data(format!("{} labels for {} tiles", l.len(), tiles.len())));
            }
        }
        if u32::try_from(tiles.len()).is_err() {
            return Err(WorkerError::Data(format!("{} tiles: at most 2^32-1 are supported", tiles.len())));
        }
        let mut ds = MemoryDataset {
            tiles,
            labels,
            class_names: Vec::new(),
            stats: BandStats { mean: vec![0.0; bands], std: vec![1.0; bands] },
        };
        ds.stats = BandStats::compute(&ds, usize::MAX)?;
        Ok(ds)
    }

    pub fn with_class_names(mut self, names: Vec<String>) -> MemoryDataset {
        self.class_names = names;
        self
    }

    /// Replace the computed statistics (e.g. with ones stored beside a cache).
    pub fn with_stats(mut self, stats: BandStats) -> Result<MemoryDataset> {
        if stats.bands() != self.bands() {
            return Err(WorkerError::Data(format!(
                "statistics for {} bands given to a {}-band dataset",
                stats.bands(),
                self.bands()
            )));
        }
        self.stats = stats;
        Ok(self)
    }
}

impl Dataset for MemoryDataset {
    fn len(&self) -> usize {
        self.tiles.len()
    }

    fn bands(&self) -> usize {
        self.tiles[0].bands()
    }

    fn tile(&self, index: usize) -> Result<Tile<'_>> {
        self.tiles.get(index).map(Tile::borrowed).ok_or_else(|| {
            WorkerError::Data(format!("tile {index} out of range (dataset has {})", self.len()))
        })
    }

    fn label(&self, index: usize) -> Option<u32> {
        self.labels.as_ref().and_then(|l| l.get(index).copied())
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    fn stats(&self) -> &BandStats {
        &self.stats
    }
}
