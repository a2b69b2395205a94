//! The loader: a producer thread that builds two-view batches ahead of training on its own
//! rayon pool and hands them over through a bounded channel, so augmentation overlaps with the
//! step and memory stays bounded (`depth` batches in flight).
//!
//! Every batch carries its sampler position; the loader reports the position of the next batch
//! the trainer will consume, which is what a checkpoint stores to resume the data order.

use super::run::{MicroBatches, OwnedViews};
use crate::data::augment::Augmenter;
use crate::data::batch::TwoViewBatch;
use crate::data::dataset::Dataset;
use crate::data::sampler::{Sampler, SamplerPos};
use crate::error::{Result, WorkerError};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Loader {
    rx: Receiver<Result<(SamplerPos, TwoViewBatch)>>,
    /// Position of the next batch `next_batch` returns.
    next_pos: SamplerPos,
    sampler: Sampler,
    _producer: JoinHandle<()>,
}

impl Loader {
    /// Start producing from `start` with `threads` augmentation threads and `depth` batches of
    /// look-ahead.
    pub fn start(
        ds: Arc<dyn Dataset>,
        aug: Arc<Augmenter>,
        sampler: Sampler,
        start: SamplerPos,
        threads: usize,
        depth: usize,
    ) -> Result<Loader> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("augment-{i}"))
            .build()
            .map_err(|e| WorkerError::Data(format!("cannot start the augmentation threads: {e}")))?;
        let mut iter = sampler.iter_from(start)?;
        let (tx, rx) = sync_channel(depth.max(1));
        let producer = std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || loop {
                let Some((pos, idx)) = iter.next() else { return };
                // The epoch seeds the augmentations, so a resumed run redraws the same views.
                let item = TwoViewBatch::build(&pool, &*ds, &aug, pos.epoch, &idx).map(|b| (pos, b));
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return; // the trainer has gone, or the error has been handed over
                }
            })
            .map_err(|e| WorkerError::io("starting the loader thread", e))?;
        Ok(Loader { rx, next_pos: start, sampler, _producer: producer })
    }

    /// Position of the next batch to be consumed (for checkpoints).
    pub fn position(&self) -> SamplerPos {
        self.next_pos
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }
}

impl MicroBatches for Loader {
    fn next_batch(&mut self) -> Result<OwnedViews> {
        let (pos, b) = self
            .rx
            .recv()
            .map_err(|_| WorkerError::Data("the loader thread stopped unexpectedly".into()))??;
        debug_assert_eq!(pos, self.next_pos, "batches arrive in order");
        self.next_pos = self.sampler.next_pos(pos);
        let idx = b.indices_i64();
        Ok(OwnedViews { x1: b.x1, x2: b.x2, idx, n: b.n, size: b.size, channels: b.channels })
    }

    fn position(&self) -> Option<SamplerPos> {
        Some(self.next_pos)
    }
}
