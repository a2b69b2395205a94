//! Skipped steps change nothing, and a run that keeps skipping stops with a diagnosis.
//!
//! The loss scaler skips an optimiser step whose gradients are not finite, but the forward
//! passes of that step have already updated the BN running statistics and the micro-batches
//! have already enqueued their keys: left alone, a diverging step writes NaN/inf into state the
//! weights never see again until a checkpoint carries it to `eval` or `export`. The guard
//! remembers the BN statistics at the start of each step, and the enqueue op itself copies the
//! queue rows it overwrites and the device pointer it found into the guard's buffers (all on
//! the device, so there is no host wait and the host never learns the pointer); a skip puts
//! them back, newest enqueue first, with the same device-pointer enqueue op.
//!
//! The momentum encoder's EMA of a skipped step is kept: it moves the key encoder toward the
//! query weights, which a skip leaves unchanged and finite, so it cannot bring in a NaN; undoing
//! it would need a second momentum encoder in GPU memory (as in MoCo v3 with PyTorch's
//! GradScaler, whose momentum update does not look at the scaler either).
//!
//! A single skip is normal under AMP (the scale was too high); many in a row, or a loss scale
//! driven below a floor, mean the run diverged, and `check` turns that into an error naming the
//! tensors that went non-finite, the step, lr and scale, and what to try.

use super::queue::{keys_buffer, QueueShard};
use crate::error::{Result, WorkerError};
use crate::model::views::{full, full_mut};
use crate::model::Topology;
use moco_kernels::Backend;
use moco_proto::config::QueuePrecision;

/// When a run counts as diverged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Stop after this many consecutive skipped steps (0: never).
    pub max_skipped_steps: u64,
    /// Stop when the AMP loss scale falls below this.
    pub min_loss_scale: f32,
}

impl Default for Limits {
    fn default() -> Self {
        // 20 skips in a row: the AMP scale starts at 2^16, so a healthy run that only had its
        // scale too high recovers within ~16 skips; 20 leaves margin and still stops within
        // seconds of a divergence. A scale below 1 means the gradients overflow fp16 even
        // unscaled, which no further halving fixes.
        Limits { max_skipped_steps: 20, min_loss_scale: 1.0 }
    }
}

/// What went wrong in a skipped step (collected on skipped steps only: it reads the gradients,
/// weights and statistics back to the host).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SkipReport {
    /// The step (1-based) that was skipped.
    pub step: u64,
    pub lr: f32,
    /// The loss scale the step ran with (before the scaler halved it).
    pub scale: f32,
    /// Parameters whose gradient held NaN/inf.
    pub grads: Vec<String>,
    /// BN running statistics the step's forward passes made non-finite (put back since).
    pub stats: Vec<String>,
    /// Weights that are non-finite themselves.
    pub weights: Vec<String>,
    /// The largest |weight| and its tensor.
    pub largest_weight: (String, f32),
}

/// The state `Moco` keeps to undo a skipped step.
pub struct StepGuard<B: Backend> {
    pub limits: Limits,
    q_stats: Option<B::Buf>,
    k_stats: Option<B::Buf>,
    /// Per enqueue of the step (oldest first): the rows it overwrote, their dataset indices and
    /// the pointer before it, as the enqueue op wrote them; reused from step to step.
    pool: Vec<[B::Buf; 3]>,
    /// Enqueues journaled this step (the first `journal` entries of `pool`).
    journal: usize,
    /// Where the restoring enqueues of a rollback save what they overwrite (not used after).
    scratch: Option<[B::Buf; 3]>,
    /// Consecutive skipped steps so far, and the first of them.
    pub skipped_in_a_row: u64,
    pub first_skipped: u64,
    pub last_skip: Option<SkipReport>,
}

impl<B: Backend> Default for StepGuard<B> {
    fn default() -> Self {
        StepGuard {
            limits: Limits::default(),
            q_stats: None,
            k_stats: None,
            pool: Vec::new(),
            journal: 0,
            scratch: None,
            skipped_in_a_row: 0,
            first_skipped: 0,
            last_skip: None,
        }
    }
}

/// A device buffer of `len` values of the same kind `from_host` makes (what the statistics and
/// the queue are), so `copy` between them is exact.
fn like<B: Backend>(be: &B, len: usize) -> Result<B::Buf> {
    Ok(be.from_host(&vec![0.0f32; len])?)
}

