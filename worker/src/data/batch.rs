//! `TwoViewBatch`: two augmented views of N tiles, NHWC f32, built in parallel.

use super::augment::{Augmenter, Scratch};
use super::dataset::Dataset;
use crate::error::{Result, WorkerError};
use rayon::prelude::*;
use rayon::ThreadPool;

/// Two normalised views of `n` tiles: `x1[i]` and `x2[i]` are views 0 and 1 of dataset tile
/// `indices[i]`, each `size x size x channels`, NHWC f32.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoViewBatch {
    pub n: usize,
    pub size: usize,
    pub channels: usize,
    pub x1: Vec<f32>,
    pub x2: Vec<f32>,
    pub indices: Vec<u32>,
}

impl TwoViewBatch {
    /// A zeroed batch (to be filled by `fill`).
    pub fn new(n: usize, size: usize, channels: usize) -> TwoViewBatch {
        let len = n * size * size * channels;
        TwoViewBatch { n, size, channels, x1: vec![0.0; len], x2: vec![0.0; len], indices: vec![0; n] }
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.size * self.size * self.channels
    }

    /// Indices as the MoCo step's `Views::idx` wants them.
    pub fn indices_i64(&self) -> Vec<i64> {
        self.indices.iter().map(|&i| i as i64).collect()
    }

    /// Build the views of `indices` for `epoch` on `pool`.
    pub fn build<D: Dataset + ?Sized>(
        pool: &ThreadPool,
        ds: &D,
        aug: &Augmenter,
        epoch: u64,
        indices: &[u32],
    ) -> Result<TwoViewBatch> {
        let mut b = TwoViewBatch::new(indices.len(), aug.size(), aug.bands());
        b.fill(pool, ds, aug, epoch, indices)?;
        Ok(b)
    }

    /// Refill this batch in place (reusing its buffers) with the views of `indices`. Each
    /// image is one rayon task; its result depends only on (seed, epoch, index, view), so the
    /// batch is identical for any pool size.
    pub fn fill<D: Dataset + ?Sized>(
        &mut self,
        pool: &ThreadPool,
        ds: &D,
        aug: &Augmenter,
        epoch: u64,
        indices: &[u32],
    ) -> Result<()> {
        if ds.bands() != aug.bands() {
            return Err(WorkerError::Data(format!(
                "dataset has {} bands, the augmenter's statistics {}",
                ds.bands(),
                aug.bands()
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= ds.len()) {
            return Err(WorkerError::Data(format!("index {bad} out of range (dataset has {})", ds.len())));
        }
        let (n, per) = (indices.len(), aug.view_len());
        self.n = n;
        self.size = aug.size();
        self.channels = aug.bands();
        self.indices.clear();
        self.indices.extend_from_slice(indices);
        self.x1.resize(n * per, 0.0);
        self.x2.resize(n * per, 0.0);
        if n == 0 {
            return Ok(());
        }
        pool.install(|| {
            self.x1
                .par_chunks_mut(per)
                .zip(self.x2.par_chunks_mut(per))
                .zip(indices.par_iter())
                .try_for_each_init(Scratch::default, |scratch, ((v1, v2), &i)| {
                    let tile = ds.tile(i as usize)?;
                    aug.pair_into(&tile, epoch, i, v1, v2, scratch)
                })
        })
    }
}
