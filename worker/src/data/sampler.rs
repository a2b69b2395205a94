//! The order in which a rank sees the dataset.
//!
//! Each epoch is a permutation of 0..len drawn from (seed, epoch). It is cut into global
//! batches of `batch * world` consecutive entries; the tail that does not fill a global batch
//! is dropped, so every rank runs the same number of batches and every enqueue writes a full
//! batch (MOCO.md: a short last batch breaks the queue). Rank r takes the r-th block of
//! `batch` entries of each global batch (contiguous blocks, strided by `batch * world`).
//! Concatenating the ranks' batches in rank order therefore gives exactly the batch a single
//! rank with batch `batch * world` would take, which is what makes world W x batch N equal
//! world 1 x batch W*N (DESIGN.md, contract 4).

use super::rng::{stream, Domain};
use crate::error::{Result, WorkerError};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Where training stands in the data: the next batch to run is `batch` of `epoch`.
/// Stored in checkpoints; resuming from it continues with exactly the batches that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct SamplerPos {
    pub epoch: u64,
    pub batch: u64,
}

/// One rank's view of the data order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    len: usize,
    batch: usize,
    rank: usize,
    world: usize,
    seed: u64,
}

impl Sampler {
    pub fn new(len: usize, batch: usize, rank: usize, world: usize, seed: u64) -> Result<Sampler> {
        if batch == 0 || world == 0 || rank >= world {
            return Err(WorkerError::Data(format!(
                "sampler needs batch >= 1 and rank < world, got batch {batch}, rank {rank}, world {world}"
            )));
        }
        if u32::try_from(len).is_err() {
            return Err(WorkerError::Data(format!("{len} tiles: at most 2^32-1 are supported")));
        }
        let global = batch * world;
        if len < global {
            return Err(WorkerError::Data(format!(
                "the dataset has {len} tiles but one step needs {global} (batch {batch} x {world} ranks); \
                 use a batch of at most {} or more tiles",
                len / world
            )));
        }
        Ok(Sampler { len, batch, rank, world, seed })
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Batches each rank runs per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        (self.len / (self.batch * self.world)) as u64
    }

    /// Tiles left out of each epoch (a different random subset every epoch).
    pub fn dropped_per_epoch(&self) -> usize {
        self.len % (self.batch * self.world)
    }

    /// The epoch's permutation of 0..len (Fisher-Yates on the (seed, epoch) stream).
    pub fn permutation(&self, epoch: u64) -> Vec<u32> {
        let mut rng = stream(self.seed, Domain::Sampler, epoch, 0);
        let mut p: Vec<u32> = (0..self.len as u32).collect();
        for i in (1..p.len()).rev() {
            let j = rng.gen_range(0..=i);
            p.swap(i, j);
        }
        p
    }

    /// This rank's batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        EpochBatches { sampler: *self, epoch, perm: self.permutation(epoch) }
    }

    /// The position after `pos` (rolling over to the next epoch).
    pub fn next_pos(&self, pos: SamplerPos) -> SamplerPos {
        if pos.batch + 1 >= self.batches_per_epoch() {
            SamplerPos { epoch: pos.epoch + 1, batch: 0 }
        } else {
            SamplerPos { epoch: pos.epoch, batch: pos.batch + 1 }
        }
    }

    /// An endless iterator of (position, this rank's indices) starting at `pos`. A position
    /// at the end of an epoch (batch == batches_per_epoch) means the start of the next one.
    pub fn iter_from(&self, pos: SamplerPos) -> Result<SamplerIter> {
        let n = self.batches_per_epoch();
        let pos = match pos.batch {
            b if b < n => pos,
            b if b == n => SamplerPos { epoch: pos.epoch + 1, batch: 0 },
            b => {
                return Err(WorkerError::Data(format!(
                    "resume position batch {b} of epoch {} is past the epoch's {n} batches \
                     (was the checkpoint made with another batch size, world size or dataset?)",
                    pos.epoch
                )))
            }
        };
        Ok(SamplerIter { current: self.epoch(pos.epoch), pos })
    }
}

/// One rank's batches of one epoch.
#[derive(Debug, Clone)]
pub struct EpochBatches {
    sampler: Sampler,
    epoch: u64,
    perm: Vec<u32>,
}

impl EpochBatches {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn len(&self) -> usize {
        self.sampler.batches_per_epoch() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dataset indices of this rank's batch `b`.
    pub fn batch(&self, b: usize) -> Option<&[u32]> {
        let s = &self.sampler;
        (b < self.len()).then(|| {
            let start = b * s.batch * s.world + s.rank * s.batch;
            &self.perm[start..start + s.batch]
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        (0..self.len()).filter_map(|b| self.batch(b))
    }
}

/// See `Sampler::iter_from`.
pub struct SamplerIter {
    current: EpochBatches,
    pos: SamplerPos,
}

impl Iterator for SamplerIter {
    type Item = (SamplerPos, Vec<u32>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.current.epoch != self.pos.epoch {
            self.current = self.current.sampler.epoch(self.pos.epoch);
        }
        let pos = self.pos;
        let b = self.current.batch(pos.batch as usize)?.to_vec();
        self.pos = self.current.sampler.next_pos(pos);
        Some((pos, b))
    }
}
