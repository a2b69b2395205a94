//! The contrastive loss of one term, ctr(q, k), with the queue sharded over ranks.
//!
//! logits = [q . k_all^T | q . queue^T] / T; label of local row i = i + N*rank; loss = mean
//! cross-entropy * 2T (MOCO.md, "Loss"). The queue block is computed shard-locally for the
//! gathered queries of all ranks; each rank contributes a (max, sum-exp) pair per query row and
//! the pairs are combined in rank order into one log-sum-exp (a distributed log-sum-exp), so no
//! rank holds the whole queue and the traffic is O(queries), not O(K). The gradient of the
//! queue block flows back to the queries' owners with one reduce-scatter.

use super::comm::{all_gather_buf, Comm};
use super::device_comm::DeviceComm;
use super::queue::QueueShard;
use crate::error::Result;
use crate::model::views::{full, full_mut};
use moco_kernels::Backend;

/// The gradient of one term's (scaled) loss with respect to the local queries; the term's loss
/// itself is written to the device slot the caller hands in.
pub struct CtrOut<B: Backend> {
    /// d(grad_scale * loss)/dq, `[n, dim]`.
    pub dq: B::Buf,
}

/// Inputs of one contrastive term on one rank.
pub struct CtrIn<'a, B: Backend> {
    /// Local L2-normalised queries `[n, dim]`.
    pub q: &'a B::Buf,
    /// L2-normalised keys of every rank, in rank order `[keys_per_rank*world, dim]`.
    pub k_all: &'a B::Buf,
    /// Keys each rank contributes to `k_all`: `n`, or the whole optimiser step's
    /// (accumulation x `n`) with effective-batch negatives.
    pub keys_per_rank: usize,
    /// Row of this micro-batch's first key within its rank's keys (0 without effective-batch
    /// negatives): local query i's positive is column `keys_per_rank*rank + key_offset + i`.
    pub key_offset: usize,
    /// Dataset index of every rank's queries, in rank order `[n*world]`, on the device
    /// (own-image masking; None when `mask_own` is off).
    pub q_idx_all: Option<&'a B::Buf>,
    /// Dataset index of every column of `k_all` with effective-batch negatives (None: the
    /// columns are the micro-batch's own images, whose only same-image key is the positive).
    /// A step can span an epoch boundary and hold an image twice; with `mask_own` its other key
    /// is masked out of the query's negatives, as the queue's are.
    pub k_idx_all: Option<&'a B::Buf>,
    pub n: usize,
    pub dim: usize,
    pub temperature: f32,
    pub mask_own: bool,
    /// Loss scale (AMP) folded into the gradient.
    pub grad_scale: f32,
}

/// Every rank's fp32 `buf` in rank order, through the host `Comm` (world > 1 only: a single
/// rank keeps its buffer and needs no exchange). fp32 on purpose: the (max, sum-exp) pairs and
/// the log-sum-exp must not be rounded to the activation precision on the way.
fn all_gather_f32<B: Backend>(be: &B, comm: &dyn Comm, buf: &B::Buf) -> Result<Vec<f32>> {
    let send = be.to_host(buf)?;
    let mut recv = vec![0.0f32; send.len() * comm.world()];
    comm.all_gather(&send, &mut recv)?;
    Ok(recv)
}

