//! The training loop of one rank: schedules per iteration, accumulation, metrics, stopping.

use super::metrics::{peak_rss_bytes, StepMetrics};
use crate::data::SamplerPos;
use crate::error::Result;
use crate::moco::comm::Comm;
use crate::moco::schedule::{lr_at, momentum_at};
use crate::moco::{Moco, Views};
use moco_kernels::Backend;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A two-view micro-batch owned by the loop.
#[derive(Clone)]
pub struct OwnedViews {
    pub x1: Vec<f32>,
    pub x2: Vec<f32>,
    pub idx: Vec<i64>,
    pub n: usize,
    pub size: usize,
    pub channels: usize,
}

impl OwnedViews {
    pub fn views(&self) -> Views<'_> {
        Views {
            x1: &self.x1,
            x2: &self.x2,
            idx: &self.idx,
            n: self.n,
            size: self.size,
            channels: self.channels,
        }
    }
}

/// Where micro-batches come from (the loader: sampler + augmentations).
pub trait MicroBatches {
    fn next_batch(&mut self) -> Result<OwnedViews>;
    /// Where the next batch sits in the data order (what a checkpoint stores), when known.
    fn position(&self) -> Option<SamplerPos> {
        None
    }
}

/// The per-iteration schedules (MOCO.md, "Optimisation").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Peak lr = base_lr * effective batch / 256.
    pub peak_lr: f64,
    pub warmup_epochs: f64,
    pub epochs: f64,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: u64,
    pub accumulation: usize,
    pub m0: f64,
    pub m_cosine: bool,
    /// Images per optimiser step over all ranks.
    pub images_per_step: u64,
}

impl Schedule {
    /// Fractional epoch at the start of optimiser step `step` (0-based).
    pub fn epoch_at(&self, step: u64) -> f64 {
        step as f64 / self.steps_per_epoch.max(1) as f64
    }
    pub fn lr(&self, step: u64) -> f64 {
        lr_at(self.peak_lr, self.epoch_at(step), self.warmup_epochs, self.epochs)
    }
    pub fn momentum(&self, step: u64) -> f64 {
        momentum_at(self.m0, self.epoch_at(step), self.epochs, self.m_cosine)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub steps: u64,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Mean loss over the last 10% of steps (at least one).
    pub tail_loss: f32,
    pub images_per_sec: f32,
    pub elapsed_s: f64,
    pub skipped_steps: u64,
    /// True when a stop was requested (signal) before the planned end.
    pub interrupted: bool,
}

/// What `train` calls after every step: the metrics, the model, the data source.
pub type OnStep<'a, B> = dyn FnMut(&StepMetrics, &Moco<B>, &dyn MicroBatches) -> Result<()> + 'a;

/// Train from `moco.steps` until `end_step` (exclusive) or until `stop` is set; `on_step` sees
/// every step's metrics (terminal, metrics.jsonl, the launcher) with the model and the data
/// source after the step (periodic checkpoints and evaluations; every rank calls it at the same
/// step, so it may use collectives).
pub fn train<B: Backend>(
    moco: &mut Moco<B>,
    comm: &dyn Comm,
    data: &mut dyn MicroBatches,
    sched: &Schedule,
    end_step: u64,
    stop: &AtomicBool,
    on_step: &mut OnStep<'_, B>,
) -> Result<Summary> {
    let start = Instant::now();
    let first_step = moco.steps;
    let mut losses = Vec::new();
    let mut skipped = 0;
    let mut interrupted = false;
    while moco.steps < end_step {
        let t0 = Instant::now();
        let step = moco.steps;
        let lr = sched.lr(step) as f32;
        let m = sched.momentum(step) as f32;
        if moco.cfg.effective_negatives && sched.accumulation > 1 {
            // Effective-batch negatives: the step's keys come first, so it takes all of its
            // micro-batches at once (held in host memory; see moco::step_keys).
            let batches = {
                let _s = tracing::info_span!("data").entered();
                (0..sched.accumulation).map(|_| data.next_batch()).collect::<Result<Vec<_>>>()?
            };
            let views: Vec<_> = batches.iter().map(|b| b.views()).collect();
            moco.queue_step(comm, &views, m)?;
        } else {
            for _ in 0..sched.accumulation {
                let batch = {
                    let _s = tracing::info_span!("data").entered();
                    data.next_batch()?
                };
                moco.queue_micro_batch(comm, &batch.views(), m)?;
            }
        }
        // The step's one host wait is inside: it reads the verdict and the losses after all of
        // the step's work, so an asynchronous device (CUDA) reports the errors of ops queued
        // during the step there, and the step time below covers the work, not its queueing.
        let out = moco.optimizer_step(comm, lr)?;
        let loss = out.loss_sum;
        // One small all-reduce carries the mean loss and the stop votes: every rank stops after
        // the same step (a rank that stopped alone would leave the others waiting forever).
        let wants_stop = stop.load(Ordering::SeqCst);
        let mut shared = [loss / sched.accumulation as f32, if wants_stop { 1.0 } else { 0.0 }];
        comm.all_reduce_sum(&mut shared)?;
        let loss = shared[0] / comm.world() as f32;
        let group_stops = shared[1] > 0.0;
        if !out.applied {
            skipped += 1;
        }
        losses.push(loss);
        let dt = t0.elapsed().as_secs_f64();
        let metrics = StepMetrics {
            step: moco.steps,
            epoch: sched.epoch_at(moco.steps),
            loss,
            lr,
            momentum: m,
            loss_scale: out.scale,
            applied: out.applied,
            images_per_sec: (sched.images_per_step as f64 / dt.max(1e-9)) as f32,
            elapsed_s: start.elapsed().as_secs_f64(),
            // Device memory where the backend measures it (the GPU arena's peak), else RSS.
            memory_bytes: match moco.be.peak_bytes() {
                0 => peak_rss_bytes(),
                device => device,
            },
        };
        on_step(&metrics, moco, &*data)?;
        // Every rank has the same skip history (one global verdict), so all stop here together.
        moco.guard.check(moco.cfg.amp, moco.scaler.scale(), moco.cfg.base_lr)?;
        if group_stops {
            interrupted = moco.steps < end_step;
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = moco.steps - first_step;
    let tail = (losses.len() / 10).max(1).min(losses.len());
    let tail_loss = if losses.is_empty() {
        f32::NAN
    } else {
        losses[losses.len() - tail..].iter().sum::<f32>() / tail as f32
    };
    Ok(Summary {
        steps: done,
        first_loss: losses.first().copied().unwrap_or(f32::NAN),
        last_loss: losses.last().copied().unwrap_or(f32::NAN),
        tail_loss,
        images_per_sec: (done as f64 * sched.images_per_step as f64 / elapsed.max(1e-9)) as f32,
        elapsed_s: elapsed,
        skipped_steps: skipped,
        interrupted,
    })
}
