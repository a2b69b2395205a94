//! Effective-batch negatives under gradient accumulation (`effective_negatives`).
//!
//! Without it, each micro-batch's queries are contrasted with that micro-batch's keys and the
//! queue only, so accumulation A adds no negatives. The keys come from the momentum encoder,
//! which takes no gradient and whose weights do not change within an optimiser step (the EMA
//! runs once, before the first key forward), so the keys of every micro-batch of the step can be
//! computed first: A key forwards (no activations kept), their outputs kept (`2 x A x n x dim`
//! values per rank, a few hundred KB at the seeds' sizes), gathered across ranks once. Each
//! micro-batch's queries are then contrasted with all of them plus the queue: the query side's
//! loss and gradient are those of one batch of A x n per rank (with BN statistics per
//! micro-batch), at one micro-batch's activation memory.
//!
//! What is held: the step's A micro-batches of augmented input stay in host memory (the
//! loader already made them) and each view is copied to the device twice, once for the key
//! forward and once for the query forward, instead of once. Re-making them from the sampler
//! and augmentation seeds would cost a second augmentation instead; host memory is the cheaper
//! of the two (`launcher plan` shows both the device and the host share).
//!
//! The queue receives what one large batch would enqueue: after the step's last backward, one
//! write of the step's view-1 keys (micro-batch order) then its view-2 keys, so the step's keys
//! are never in the queue while its own queries are contrasted (they are batch negatives
//! already). Config validation requires the shard size to divide by 2 x A x n for that write.
//!
//! A step's micro-batches can straddle an epoch boundary (the sampler runs per micro-batch) and
//! then hold an image twice; with `mask_own` the loss masks such a query's other same-image key
//! out of its batch negatives, as it masks the queue's (moco/loss.rs).

use super::comm::{Comm, StatSyncComm};
use super::device_comm::DeviceComm;
use super::queue::indices_to_f32;
use super::state::{check_views, BatchKeys, Moco, Views};
use crate::error::{Result, WorkerError};
use crate::model::views::full;
use moco_kernels::Backend;

impl<B: Backend> Moco<B> {
    /// One optimiser step's micro-batches (all of them, in order), ready for
    /// [`Moco::optimizer_step`]. With `effective_negatives` and more than one micro-batch, every
    /// micro-batch's queries meet the keys of all of them (module doc); otherwise this is
    /// [`Moco::queue_micro_batch`] on each in turn.
    pub fn queue_step(&mut self, comm: &dyn Comm, micro: &[Views<'_>], momentum: f32) -> Result<()> {
        if !self.cfg.effective_negatives || micro.len() < 2 {
            for v in micro {
                self.queue_micro_batch(comm, v, momentum)?;
            }
            return Ok(());
        }
        self.with_dev_comm(comm, |m, dev| m.step_with(comm, dev, micro, momentum))
    }

    fn step_with(
        &mut self,
        comm: &dyn Comm,
        dev: Option<&dyn DeviceComm<B>>,
        micro: &[Views<'_>],
        momentum: f32,
    ) -> Result<()> {
        if self.micro_in_step != 0 {
            return Err(WorkerError::Data(format!(
                "effective-batch negatives take a whole optimiser step at once, but {} micro-batch(es) \
                 of this step were already queued one by one",
                self.micro_in_step
            )));
        }
        let n = micro[0].n;
        for v in micro {
            check_views(v)?;
            if v.n != n {
                return Err(WorkerError::Data(format!(
                    "effective-batch negatives need equal micro-batches: {} and {n} images in one step",
                    v.n
                )));
            }
        }
        let (a, d) = (micro.len(), self.cfg.dim);
        let sync = StatSyncComm { comm, dev };
        // The forward passes below update the running statistics even if the step is skipped.
        self.guard.begin(&self.be, &self.q_stats, &self.k_stats)?;
        self.ema_once(momentum)?;

        // Keys of every micro-batch with the step's momentum encoder, each micro-batch's key
        // forward on its own (its BN statistics and shuffle groups are those it would have had
        // alone), stacked per view in micro-batch order.
        let key_forward = tracing::info_span!("key_forward").entered();
        let mut local = [self.be.alloc(a * n * d)?, self.be.alloc(a * n * d)?];
        for (j, v) in micro.iter().enumerate() {
            for (view, x) in [v.x1, v.x2].into_iter().enumerate() {
                let input = self.be.act_from_host(x)?;
                let k = self.keys(&sync, input, v, view as u64 + 1, self.micro_total + j as u64)?;
                self.be.copy(full::<B>(&k), B::view_mut(&mut local[view], j * n * d..(j + 1) * n * d));
            }
        }
        drop(key_forward);
        // One gather for the step: rank-major, micro-batch order within a rank, which is the
        // column order of one batch of a x n per rank.
        let (k1_all, k2_all) = self.gather_keys(comm, dev, &local[0], &local[1])?;
        // The step's dataset indices cross to the device once and are gathered there, in the
        // keys' column order (own-image masking); the step's one enqueue writes them.
        let idx_host: Vec<i64> = micro.iter().flat_map(|v| v.idx.iter().copied()).collect();
        let idx = self.be.from_host(&indices_to_f32(&idx_host)?)?;
        let world = comm.world();
        let idx_all =
            if self.cfg.mask_own { Some(self.gather_indices(comm, dev, &idx, &idx_host)?) } else { None };

        for (j, v) in micro.iter().enumerate() {
            let forward = tracing::info_span!("forward").entered();
            let (q_out, _) = self.query_forward(&sync, v, false)?;
            // This micro-batch's queries' indices, every rank's, cut out of the step's on the
            // device (rank r's micro-batch j sits at r * a * n + j * n).
            let q_idx_all = match &idx_all {
                Some(all) => {
                    let mut q = self.be.zeros_master(world * n)?;
                    for r in 0..world {
                        let from = r * a * n + j * n;
                        self.be.copy(B::view(all, from..from + n), B::view_mut(&mut q, r * n..(r + 1) * n));
                    }
                    Some(q)
                }
                None => None,
            };
            let keys = BatchKeys {
                k1_all: &k1_all,
                k2_all: &k2_all,
                keys_per_rank: a * n,
                key_offset: j * n,
                q_idx_all: q_idx_all.as_ref(),
                k_idx_all: idx_all.as_ref(),
            };
            self.loss_and_backward(comm, dev, v, q_out, &keys, forward)?;
            self.micro_in_step += 1;
            self.micro_total += 1;
        }

        let [k1, k2] = local;
        self.enqueue_keys(&k1, &k2, &idx)
    }
}