/// One term: its mean loss times 2T goes to `loss_out` (one fp32 element, on the device), and
/// the gradient with respect to the local queries is returned. With one rank nothing is read
/// back to the host. With several, the gathered queries, the pairs, the log-sum-exp and the
/// queue gradient go over `dev` when there is one (device buffers: no host wait), else over
/// the host `Comm` (one wait each). Both give the same bits: the values exchanged are the same
/// fp32 (or activation) numbers and both collectives sum in rank order (NCCL: two ranks, or the
/// emulator; see DESIGN.md on NCCL's reduction order beyond two).
pub fn contrastive<B: Backend>(
    be: &B,
    comm: &dyn Comm,
    dev: Option<&dyn DeviceComm<B>>,
    inp: &CtrIn<'_, B>,
    queue: Option<&QueueShard<B>>,
    loss_out: B::ViewMut<'_>,
) -> Result<CtrOut<B>> {
    let (n, d) = (inp.n, inp.dim);
    let (rank, world) = (comm.rank(), comm.world());
    let nw = n * world;
    // Columns of the batch block: every rank's keys (more than its queries with effective-batch
    // negatives, where the other micro-batches' keys are negatives too).
    let nk = inp.keys_per_rank * world;
    let inv_t = 1.0 / inp.temperature;
    let labels: Vec<i32> = (0..n).map(|i| (i + inp.key_offset + inp.keys_per_rank * rank) as i32).collect();
    // (max, sum-exp) of each local row per block of columns, [parts][n]: the batch block, then
    // every rank's queue shard in rank order (the order the log-sum-exp combines them in).
    let parts = 1 + if queue.is_some() { world } else { 0 };
    let mut maxes = be.zeros_master(parts * n)?;
    let mut sums = be.zeros_master(parts * n)?;

    // Batch block: local queries against every rank's keys.
    let mut logits_b = be.zeros_master(n * nk)?;
    be.linear_fwd(n, d, nk, full::<B>(inp.q), full::<B>(inp.k_all), full_mut::<B>(&mut logits_b));
    be.scale(full_mut::<B>(&mut logits_b), inv_t);
    if let (true, Some(q_idx), Some(k_idx)) = (inp.mask_own, inp.q_idx_all, inp.k_idx_all) {
        // From the device-side indices; the positive column keeps its logit.
        let own = B::view(q_idx, n * rank..n * (rank + 1));
        let first = inp.key_offset + inp.keys_per_rank * rank;
        be.mask_own_image(n, nk, own, B::view(k_idx, 0..nk), Some(first), full_mut::<B>(&mut logits_b));
    }
    be.row_max_sumexp(
        n,
        nk,
        full::<B>(&logits_b),
        B::view_mut(&mut maxes, 0..n),
        B::view_mut(&mut sums, 0..n),
    );
    let mut pos = be.zeros_master(n)?;
    be.gather_cols(n, nk, full::<B>(&logits_b), &labels, full_mut::<B>(&mut pos));

    // Queue block: every rank's queries against this rank's shard.
    let shard_part = match queue {
        Some(qs) => {
            let q_all = match dev {
                Some(dc) if world > 1 => dc.all_gather(be, inp.q)?,
                _ => all_gather_buf(be, comm, inp.q)?,
            };
            let mut logits_q = be.zeros_master(nw * qs.rows)?;
            be.linear_fwd(
                nw,
                d,
                qs.rows,
                full::<B>(&q_all),
                full::<B>(&qs.keys),
                full_mut::<B>(&mut logits_q),
            );
            be.scale(full_mut::<B>(&mut logits_q), inv_t);
            if let (true, Some(q_idx)) = (inp.mask_own, inp.q_idx_all) {
                // Every gathered query against the shard's device-side row indices.
                be.mask_own_image(
                    nw,
                    qs.rows,
                    full::<B>(q_idx),
                    full::<B>(&qs.idx),
                    None,
                    full_mut::<B>(&mut logits_q),
                );
            }
            if world == 1 {
                let (mv, sv) = (B::view_mut(&mut maxes, n..2 * n), B::view_mut(&mut sums, n..2 * n));
                be.row_max_sumexp(nw, qs.rows, full::<B>(&logits_q), mv, sv);
            } else {
                // Pairs for all nw gathered rows; each rank takes its own rows from every shard.
                let mut shard = be.zeros_master(2 * nw)?;
                {
                    let mut mq = be.zeros_master(nw)?;
                    let mut sq = be.zeros_master(nw)?;
                    be.row_max_sumexp(
                        nw,
                        qs.rows,
                        full::<B>(&logits_q),
                        full_mut::<B>(&mut mq),
                        full_mut::<B>(&mut sq),
                    );
                    be.copy(full::<B>(&mq), B::view_mut(&mut shard, 0..nw));
                    be.copy(full::<B>(&sq), B::view_mut(&mut shard, nw..2 * nw));
                }
                if let Some(dc) = dev {
                    // The same selection as below, by device copies out of the gathered pairs.
                    let all = dc.all_gather_f32(be, &shard)?;
                    for r in 0..world {
                        let own = r * 2 * nw + n * rank;
                        let to = n + r * n..n + (r + 1) * n;
                        be.copy(B::view(&all, own..own + n), B::view_mut(&mut maxes, to.clone()));
                        be.copy(B::view(&all, own + nw..own + nw + n), B::view_mut(&mut sums, to));
                    }
                } else {
                    let all = all_gather_f32(be, comm, &shard)?;
                    let (mut m_host, mut s_host) =
                        (Vec::with_capacity(world * n), Vec::with_capacity(world * n));
                    for r in 0..world {
                        let own = r * 2 * nw + n * rank;
                        m_host.extend_from_slice(&all[own..own + n]);
                        s_host.extend_from_slice(&all[own + nw..own + nw + n]);
                    }
                    be.write(&mut maxes, n, &m_host)?;
                    be.write(&mut sums, n, &s_host)?;
                }
            }
            Some((logits_q, q_all))
        }
        None => None,
    };

    // Log-sum-exp of each local row over the batch block and every shard, in rank order, and
    // the term's loss: mean of (lse - positive logit), times 2T.
    let mut lse = be.zeros_master(n)?;
    be.lse_combine(n, parts, full::<B>(&maxes), full::<B>(&sums), full_mut::<B>(&mut lse));
    be.xent_loss(n, full::<B>(&lse), full::<B>(&pos), 2.0 * inp.temperature, loss_out);

    // d(loss)/d(logit) = 2T/N * (softmax - onehot); logits carry 1/T, so d(loss)/dq =
    // 2/N * (softmax - onehot) . k. The AMP loss scale is folded in.
    let scale = inp.grad_scale * 2.0 / n as f32;
    let mut dlogits = be.alloc(n * nk)?;
    be.softmax_xent_bwd(
        n,
        nk,
        full::<B>(&logits_b),
        full::<B>(&lse),
        &labels,
        scale,
        full_mut::<B>(&mut dlogits),
    );
    let mut dq = be.alloc(n * d)?;
    be.linear_bwd_data(n, d, nk, full::<B>(&dlogits), full::<B>(inp.k_all), full_mut::<B>(&mut dq));
    drop(dlogits);

    if let (Some(qs), Some((logits_q, _))) = (queue, shard_part) {
        let lse_all = match dev {
            _ if world == 1 => lse,
            Some(dc) => dc.all_gather_f32(be, &lse)?,
            None => be.from_host(&all_gather_f32(be, comm, &lse)?)?,
        };
        let none = vec![-1i32; nw];
        let mut dl = be.alloc(nw * qs.rows)?;
        be.softmax_xent_bwd(
            nw,
            qs.rows,
            full::<B>(&logits_q),
            full::<B>(&lse_all),
            &none,
            scale,
            full_mut::<B>(&mut dl),
        );
        let mut dq_all = be.alloc(nw * d)?;
        be.linear_bwd_data(nw, d, qs.rows, full::<B>(&dl), full::<B>(&qs.keys), full_mut::<B>(&mut dq_all));
        if world == 1 {
            // This rank owns every gathered row: its shard's contribution is the whole sum.
            be.add_inplace(full::<B>(&dq_all), full_mut::<B>(&mut dq));
        } else if let Some(dc) = dev {
            // As below on device buffers: summed in fp32 (not in the activation precision), then
            // stored in an activation buffer as the upload below stores it.
            let mut send = be.zeros_master(nw * d)?;
            be.copy(full::<B>(&dq_all), full_mut::<B>(&mut send));
            drop(dq_all);
            let mine32 = dc.reduce_scatter_sum_f32(be, &send)?;
            let mut mine = be.alloc(n * d)?;
            be.copy(full::<B>(&mine32), full_mut::<B>(&mut mine));
            be.add_inplace(full::<B>(&mine), full_mut::<B>(&mut dq));
        } else {
            // Sum every shard's contribution for each query row and hand the rows to their owner.
            let send = be.to_host(&dq_all)?;
            let mut mine = vec![0.0f32; n * d];
            comm.reduce_scatter_sum(&send, &mut mine)?;
            let mine = be.act_from_host(&mine)?;
            be.add_inplace(full::<B>(&mine), full_mut::<B>(&mut dq));
        }
    }
    Ok(CtrOut { dq })
}