/// Buffers for one enqueue's saved rows: `[b, dim]` keys (in the queue's precision, so the
/// rows cross back and forth without conversion), `[b]` indices, `[1]` pointer.
fn saved_set<B: Backend>(
    be: &B,
    set: &mut Option<[B::Buf; 3]>,
    b: usize,
    dim: usize,
    precision: QueuePrecision,
) -> Result<()> {
    let fits = set.as_ref().is_some_and(|s| B::buf_len(&s[0]) == b * dim && B::buf_len(&s[1]) == b);
    if !fits {
        *set = Some([keys_buffer(be, b * dim, precision)?, like(be, b)?, like(be, 1)?]);
    }
    Ok(())
}

/// Writable full views of a saved set, as `Backend::queue_enqueue` takes them.
pub fn saved_views<B: Backend>(set: &mut [B::Buf; 3]) -> [B::ViewMut<'_>; 3] {
    set.each_mut().map(|s| {
        let n = B::buf_len(s);
        B::view_mut(s, 0..n)
    })
}

impl<B: Backend> StepGuard<B> {
    /// At the first micro-batch of a step: remember the BN running statistics.
    pub fn begin(&mut self, be: &B, q_stats: &B::Buf, k_stats: &B::Buf) -> Result<()> {
        self.journal = 0;
        for (saved, live) in [(&mut self.q_stats, q_stats), (&mut self.k_stats, k_stats)] {
            if saved.as_ref().is_none_or(|s| B::buf_len(s) != B::buf_len(live)) {
                *saved = Some(like(be, B::buf_len(live))?);
            }
            if let Some(s) = saved.as_mut() {
                be.copy(full::<B>(live), full_mut::<B>(s));
            }
        }
        Ok(())
    }

    /// Before `b` keys of `dim` values are enqueued: the buffers the enqueue op saves the rows
    /// it overwrites into (journaled for a rollback of this step).
    pub fn next_saved(
        &mut self,
        be: &B,
        b: usize,
        dim: usize,
        precision: QueuePrecision,
    ) -> Result<&mut [B::Buf; 3]> {
        let n = self.journal;
        let fits = self.pool.get(n).is_some_and(|s| B::buf_len(&s[0]) == b * dim && B::buf_len(&s[1]) == b);
        if !fits {
            let set = [keys_buffer(be, b * dim, precision)?, like(be, b)?, like(be, 1)?];
            if n < self.pool.len() {
                self.pool[n] = set;
            } else {
                self.pool.push(set);
            }
        }
        self.journal += 1;
        Ok(&mut self.pool[n])
    }

    /// Put back the statistics and queue rows of the step being skipped, newest enqueue first,
    /// all on the device: each journaled enqueue is undone by pointing the queue's device
    /// pointer at where that enqueue wrote and enqueueing the saved rows there; at the end the
    /// pointer is set to where the step's first enqueue found it. `error` is the metrics buffer
    /// and its queue error slot (a corrupted saved pointer raises it, read with the next step).
    pub fn roll_back(
        &mut self,
        be: &B,
        q_stats: &mut B::Buf,
        k_stats: &mut B::Buf,
        queue: Option<(&mut QueueShard<B>, &mut B::Buf, usize)>,
    ) -> Result<()> {
        for (saved, live) in [(&self.q_stats, q_stats), (&self.k_stats, k_stats)] {
            if let Some(s) = saved {
                be.copy(full::<B>(s), full_mut::<B>(live));
            }
        }
        if let Some((q, metrics, slot)) = queue {
            for n in (0..self.journal).rev() {
                let [keys, idx, ptr] = &self.pool[n];
                let b = B::buf_len(idx);
                saved_set(be, &mut self.scratch, b, q.dim, q.precision)?;
                be.copy(full::<B>(ptr), full_mut::<B>(&mut q.ptr));
                if let Some(scratch) = self.scratch.as_mut() {
                    let (rows, dim) = (q.rows, q.dim);
                    let err = B::view_mut(metrics, slot..slot + 1);
                    be.queue_enqueue(
                        rows,
                        dim,
                        q.half(),
                        full::<B>(keys),
                        full::<B>(idx),
                        full_mut::<B>(&mut q.keys),
                        full_mut::<B>(&mut q.idx),
                        full_mut::<B>(&mut q.ptr),
                        err,
                        saved_views::<B>(scratch),
                    );
                }
            }
            if self.journal > 0 {
                be.copy(full::<B>(&self.pool[0][2]), full_mut::<B>(&mut q.ptr));
            }
        }
        self.journal = 0;
        Ok(())
    }

