//! The state of one rank's hybrid-MoCo training and its step (DESIGN.md, "Data flow of one
//! optimiser step"): query forward of both views, EMA of the momentum encoder, key forward,
//! L2 norm, gathered keys, the two contrastive terms against batch keys and the queue shard,
//! backward, enqueue; and, every `accumulation` micro-batches, the gradient all-reduce, the
//! unscale with one global inf/NaN verdict, and the optimiser.

use super::comm::{all_gather_buf, Comm, StatSyncComm};
use super::device_comm::DeviceComm;
use super::loss::{contrastive, CtrIn};
use super::optim::OptimState;
use super::queue::indices_to_f32;
use super::queue::QueueShard;
use super::scaler::LossScaler;
use super::step_end::{loss_slot, QUEUE_ERROR};
use crate::error::{Result, WorkerError};
use crate::model::bn::BnStats;
use crate::model::params::{init_params, init_stats};
use crate::model::views::{full, full_mut};
use crate::model::{encoder_backward_hooked, encoder_forward, Ctx, GradsReady, Keep, ModelDims, Topology};
use moco_kernels::Backend;
use moco_proto::config::{BnMode, TrainConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One rank's model, momentum encoder, optimiser, queue shard and scaler.
pub struct Moco<B: Backend> {
    pub be: B,
    pub cfg: TrainConfig,
    pub topo: Topology,
    /// fp32 master weights of the query encoder (backbone + projector + predictor).
    pub params: B::Buf,
    /// fp32 master weights of the momentum encoder (backbone + projector).
    pub key_params: B::Buf,
    /// fp16-rounded compute copies under AMP (None: compute with the masters).
    pub weights: Option<B::Buf>,
    pub key_weights: Option<B::Buf>,
    /// Gradient accumulation buffer (fp32, scaled by the loss scale until unscaled).
    pub grads: B::Buf,
    /// BN running statistics of the query and momentum encoders.
    pub q_stats: B::Buf,
    pub k_stats: B::Buf,
    pub opt: OptimState<B>,
    pub queue: Option<QueueShard<B>>,
    pub scaler: LossScaler,
    /// Bucketed gradient all-reduce overlapping the backward (multi-rank runs with a second
    /// collective for gradients); None: one all-reduce after the backward.
    pub grad_sync: Option<super::grad_sync::GradSync>,
    /// Collectives on device buffers (NCCL) for the gradient all-reduce and the key
    /// all-gather; None: through the host `Comm`. With it, `grad_sync` is not used.
    pub dev_comm: Option<Box<dyn super::device_comm::DeviceComm<B>>>,
    /// Gradient buckets all-reduced by `dev_comm` during the backward (when it overlaps);
    /// None: `dev_comm` all-reduces the whole buffer after the backward.
    pub dev_buckets: Option<super::device_buckets::DeviceBuckets>,
    /// Micro-batches done since the last optimiser step.
    pub micro_in_step: usize,
    /// Micro-batches done in total (seeds the key-side shuffle).
    pub micro_total: u64,
    /// Optimiser steps attempted (applied or skipped).
    pub steps: u64,
    /// This rank (named in errors).
    pub rank: usize,
    /// Undoes what a skipped step changed besides the weights; decides when the run diverged.
    pub guard: super::guard::StepGuard<B>,
    /// The step's scalars on the device, read by the host once per optimiser step (the only
    /// host wait of a step): `[0]` the inf/NaN flag, `[1]` the queue's error flag (set by a
    /// refused enqueue), then the two loss terms of each micro-batch (`[2 + 2 * micro + term]`).
    pub metrics: B::Buf,
}

/// What one micro-batch reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MicroOut {
    /// ctr(q1, k2) + ctr(q2, k1) on this rank's rows.
    pub loss: f32,
    pub loss_terms: [f32; 2],
}

/// What one optimiser step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOut {
    pub applied: bool,
    /// Loss scale after the update.
    pub scale: f32,
    /// Sum over the step's micro-batches of their loss (`MicroOut::loss`), in micro-batch order.
    pub loss_sum: f32,
}

/// A two-view micro-batch as the step consumes it: NHWC f32, normalised.
pub struct Views<'a> {
    pub x1: &'a [f32],
    pub x2: &'a [f32],
    /// Dataset index of each image.
    pub idx: &'a [i64],
    pub n: usize,
    pub size: usize,
    pub channels: usize,
}

