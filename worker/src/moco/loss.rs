//! The contrastive loss of one term, ctr(q, k), with the queue sharded over ranks.
//!
//! logits = [q . k_all^T | q . queue^T] / T; label of local row i = i + N*rank; loss = mean
//! cross-entropy * 2T (MOCO.md, "Loss"). The queue block is computed shard-locally for the
//! gathered queries of all ranks; each rank contributes a (max, sum-exp) pair per query row and
//! the pairs are combined in rank order into one log-sum-exp (a distributed log-sum-exp), so no
//! rank holds the whole queue and the traffic is O(queries), not O(K). The gradient of the
//! queue block flows back to the queries' owners with one reduce-scatter.

use super::comm::{all_gather_buf, Comm};
use super::queue::QueueShard;
use crate::error::Result;
use crate::model::views::{full, full_mut};
use moco_kernels::Backend;

/// Loss of one term and the gradient of the (scaled) loss with respect to the local queries.
pub struct CtrOut<B: Backend> {
    /// Mean over the local rows, times 2T.
    pub loss: f32,
    /// d(grad_scale * loss)/dq, `[n, dim]`.
    pub dq: B::Buf,
}

/// Inputs of one contrastive term on one rank.
pub struct CtrIn<'a, B: Backend> {
    /// Local L2-normalised queries `[n, dim]`.
    pub q: &'a B::Buf,
    /// L2-normalised keys of every rank, in rank order `[n*world, dim]`.
    pub k_all: &'a B::Buf,
    /// Dataset index of every rank's queries, in rank order `[n*world]` (own-image masking).
    pub q_idx_all: &'a [i64],
    pub n: usize,
    pub dim: usize,
    pub temperature: f32,
    pub mask_own: bool,
    /// Loss scale (AMP) folded into the gradient.
    pub grad_scale: f32,
}

/// (max, sum of exp(x - max)) of a set of (max, sum) pairs; -inf maxima contribute nothing.
fn combine(pairs: impl Iterator<Item = (f32, f32)>) -> f32 {
    let pairs: Vec<(f32, f32)> = pairs.filter(|(m, _)| *m != f32::NEG_INFINITY).collect();
    let mx = pairs.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
    if mx == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    // Accumulate in f64 in a fixed order (batch block first, then shards in rank order).
    let s: f64 = pairs.iter().map(|&(m, s)| s as f64 * ((m - mx) as f64).exp()).sum();
    mx + s.ln() as f32
}

pub fn contrastive<B: Backend>(
    be: &B,
    comm: &dyn Comm,
    inp: &CtrIn<'_, B>,
    queue: Option<&QueueShard<B>>,
) -> Result<CtrOut<B>> {
    let (n, d) = (inp.n, inp.dim);
    let (rank, world) = (comm.rank(), comm.world());
    let nw = n * world;
    let inv_t = 1.0 / inp.temperature;
    let labels: Vec<i32> = (0..n).map(|i| (i + n * rank) as i32).collect();

    // Batch block: local queries against every rank's keys.
    let mut logits_b = be.zeros_master(n * nw)?;
    be.linear_fwd(n, d, nw, full::<B>(inp.q), full::<B>(inp.k_all), full_mut::<B>(&mut logits_b));
    be.scale(full_mut::<B>(&mut logits_b), inv_t);
    let (mb, sb) = be.row_max_sumexp(n, nw, full::<B>(&logits_b));
    let pos = be.gather_cols(n, nw, full::<B>(&logits_b), &labels);

    // Queue block: every rank's queries against this rank's shard.
    let shard_part = match queue {
        Some(qs) => {
            let q_all = all_gather_buf(be, comm, inp.q)?;
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
            if inp.mask_own {
                let cells = qs.own_image_cells(inp.q_idx_all);
                be.mask_cells(qs.rows, full_mut::<B>(&mut logits_q), &cells);
            }
            let (mq, sq) = be.row_max_sumexp(nw, qs.rows, full::<B>(&logits_q));
            let mut pairs: Vec<f32> = mq.into_iter().chain(sq).collect();
            let mut all_pairs = vec![0.0f32; pairs.len() * world];
            comm.all_gather(&pairs, &mut all_pairs)?;
            pairs.clear();
            Some((logits_q, all_pairs, q_all))
        }
        None => None,
    };

    // Log-sum-exp of each local row over the batch block and every shard, in rank order.
    let lse: Vec<f32> = (0..n)
        .map(|i| {
            let g = n * rank + i;
            let shards = shard_part.iter().flat_map(|(_, all, _)| {
                (0..world).map(move |r| (all[r * 2 * nw + g], all[r * 2 * nw + nw + g]))
            });
            combine(std::iter::once((mb[i], sb[i])).chain(shards))
        })
        .collect();
    let loss_rows: f64 = lse.iter().zip(&pos).map(|(l, p)| (*l - *p) as f64).sum();
    let loss = (loss_rows / n as f64) as f32 * 2.0 * inp.temperature;

    // d(loss)/d(logit) = 2T/N * (softmax - onehot); logits carry 1/T, so d(loss)/dq =
    // 2/N * (softmax - onehot) . k. The AMP loss scale is folded in.
    let scale = inp.grad_scale * 2.0 / n as f32;
    let mut dlogits = be.zeros(n * nw)?;
    be.softmax_xent_bwd(n, nw, full::<B>(&logits_b), &lse, &labels, scale, full_mut::<B>(&mut dlogits));
    let mut dq = be.zeros(n * d)?;
    be.linear_bwd_data(n, d, nw, full::<B>(&dlogits), full::<B>(inp.k_all), full_mut::<B>(&mut dq));
    drop(dlogits);

    if let (Some(qs), Some((logits_q, _, _))) = (queue, shard_part) {
        let mut lse_all = vec![0.0f32; nw];
        comm.all_gather(&lse, &mut lse_all)?;
        let none = vec![-1i32; nw];
        let mut dl = be.zeros(nw * qs.rows)?;
        be.softmax_xent_bwd(
            nw,
            qs.rows,
            full::<B>(&logits_q),
            &lse_all,
            &none,
            scale,
            full_mut::<B>(&mut dl),
        );
        let mut dq_all = be.zeros(nw * d)?;
        be.linear_bwd_data(nw, d, qs.rows, full::<B>(&dl), full::<B>(&qs.keys), full_mut::<B>(&mut dq_all));
        // Sum every shard's contribution for each query row and hand the rows to their owner.
        let send = be.to_host(&dq_all)?;
        let mut mine = vec![0.0f32; n * d];
        comm.reduce_scatter_sum(&send, &mut mine)?;
        let mine = be.act_from_host(&mine)?;
        be.add_inplace(full::<B>(&mine), full_mut::<B>(&mut dq));
    }
    Ok(CtrOut { loss, dq })
}