    /// Record a step's verdict (`report` is Some for a skipped step).
    pub fn record(&mut self, report: Option<SkipReport>) {
        self.journal = 0;
        match report {
            Some(r) => {
                if self.skipped_in_a_row == 0 {
                    self.first_skipped = r.step;
                }
                self.skipped_in_a_row += 1;
                self.last_skip = Some(r);
            }
            None => self.skipped_in_a_row = 0,
        }
    }

    /// An error when the run has diverged: too many skips in a row, or (AMP) a scale below the
    /// floor. `scale` is the scale after the latest step.
    pub fn check(&self, amp: bool, scale: f32, base_lr: f32) -> Result<()> {
        let Some(r) = &self.last_skip else { return Ok(()) };
        let max = self.limits.max_skipped_steps;
        let too_many = max > 0 && self.skipped_in_a_row >= max;
        let too_small = amp && scale < self.limits.min_loss_scale;
        if !(too_many || too_small) || self.skipped_in_a_row == 0 {
            return Ok(());
        }
        let why = if too_many {
            format!(
                "{} optimiser steps in a row were skipped (steps {}-{}) because their gradients or BN statistics were not \
                 finite (limit: --max-skipped-steps {max})",
                self.skipped_in_a_row, self.first_skipped, r.step
            )
        } else {
            format!(
                "the AMP loss scale fell to {scale:e}, below --min-loss-scale {:e}, after {} skipped step(s) \
                 in a row (steps {}-{}): the gradients overflow even without scaling",
                self.limits.min_loss_scale, self.skipped_in_a_row, self.first_skipped, r.step
            )
        };
        Err(WorkerError::Numeric(format!(
            "training diverged: {why}. At step {}: lr {:.3e}, loss scale {}; {}. The skipped steps changed \
             no weights, BN statistics or queue, and no checkpoint holds NaN/inf: the newest one holds the \
             last finite state. Try: a lower --base-lr (now {base_lr}), a longer \
             --warmup-epochs, {}or check the data for broken tiles",
            r.step,
            r.lr,
            r.scale,
            r.describe(),
            if amp { "--no-amp (fp32), " } else { "" }
        )))
    }
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

impl SkipReport {
    /// Gather what went non-finite, from host copies of the step's tensors.
    pub fn collect(
        topo: &Topology,
        (step, lr, scale): (u64, f32, f32),
        grads: &[f32],
        params: &[f32],
        stats: [(&str, &[f32]); 2],
    ) -> SkipReport {
        let bad = |v: &[f32]| v.iter().any(|x| !x.is_finite());
        let mut r = SkipReport { step, lr, scale, ..Default::default() };
        for p in &topo.params {
            if bad(&grads[p.range()]) {
                r.grads.push(p.name.clone());
            }
            let w = &params[p.range()];
            if bad(w) {
                r.weights.push(p.name.clone());
            }
            let m = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            if m > r.largest_weight.1 || r.largest_weight.0.is_empty() {
                r.largest_weight = (p.name.clone(), m);
            }
        }
        for (enc, s) in stats {
            for (name, off, len) in &topo.buffers {
                if bad(&s[*off..off + len]) {
                    r.stats.push(format!("{enc}.{name}"));
                }
            }
        }
        r
    }

    /// One sentence of what was non-finite.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.grads.is_empty() {
            parts.push(format!(
                "non-finite gradients in {} tensor(s): {}",
                self.grads.len(),
                list(&self.grads)
            ));
        }
        if !self.stats.is_empty() {
            parts.push(format!(
                "the forward pass made {} BN running statistic(s) non-finite (put back): {}",
                self.stats.len(),
                list(&self.stats)
            ));
        }
        if !self.weights.is_empty() {
            parts.push(format!("non-finite weights: {}", list(&self.weights)));
        }
        parts.push(format!("largest |weight| {:.3e} in {}", self.largest_weight.1, self.largest_weight.0));
        parts.join("; ")
    }
}