impl<B: Backend> Moco<B> {
    /// Fresh state: torchvision init, momentum encoder = copy of the query encoder, random
    /// queue shard.
    pub fn new(be: B, cfg: &TrainConfig, in_channels: usize, rank: usize, world: usize) -> Result<Self> {
        let topo = Topology::new(ModelDims::from_config(cfg, in_channels));
        let host = init_params(&topo, cfg.seed);
        let stats = init_stats(&topo);
        let params = be.from_host(&host)?;
        let key_params = be.from_host(&host[..topo.key_len()])?;
        let queue = if cfg.queue_size > 0 {
            Some(QueueShard::init(&be, cfg.queue_size, cfg.dim, rank, world, cfg.seed, cfg.queue_precision)?)
        } else {
            None
        };
        let mut m = Moco {
            opt: OptimState::new(&be, cfg.optimizer, topo.param_len())?,
            grads: be.zeros_master(topo.param_len())?,
            q_stats: be.from_host(&stats)?,
            k_stats: be.from_host(&stats)?,
            weights: None,
            key_weights: None,
            params,
            key_params,
            queue,
            scaler: LossScaler::new(cfg.amp),
            grad_sync: None,
            dev_comm: None,
            dev_buckets: None,
            micro_in_step: 0,
            micro_total: 0,
            steps: 0,
            rank,
            guard: Default::default(),
            metrics: be.zeros_master(loss_slot(cfg.accumulation.max(1), 0))?,
            cfg: cfg.clone(),
            topo,
            be,
        };
        m.refresh_weights()?;
        Ok(m)
    }

    /// Rebuild the fp16 compute copies from the masters (AMP only).
    pub fn refresh_weights(&mut self) -> Result<()> {
        if !self.cfg.amp {
            self.weights = None;
            self.key_weights = None;
            return Ok(());
        }
        for (master, copy) in [(&self.params, &mut self.weights), (&self.key_params, &mut self.key_weights)] {
            let mut w = match copy.take() {
                Some(w) => w,
                None => self.be.alloc(B::buf_len(master))?,
            };
            self.be.copy(full::<B>(master), full_mut::<B>(&mut w));
            self.be.round_act(full_mut::<B>(&mut w));
            *copy = Some(w);
        }
        Ok(())
    }

    fn query_stats<'a>(&self, comm: &'a StatSyncComm<'a, B>) -> BnStats<'a, B> {
        match self.cfg.bn_mode {
            BnMode::Sync => BnStats::Sync(comm),
            BnMode::Local | BnMode::Shuffle => BnStats::Local,
        }
    }

