//! The end of an optimiser step (DESIGN.md, "Data flow of one optimiser step"): the gradient
//! all-reduce, the unscale into one device inf/NaN verdict, the optimiser that the verdict can
//! skip on the device, and the step's single host read of its scalars (the verdict and the loss
//! terms), after which the scaler and the skip guard act on the host.

use super::comm::{all_reduce_buf, Comm};
use super::scaler::ScaleVerdict;
use super::state::{Moco, StepOut};
use crate::error::Result;
use crate::model::views::{full, full_mut};
use moco_kernels::Backend;

/// Index of the inf/NaN flag in [`Moco::metrics`].
pub(super) const FLAG: usize = 0;

/// Index of the queue's error flag in [`Moco::metrics`] (written by a refused enqueue).
pub(super) const QUEUE_ERROR: usize = 1;

/// Index of loss term `t` of micro-batch `micro` in [`Moco::metrics`].
pub(super) fn loss_slot(micro: usize, t: usize) -> usize {
    2 + 2 * micro + t
}

impl<B: Backend> Moco<B> {
    /// All-reduce the accumulated gradients, unscale them with one global inf/NaN verdict, and
    /// apply the optimiser (or skip the step on overflow). `lr` is this step's learning rate.
    pub fn optimizer_step(&mut self, comm: &dyn Comm, lr: f32) -> Result<StepOut> {
        let _s = tracing::info_span!("optimizer").entered();
        let micro = self.micro_in_step.max(1);
        let world = comm.world();
        if let Some(dc) = self.dev_comm.as_deref().filter(|_| world > 1) {
            let _c = tracing::info_span!("comm").entered();
            match self.dev_buckets.as_mut().filter(|b| b.active()) {
                // Buckets already started during the backward: start the rest, order after all.
                Some(b) => b.finish(dc, &self.be, &mut self.grads)?,
                None => dc.all_reduce_sum(&self.be, &mut self.grads)?,
            }
        } else if let Some(gs) = self.grad_sync.as_mut().filter(|g| g.active()) {
            // Buckets already left during the backward: send the rest and collect the sums.
            let _c = tracing::info_span!("comm").entered();
            gs.finish(&self.be, &mut self.grads)?;
        } else if world > 1 {
            let _c = tracing::info_span!("comm").entered();
            all_reduce_buf(&self.be, comm, &mut self.grads)?;
        }
        // Mean over ranks and micro-batches, and undo the loss scale, in one pass. The verdict is
        // a device flag that the optimiser reads itself: nothing waits for it here.
        let inv = 1.0 / (self.scaler.scale() * world as f32 * micro as f32);
        self.be.fill(B::view_mut(&mut self.metrics, FLAG..FLAG + 1), 0.0);
        let be = &self.be;
        be.unscale_check(full_mut::<B>(&mut self.grads), inv, B::view_mut(&mut self.metrics, FLAG..FLAG + 1));
        // The step's forward passes updated the BN running statistics; an overflow there (weights
        // grown huge while the normalised gradients stay finite) must not reach a checkpoint, so
        // it skips the step too. Scaling by exactly 1.0 leaves the values as they are.
        for stats in [&mut self.q_stats, &mut self.k_stats] {
            be.unscale_check(full_mut::<B>(stats), 1.0, B::view_mut(&mut self.metrics, FLAG..FLAG + 1));
        }
        if !self.cfg.amp && self.micro_in_step > 0 {
            // Without AMP a non-finite loss stops the run (`check_loss`); flagging it here
            // keeps the optimiser from applying that step first. The metrics buffer holds the
            // flag and then the losses, so the losses are scaled by 1.0 in place, unchanged.
            let (flag, losses) = (FLAG..FLAG + 1, loss_slot(0, 0)..loss_slot(self.micro_in_step, 0));
            let mut copy = be.zeros_master(losses.len())?;
            be.copy(B::view(&self.metrics, losses), full_mut::<B>(&mut copy));
            be.unscale_check(full_mut::<B>(&mut copy), 1.0, B::view_mut(&mut self.metrics, flag));
        }
        if world > 1 {
            // One verdict for all ranks: any rank's overflow skips the step everywhere.
            let _c = tracing::info_span!("comm").entered();
            let mut flag = self.be.zeros_master(1)?;
            self.be.copy(B::view(&self.metrics, FLAG..FLAG + 1), full_mut::<B>(&mut flag));
            match self.dev_comm.as_ref() {
                Some(dc) => dc.all_reduce_sum(&self.be, &mut flag)?,
                None => all_reduce_buf(&self.be, comm, &mut flag)?,
            }
            self.be.copy(full::<B>(&flag), B::view_mut(&mut self.metrics, FLAG..FLAG + 1));
        }
        self.opt.step(
            &self.be,
            &self.topo.params,
            &mut self.params,
            &self.grads,
            lr,
            self.cfg.weight_decay,
            Some((&self.metrics, FLAG)),
        );
        // A skipped step left the masters as they were, so this rebuilds the same copies.
        self.refresh_weights()?;

        // The step's one host wait: the verdict and the loss terms, after all of its work.
        let m = self.be.to_host(&self.metrics)?;
        if let Some(dc) = self.dev_comm.as_deref() {
            // On a GPU an aborted NCCL kernel lets this wait return with values not to be used.
            dc.check()?;
        }
        // A refused enqueue (corrupted queue pointer) stops the run here, in the step's one read.
        self.check_queue(&m)?;
        let skipped = m[FLAG] > 0.0;
        if skipped {
            self.opt.unstep();
        }
        let mut loss_sum = 0.0f32;
        for micro in 0..self.micro_in_step {
            let terms = [m[loss_slot(micro, 0)], m[loss_slot(micro, 1)]];
            self.check_loss(terms)?;
            loss_sum += terms[0] + terms[1];
        }
        let scale_used = self.scaler.scale();
        let verdict = self.scaler.update(skipped);
        if verdict == ScaleVerdict::Apply {
            self.guard.record(None);
        } else {
            // Read back what went wrong (skipped steps only), then undo the step's side effects.
            let report = super::guard::SkipReport::collect(
                &self.topo,
                (self.steps + 1, lr, scale_used),
                &self.be.to_host(&self.grads)?,
                &self.be.to_host(&self.params)?,
                [("query", &self.be.to_host(&self.q_stats)?), ("momentum", &self.be.to_host(&self.k_stats)?)],
            );
            let queue = self.queue.as_mut().map(|q| (q, &mut self.metrics, QUEUE_ERROR));
            self.guard.roll_back(&self.be, &mut self.q_stats, &mut self.k_stats, queue)?;
            self.guard.record(Some(report));
        }
        self.be.fill(full_mut::<B>(&mut self.grads), 0.0);
        self.micro_in_step = 0;
        self.steps += 1;
        Ok(StepOut { applied: verdict == ScaleVerdict::Apply, scale: self.scaler.scale(), loss_sum })
    }
}
