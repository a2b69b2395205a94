//! The rank's shard of the global negative queue (DESIGN.md contract 5).
//!
//! The global queue holds K unit keys; rank r owns rows [r*K/W, (r+1)*K/W) of it at init and
//! afterwards enqueues its own 2N keys per micro-batch into its own shard, so no rank ever holds
//! the whole queue. Every row remembers the dataset index of the image its key came from, so a
//! query's own image can be masked out of its negatives. The write never wraps inside one
//! enqueue: rows % keys-per-enqueue == 0 is required (config validation checks it first).

use crate::error::{Result, WorkerError};
use crate::model::views::full;
use moco_kernels::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Dataset index of a row that holds no image's key yet (initial random keys).
pub const NO_IMAGE: i64 = -1;

pub struct QueueShard<B: Backend> {
    /// `[rows, dim]` unit keys.
    pub keys: B::Buf,
    /// Dataset index per row.
    pub idx: Vec<i64>,
    /// Next row to write.
    pub ptr: usize,
    pub rows: usize,
    pub dim: usize,
}

impl<B: Backend> QueueShard<B> {
    /// The rank's shard of a global queue of `k` random-normal, L2-normalised keys generated
    /// from `seed` (identical global contents whatever the world size).
    pub fn init(be: &B, k: usize, dim: usize, rank: usize, world: usize, seed: u64) -> Result<Self> {
        if world == 0 || !k.is_multiple_of(world) {
            return Err(WorkerError::Numeric(format!("queue of {k} rows does not split over {world} ranks")));
        }
        let rows = k / world;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5155_4555_4555_4555);
        let mut host = vec![0.0f32; rows * dim];
        // Draw the global queue row by row and keep this rank's rows: the values of a row do not
        // depend on the world size.
        for row in 0..k {
            let mut v: Vec<f32> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            if row / rows == rank {
                let r = row - rank * rows;
                host[r * dim..(r + 1) * dim].copy_from_slice(&v);
            }
        }
        Ok(QueueShard { keys: be.from_host(&host)?, idx: vec![NO_IMAGE; rows], ptr: 0, rows, dim })
    }

    /// Write `keys` (`[b, dim]`, b = idx.len()) at the pointer and advance it (mod rows).
    pub fn enqueue(&mut self, be: &B, keys: &B::Buf, idx: &[i64]) -> Result<()> {
        let b = idx.len();
        if b == 0 || !self.rows.is_multiple_of(b) || B::buf_len(keys) != b * self.dim {
            return Err(WorkerError::Numeric(format!(
                "enqueue of {b} keys into a shard of {} rows: the shard size must be a multiple of the keys per enqueue",
                self.rows
            )));
        }
        let start = self.ptr * self.dim;
        be.copy(full::<B>(keys), B::view_mut(&mut self.keys, start..start + b * self.dim));
        self.idx[self.ptr..self.ptr + b].copy_from_slice(idx);
        self.ptr = (self.ptr + b) % self.rows;
        Ok(())
    }

    /// Cells (query row, shard row) whose shard row holds a key of the query's own image.
    pub fn own_image_cells(&self, query_idx: &[i64]) -> Vec<(u32, u32)> {
        let mut rows_of: std::collections::HashMap<i64, Vec<u32>> = std::collections::HashMap::new();
        for (r, &i) in self.idx.iter().enumerate() {
            if i != NO_IMAGE {
                rows_of.entry(i).or_default().push(r as u32);
            }
        }
        let mut cells = Vec::new();
        for (q, i) in query_idx.iter().enumerate() {
            if let Some(rows) = rows_of.get(i) {
                cells.extend(rows.iter().map(|&r| (q as u32, r)));
            }
        }
        cells
    }
}