    /// Momentum-encoder keys `[n, dim]`, L2-normalised, for one view whose images `x` are
    /// already on the device. Under shuffle BN the samples are permuted before the encoder and
    /// the keys un-permuted after it, both by row copies on the device.
    /// `micro` numbers the micro-batch over the run (seeds the shuffle).
    pub(super) fn keys(
        &mut self,
        comm: &StatSyncComm<'_, B>,
        x: B::Buf,
        v: &Views<'_>,
        view: u64,
        micro: u64,
    ) -> Result<B::Buf> {
        let n = v.n;
        let per = v.size * v.size * v.channels;
        let (stats, perm) = match self.cfg.bn_mode {
            BnMode::Sync => (BnStats::Sync(comm), None),
            BnMode::Local => (BnStats::Local, None),
            BnMode::Shuffle => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ (micro << 2 | view));
                let mut perm: Vec<usize> = (0..n).collect();
                perm.shuffle(&mut rng);
                (BnStats::Groups(self.cfg.shuffle_groups), Some(perm))
            }
        };
        let input = match &perm {
            Some(p) => {
                let mut shuffled = self.be.alloc(B::buf_len(&x))?;
                for (dst, &src) in p.iter().enumerate() {
                    let (from, to) = (src * per..(src + 1) * per, dst * per..(dst + 1) * per);
                    self.be.copy(B::view(&x, from), B::view_mut(&mut shuffled, to));
                }
                shuffled
            }
            None => x,
        };
        let weights = self.key_weights.as_ref().unwrap_or(&self.key_params);
        let ctx = Ctx { be: &self.be, params: &self.topo.params, weights, stats, keep: Keep::Nothing };
        let (k, _) = encoder_forward(&ctx, &self.topo, Some(&mut self.k_stats), input, n, v.size, false)?;
        let mut kn = self.be.alloc(B::buf_len(&k))?;
        let mut norm = self.be.zeros_master(n)?;
        let d = self.cfg.dim;
        self.be.l2norm_fwd(n, d, full::<B>(&k), full_mut::<B>(&mut kn), full_mut::<B>(&mut norm));
        match perm {
            Some(p) => {
                // Un-permute on the device, one row copy each (exact in any precision), so the
                // keys never make a host round trip.
                let mut keys = self.be.alloc(B::buf_len(&kn))?;
                for (dst, &src) in p.iter().enumerate() {
                    self.be.copy(
                        B::view(&kn, dst * d..(dst + 1) * d),
                        B::view_mut(&mut keys, src * d..(src + 1) * d),
                    );
                }
                Ok(keys)
            }
            None => Ok(kn),
        }
    }

    /// Forward and backward of one micro-batch, reading its loss back (a host wait: tests and
    /// tools; training uses [`Moco::queue_micro_batch`] and the loss in [`StepOut`]).
    pub fn micro_batch(&mut self, comm: &dyn Comm, v: &Views<'_>, momentum: f32) -> Result<MicroOut> {
        let micro = self.micro_in_step;
        self.queue_micro_batch(comm, v, momentum)?;
        let m = self.be.to_host(&self.metrics)?;
        self.check_queue(&m)?;
        let terms = [m[loss_slot(micro, 0)], m[loss_slot(micro, 1)]];
        self.check_loss(terms)?;
        Ok(MicroOut { loss: terms[0] + terms[1], loss_terms: terms })
    }

    /// A refused enqueue (a corrupted device pointer) stops the run: `m` is the metrics read.
    pub(super) fn check_queue(&self, m: &[f32]) -> Result<()> {
        match (m[QUEUE_ERROR], &self.queue) {
            (code, Some(q)) if code != 0.0 => Err(q.error(&self.be, code, self.rank, self.steps + 1)),
            _ => Ok(()),
        }
    }

    /// A non-finite loss without AMP is a diverged run (with AMP the scaler handles it).
    pub(super) fn check_loss(&self, terms: [f32; 2]) -> Result<()> {
        let loss = terms[0] + terms[1];
        if !loss.is_finite() && !self.cfg.amp {
            return Err(WorkerError::Numeric(format!(
                "the loss became {loss} at step {} without AMP: lower --base-lr or check the data",
                self.steps
            )));
        }
        Ok(())
    }

    /// Forward and backward of one micro-batch; gradients accumulate into `self.grads` and the
    /// loss terms into `self.metrics`, with no host wait (the step's one read is in
    /// [`Moco::optimizer_step`]). `momentum` is this optimiser step's EMA coefficient (applied on
    /// its first micro-batch). Its queries meet its own keys only: see [`Moco::queue_step`] for
    /// the effective batch's.
    pub fn queue_micro_batch(&mut self, comm: &dyn Comm, v: &Views<'_>, momentum: f32) -> Result<()> {
        self.with_dev_comm(comm, |m, dev| m.micro_batch_with(comm, dev, v, momentum))
    }

    /// Runs `f` with the device collective lent out of `self` (SyncBN and the loss hold it while
    /// the step mutates the rest of `self`), filtered to runs of more than one rank, and puts it
    /// back whatever happens.
    pub(super) fn with_dev_comm<T>(
        &mut self,
        comm: &dyn Comm,
        f: impl FnOnce(&mut Self, Option<&dyn DeviceComm<B>>) -> Result<T>,
    ) -> Result<T> {
        let dev_comm = self.dev_comm.take();
        let dev = dev_comm.as_deref().filter(|_| comm.world() > 1);
        let done = f(self, dev);
        self.dev_comm = dev_comm;
        done
    }

    fn micro_batch_with(
        &mut self,
        comm: &dyn Comm,
        dev: Option<&dyn DeviceComm<B>>,
        v: &Views<'_>,
        momentum: f32,
    ) -> Result<()> {
        check_views(v)?;
        let sync = StatSyncComm { comm, dev };
        if self.micro_in_step == 0 {
            // The forward passes below update the running statistics even if the step is skipped.
            self.guard.begin(&self.be, &self.q_stats, &self.k_stats)?;
        }

        // Query encoder, both views; tapes kept for the backward.
        let forward = tracing::info_span!("forward").entered();
        let (q_out, key_inputs) = self.query_forward(&sync, v, true)?;

        // EMA once per optimiser step, before the key forward (MOCO.md step 3).
        self.ema_once(momentum)?;
        let key_forward = tracing::info_span!("key_forward").entered();
        let mut key_inputs = key_inputs.into_iter();
        let (x1, x2) = (key_inputs.next(), key_inputs.next());
        let (Some(x1), Some(x2)) = (x1, x2) else {
            return Err(WorkerError::Data("a micro-batch without two views".into()));
        };
        let k1 = self.keys(&sync, x1, v, 1, self.micro_total)?;
        let k2 = self.keys(&sync, x2, v, 2, self.micro_total)?;
        drop(key_forward);
        let (k1_all, k2_all) = self.gather_keys(comm, dev, &k1, &k2)?;
        // The images' dataset indices cross to the device once, with the batch, and are
        // gathered there (own-image masking); the enqueue writes them into the shard.
        let idx = self.be.from_host(&indices_to_f32(v.idx)?)?;
        let q_idx_all =
            if self.cfg.mask_own { Some(self.gather_indices(comm, dev, &idx, v.idx)?) } else { None };
        let batch_keys = BatchKeys {
            k1_all: &k1_all,
            k2_all: &k2_all,
            keys_per_rank: v.n,
            key_offset: 0,
            q_idx_all: q_idx_all.as_ref(),
            k_idx_all: None,
        };
        self.loss_and_backward(comm, dev, v, q_out, &batch_keys, forward)?;

        // Enqueue this micro-batch's keys (view 1 first), after the loss.
        self.enqueue_keys(&k1, &k2, &idx)?;
        self.micro_in_step += 1;
        self.micro_total += 1;
        Ok(())
    }

    /// Query forward of both views of `v`: (normalised queries, norms, tapes), and with
    /// `key_copies` a device copy of each view's images for the momentum encoder, so that each
    /// view crosses to the device once per micro-batch.
    #[allow(clippy::type_complexity)]
    pub(super) fn query_forward(
        &mut self,
        sync: &StatSyncComm<'_, B>,
        v: &Views<'_>,
        key_copies: bool,
    ) -> Result<(Vec<(B::Buf, B::Buf, crate::model::EncoderTape<B>)>, Vec<B::Buf>)> {
        let (n, d) = (v.n, self.cfg.dim);
        let keep = if self.cfg.recompute { Keep::BlockInputs } else { Keep::All };
        let mut q_out = Vec::with_capacity(2);
        let mut key_inputs = Vec::with_capacity(2);
        for x in [v.x1, v.x2] {
            let _s = tracing::info_span!("query_forward").entered();
            let input = self.be.act_from_host(x)?;
            if key_copies {
                let mut key_in = self.be.alloc(B::buf_len(&input))?;
                self.be.copy(full::<B>(&input), full_mut::<B>(&mut key_in));
                key_inputs.push(key_in);
            }
            let weights = self.weights.as_ref().unwrap_or(&self.params);
            let ctx =
                Ctx { be: &self.be, params: &self.topo.params, weights, stats: self.query_stats(sync), keep };
            let (q, tape) =
                encoder_forward(&ctx, &self.topo, Some(&mut self.q_stats), input, n, v.size, true)?;
            let mut qn = self.be.alloc(n * d)?;
            let mut norm = self.be.zeros_master(n)?;
            self.be.l2norm_fwd(n, d, full::<B>(&q), full_mut::<B>(&mut qn), full_mut::<B>(&mut norm));
            q_out.push((qn, norm, tape));
        }
        Ok((q_out, key_inputs))
    }

    /// The EMA of the momentum encoder, on the optimiser step's first micro-batch only.
    pub(super) fn ema_once(&mut self, momentum: f32) -> Result<()> {
        if self.micro_in_step == 0 {
            let _s = tracing::info_span!("ema").entered();
            let kl = self.topo.key_len();
            self.be.ema(momentum, B::view(&self.params, 0..kl), full_mut::<B>(&mut self.key_params));
            if self.cfg.amp {
                self.refresh_weights()?;
            }
        }
        Ok(())
    }

    /// Every rank's keys of both views, in rank order.
    pub(super) fn gather_keys(
        &self,
        comm: &dyn Comm,
        dev: Option<&dyn DeviceComm<B>>,
        k1: &B::Buf,
        k2: &B::Buf,
    ) -> Result<(B::Buf, B::Buf)> {
        match dev {
            Some(dc) => {
                let _c = tracing::info_span!("comm").entered();
                Ok((dc.all_gather(&self.be, k1)?, dc.all_gather(&self.be, k2)?))
            }
            None => Ok((all_gather_buf(&self.be, comm, k1)?, all_gather_buf(&self.be, comm, k2)?)),
        }
    }

    /// Every rank's dataset indices `idx` (this rank's on the device; `host` the same values on
    /// the host), in rank order, on the device: over the device collective when there is one,
    /// else over the host ring (host data, no device wait) and uploaded.
    pub(super) fn gather_indices(
        &self,
        comm: &dyn Comm,
        dev: Option<&dyn DeviceComm<B>>,
        idx: &B::Buf,
        host: &[i64],
    ) -> Result<B::Buf> {
        match dev {
            _ if comm.world() == 1 => crate::model::heads::clone_buf(&self.be, idx),
            Some(dc) => {
                let _c = tracing::info_span!("comm").entered();
                dc.all_gather_f32(&self.be, idx)
            }
            None => {
                let mut all = vec![0i64; host.len() * comm.world()];
                comm.all_gather_i64(host, &mut all)?;
                Ok(self.be.from_host(&indices_to_f32(&all)?)?)
            }
        }
    }

    /// The symmetric loss of one micro-batch's queries against `keys`, ctr(q1, k2) + ctr(q2, k1),
    /// and the backward of both views into the shared gradient buffer. `forward` (the span of the
    /// forward phase) ends with the loss.
    pub(super) fn loss_and_backward(
        &mut self,
        comm: &dyn Comm,
        dev: Option<&dyn DeviceComm<B>>,
        v: &Views<'_>,
        q_out: Vec<(B::Buf, B::Buf, crate::model::EncoderTape<B>)>,
        keys: &BatchKeys<'_, B>,
        forward: tracing::span::EnteredSpan,
    ) -> Result<()> {
        let (n, d) = (v.n, self.cfg.dim);
        let sync = StatSyncComm { comm, dev };
        let keep = if self.cfg.recompute { Keep::BlockInputs } else { Keep::All };

        // Symmetric loss: ctr(q1, k2) + ctr(q2, k1).
        let loss_span = tracing::info_span!("loss").entered();
        let grad_scale = self.scaler.scale();
        self.reserve_loss_slots(self.micro_in_step + 1)?;
        let mut dqs = Vec::with_capacity(2);
        for (t, (qn, _, _)) in q_out.iter().enumerate() {
            let k_all = if t == 0 { keys.k2_all } else { keys.k1_all };
            let inp = CtrIn {
                q: qn,
                k_all,
                keys_per_rank: keys.keys_per_rank,
                key_offset: keys.key_offset,
                q_idx_all: keys.q_idx_all,
                k_idx_all: keys.k_idx_all,
                n,
                dim: d,
                temperature: self.cfg.temperature,
                mask_own: self.cfg.mask_own,
                grad_scale,
            };
            let slot = loss_slot(self.micro_in_step, t);
            let loss_out = B::view_mut(&mut self.metrics, slot..slot + 1);
            let out = contrastive(&self.be, comm, dev, &inp, self.queue.as_ref(), loss_out)?;
            dqs.push(out.dq);
        }
        drop((loss_span, forward));
        // Backward of both views into the shared gradient buffer. On the last micro-batch of the
        // step, view 2's backward finishes the gradients, so buckets start their all-reduce then.
        let last_micro = self.micro_in_step + 1 >= self.cfg.accumulation;
        let backward = tracing::info_span!("backward").entered();
        for (view, ((qn, norm, tape), dq)) in q_out.into_iter().zip(dqs).enumerate() {
            let mut dqraw = self.be.alloc(n * d)?;
            self.be.l2norm_bwd(
                n,
                d,
                full::<B>(&qn),
                full::<B>(&norm),
                full::<B>(&dq),
                full_mut::<B>(&mut dqraw),
            );
            self.be.round_act(full_mut::<B>(&mut dqraw));
            let weights = self.weights.as_ref().unwrap_or(&self.params);
            let ctx = Ctx {
                be: &self.be,
                params: &self.topo.params,
                weights,
                stats: self.query_stats(&sync),
                keep,
            };
            let overlap = view == 1 && last_micro && comm.world() > 1;
            let mut gs = if overlap && dev.is_none() { self.grad_sync.take() } else { None };
            if let Some(g) = gs.as_mut() {
                g.begin(self.topo.param_len());
            }
            // With a device collective that overlaps, its buckets start during the backward.
            let dc = dev.filter(|_| overlap);
            let mut db = if dc.is_some() { self.dev_buckets.take() } else { None };
            if let Some(d) = db.as_mut() {
                d.begin(self.topo.param_len());
            }
            {
                let be = &self.be;
                let mut hook = |start: usize, grads: &mut B::Buf| -> Result<()> {
                    if let Some(g) = gs.as_mut() {
                        g.ready(be, grads, start)?;
                    }
                    if let (Some(d), Some(dc)) = (db.as_mut(), dc) {
                        d.ready(dc, be, grads, start)?;
                    }
                    Ok(())
                };
                let mut ready: Option<GradsReady<'_, B>> = Some(&mut hook);
                encoder_backward_hooked(&ctx, &self.topo, tape, dqraw, &mut self.grads, false, &mut ready)?;
            }
            if gs.is_some() {
                self.grad_sync = gs;
            }
            if db.is_some() {
                self.dev_buckets = db;
            }
        }
        drop(backward);
        Ok(())
    }

    /// Enqueue keys of both views (view 1's first) with the dataset index of their images
    /// (`idx`, on the device), after the loss: one device-pointer enqueue, which also saves the
    /// rows it overwrites into the skip guard's buffers. A refusal lands in the metrics' queue
    /// error slot, read at the end of the step.
    pub(super) fn enqueue_keys(&mut self, k1: &B::Buf, k2: &B::Buf, idx: &B::Buf) -> Result<()> {
        if let Some(q) = self.queue.as_mut() {
            let _s = tracing::info_span!("enqueue").entered();
            let (rows, d) = (B::buf_len(idx), self.cfg.dim);
            let mut keys = self.be.alloc(2 * rows * d)?;
            self.be.copy(full::<B>(k1), B::view_mut(&mut keys, 0..rows * d));
            self.be.copy(full::<B>(k2), B::view_mut(&mut keys, rows * d..2 * rows * d));
            let mut both = self.be.zeros_master(2 * rows)?;
            self.be.copy(full::<B>(idx), B::view_mut(&mut both, 0..rows));
            self.be.copy(full::<B>(idx), B::view_mut(&mut both, rows..2 * rows));
            let saved = self.guard.next_saved(&self.be, 2 * rows, d, q.precision)?;
            let error = B::view_mut(&mut self.metrics, QUEUE_ERROR..QUEUE_ERROR + 1);
            q.enqueue(&self.be, &keys, &both, error, super::guard::saved_views::<B>(saved))?;
        }
        Ok(())
    }

    /// Grow `metrics` to hold the loss terms of `micros` micro-batches (more micro-batches per
    /// step than the configured accumulation: tests that drive the step by hand).
    fn reserve_loss_slots(&mut self, micros: usize) -> Result<()> {
        let need = loss_slot(micros, 0);
        let have = B::buf_len(&self.metrics);
        if need > have {
            let mut grown = self.be.zeros_master(need)?;
            self.be.copy(full::<B>(&self.metrics), B::view_mut(&mut grown, 0..have));
            self.metrics = grown;
        }
        Ok(())
    }
}

