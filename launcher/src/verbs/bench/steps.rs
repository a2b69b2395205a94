//! The measured part of `launcher bench`: where the batches come from, the timed optimiser
//! steps, and the loader's own rate.

use crate::error::Result;
use moco_kernels::Backend;
use moco_proto::TrainConfig;
use moco_worker::data::Dataset;
use moco_worker::moco::comm::Comm;
use moco_worker::moco::Moco;
use moco_worker::trace::Guard;
use moco_worker::train::{Loader, MicroBatches, OwnedViews, Schedule};
use std::sync::Arc;
use std::time::Instant;

/// Where the timed steps' micro-batches come from.
pub enum Feed {
    /// The real loader, augmenting while the step runs (what training does).
    Loader { loader: Loader, current: Option<OwnedViews> },
    /// A few batches made by the loader before timing, reused in turn: the step alone, as the
    /// PyTorch reference measures it (it reuses a fixed pool of input tensors).
    Pool { batches: Vec<OwnedViews>, next: usize },
}

impl Feed {
    pub fn pool(mut loader: Loader, count: usize) -> Result<Feed> {
        let batches =
            (0..count.max(1)).map(|_| loader.next_batch()).collect::<moco_worker::Result<Vec<_>>>()?;
        Ok(Feed::Pool { batches, next: 0 })
    }

    fn next(&mut self) -> Result<&OwnedViews> {
        match self {
            Feed::Loader { loader, current } => Ok(current.insert(loader.next_batch()?)),
            Feed::Pool { batches, next } => {
                let i = *next % batches.len();
                *next += 1;
                Ok(&batches[i])
            }
        }
    }
}

/// What the timed steps measured.
pub struct StepTimes {
    /// Wall time of each timed optimiser step (data wait included), seconds.
    pub step_s: Vec<f64>,
    pub last_loss: f32,
    pub skipped: u64,
}

/// `warmup` untimed then `steps` timed optimiser steps, each ended by a device synchronize
/// (so a step's time is the device's, as the PyTorch reference's is). Phase totals are reset
/// after the warm-up; `after_warmup` runs there too (e.g. to forget the memory peak of start-up).
#[allow(clippy::too_many_arguments)]
pub fn timed_steps<B: Backend>(
    moco: &mut Moco<B>,
    comm: &dyn Comm,
    feed: &mut Feed,
    sched: &Schedule,
    warmup: u64,
    steps: u64,
    guard: &Guard,
    after_warmup: &mut dyn FnMut(&Moco<B>),
) -> Result<StepTimes> {
    let mut out = StepTimes { step_s: Vec::with_capacity(steps as usize), last_loss: f32::NAN, skipped: 0 };
    for i in 0..warmup + steps {
        if i == warmup {
            guard.reset_totals();
            after_warmup(moco);
        }
        let t0 = Instant::now();
        let step = moco.steps;
        let lr = sched.lr(step) as f32;
        let m = sched.momentum(step) as f32;
        let mut loss = 0.0f32;
        let effective = moco.cfg.effective_negatives && sched.accumulation > 1;
        if effective {
            // Effective-batch negatives: the step takes its micro-batches at once, as training
            // does (moco::step_keys); the loss comes with the step's one read below.
            let span = tracing::info_span!("data").entered();
            let batches =
                (0..sched.accumulation).map(|_| feed.next().cloned()).collect::<Result<Vec<_>>>()?;
            drop(span);
            let views: Vec<_> = batches.iter().map(|b| b.views()).collect();
            moco.queue_step(comm, &views, m)?;
        } else {
            for _ in 0..sched.accumulation {
                let span = tracing::info_span!("data").entered();
                let batch = feed.next()?;
                drop(span);
                loss += moco.micro_batch(comm, &batch.views(), m)?.loss;
            }
        }
        let stepped = moco.optimizer_step(comm, lr)?;
        if effective {
            loss = stepped.loss_sum;
        }
        let applied = stepped.applied;
        moco.be.sync().map_err(moco_worker::WorkerError::from)?;
        let dt = t0.elapsed().as_secs_f64();
        guard.resolve();
        if i >= warmup {
            out.step_s.push(dt);
            out.last_loss = loss / sched.accumulation as f32;
            out.skipped += u64::from(!applied);
        }
    }
    Ok(out)
}

/// The loader alone: two-view pairs per second over `batches` batches (after a first one that
/// pays for starting up), with `threads` augmentation threads.
pub fn loader_pairs_per_s(
    ds: Arc<dyn Dataset>,
    cfg: &TrainConfig,
    threads: usize,
    batches: usize,
) -> Result<f64> {
    let mut loader = moco_worker::session::data::loader(ds, cfg, 0, 1, threads, Default::default())?;
    loader.next_batch()?;
    let t = Instant::now();
    let mut pairs = 0usize;
    for _ in 0..batches.max(1) {
        pairs += loader.next_batch()?.n;
    }
    Ok(pairs as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

/// The median of `v` (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