/// The keys one micro-batch's queries are contrasted with (both views, every rank's).
pub(super) struct BatchKeys<'a, B: Backend> {
    pub k1_all: &'a B::Buf,
    pub k2_all: &'a B::Buf,
    /// Keys per rank in `k*_all`: the micro-batch's n, or the optimiser step's with
    /// effective-batch negatives.
    pub keys_per_rank: usize,
    /// Where this micro-batch's own keys start within its rank's (its positives).
    pub key_offset: usize,
    /// Dataset index of every rank's queries of this micro-batch, in rank order, on the device
    /// (own-image masking; None when it is off).
    pub q_idx_all: Option<&'a B::Buf>,
    /// Dataset index of every key column with effective-batch negatives (own-image mask), on
    /// the device.
    pub k_idx_all: Option<&'a B::Buf>,
}

/// A micro-batch's two views must hold n images of size x size x channels each.
pub(super) fn check_views(v: &Views<'_>) -> Result<()> {
    let n = v.n;
    let per = v.size * v.size * v.channels;
    if v.x1.len() != n * per || v.x2.len() != n * per || v.idx.len() != n {
        return Err(WorkerError::Data(format!(
            "micro-batch of {n} images at {0}x{0}x{1}: view sizes {2}/{3}, {4} indices",
            v.size,
            v.channels,
            v.x1.len(),
            v.x2.len(),
            v.idx.len()
        )));
    }
    Ok(())
}
