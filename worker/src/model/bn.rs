//! Batch norm as the model runs it: statistics per mode (local, synchronised across ranks, or
//! over sample groups for the key-side shuffle), running-stat updates, and the backward.
//!
//! Statistics of one layer are a few hundred floats; merging them across ranks goes through
//! `StatSync` on a small fp32 buffer of the backend (a device collective where the run has one,
//! else the host `Comm`); the packing and the global moments are computed by the backend, so
//! with a device collective SyncBN makes no host round trip.

use super::topology::BnSpec;
use super::views::{full, full_mut};
use crate::error::{Result, WorkerError};
use moco_kernels::Backend;

/// BN epsilon and running-stat momentum (torchvision defaults).
pub const BN_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

/// Sums small fp32 buffers of the backend over all ranks (SyncBN). Implemented by the
/// collective layer.
pub trait StatSync<B: Backend> {
    fn world(&self) -> usize;
    /// Element-wise sum over ranks, in rank order, result on every rank, in place.
    fn sum(&self, be: &B, values: &mut B::Buf) -> Result<()>;
}

/// How a BN layer takes its statistics in one forward pass.
pub enum BnStats<'a, B: Backend> {
    /// Over this rank's batch.
    Local,
    /// Over every rank's batch (SyncBN).
    Sync(&'a dyn StatSync<B>),
    /// Separately over `G` contiguous groups of samples (shuffle BN on the key side; the caller
    /// permutes samples first). Forward only: nothing is saved for a backward.
    Groups(usize),
    /// Evaluation mode: normalise with the running statistics, which are not updated.
    /// Forward only.
    Running,
}

// By hand: a derive would require `B: Copy`, and only a reference is copied.
impl<B: Backend> Clone for BnStats<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for BnStats<'_, B> {}

impl<B: Backend> BnStats<'_, B> {
    /// Rows the statistics are taken over, for a local batch of `m` rows.
    fn count(&self, m: usize) -> usize {
        match self {
            BnStats::Local => m,
            BnStats::Sync(s) => m * s.world(),
            BnStats::Groups(g) => m / g,
            BnStats::Running => m,
        }
    }
}

/// Batch statistics of one BN layer kept for its backward (and for recompute).
pub struct BnSaved<B: Backend> {
    pub mean: B::Buf,
    pub var: B::Buf,
    /// Rows the statistics were taken over (all ranks under SyncBN).
    pub count: usize,
}

/// Training-mode forward of one BN layer over `x` = `[m, c]` rows, writing `y`.
/// `running` (the encoder's running-stat buffer) is updated unless None (recompute passes).
/// `saved`: statistics from an earlier forward of the same input (recompute) — used as is.
#[allow(clippy::too_many_arguments)]
pub fn bn_forward<B: Backend>(
    be: &B,
    spec: &BnSpec,
    params: &B::Buf,
    running: Option<&mut B::Buf>,
    stats: BnStats<'_, B>,
    saved: Option<&BnSaved<B>>,
    m: usize,
    x: &B::Buf,
    relu: bool,
    y: &mut B::Buf,
    topo_params: &[super::topology::ParamSpec],
) -> Result<Option<BnSaved<B>>> {
    let c = spec.c;
    let gamma = spec.gamma.map(|i| B::view(params, topo_params[i].range()));
    let beta = spec.beta.map(|i| B::view(params, topo_params[i].range()));
    if let Some(s) = saved {
        be.bn_apply(
            m,
            c,
            full::<B>(x),
            full::<B>(&s.mean),
            full::<B>(&s.var),
            BN_EPS,
            gamma,
            beta,
            relu,
            full_mut::<B>(y),
        );
        return Ok(None);
    }
    match stats {
        BnStats::Running => {
            let run = running
                .ok_or_else(|| WorkerError::Numeric("eval-mode BN needs the running statistics".into()))?;
            let (mr, vr) =
                (spec.stats_offset..spec.stats_offset + c, spec.stats_offset + c..spec.stats_offset + 2 * c);
            be.bn_apply(
                m,
                c,
                full::<B>(x),
                B::view(run, mr),
                B::view(run, vr),
                BN_EPS,
                gamma,
                beta,
                relu,
                full_mut::<B>(y),
            );
            Ok(None)
        }
        BnStats::Groups(g) => {
            if g == 0 || !m.is_multiple_of(g) {
                return Err(WorkerError::Numeric(format!(
                    "shuffle BN: {m} rows do not split into {g} groups"
                )));
            }
            let rows = m / g;
            // Group gi's statistics are rows gi of [g, c] buffers; they stay on the device.
            let mut means = be.zeros_master(g * c)?;
            let mut vars = be.zeros_master(g * c)?;
            for gi in 0..g {
                let r = gi * rows * c..(gi + 1) * rows * c;
                let s = gi * c..(gi + 1) * c;
                be.bn_stats(
                    rows,
                    c,
                    B::view(x, r.clone()),
                    B::view_mut(&mut means, s.clone()),
                    B::view_mut(&mut vars, s.clone()),
                );
                be.bn_apply(
                    rows,
                    c,
                    B::view(x, r.clone()),
                    B::view(&means, s.clone()),
                    B::view(&vars, s),
                    BN_EPS,
                    spec.gamma.map(|i| B::view(params, topo_params[i].range())),
                    spec.beta.map(|i| B::view(params, topo_params[i].range())),
                    relu,
                    B::view_mut(y, r),
                );
            }
            if let Some(run) = running {
                // SplitBatchNorm: each group updates its own copy of the running stats from the
                // same start and the copies are averaged, i.e. the update uses the average of the
                // groups' means and of their unbiased variances. `bn_running_update` unbiases
                // with `rows`, so hand it the average of the biased variances.
                let mut mean = be.zeros_master(c)?;
                let mut var = be.zeros_master(c)?;
                be.bn_group_mean(g, c, full::<B>(&means), full_mut::<B>(&mut mean));
                be.bn_group_mean(g, c, full::<B>(&vars), full_mut::<B>(&mut var));
                let r = spec.stats_offset..spec.stats_offset + 2 * c;
                be.bn_running_update(
                    c,
                    full::<B>(&mean),
                    full::<B>(&var),
                    rows,
                    BN_MOMENTUM,
                    B::view_mut(run, r),
                );
            }
            Ok(None)
        }
        BnStats::Local | BnStats::Sync(_) => {
            let mut mean = be.zeros_master(c)?;
            let mut var = be.zeros_master(c)?;
            be.bn_stats(m, c, full::<B>(x), full_mut::<B>(&mut mean), full_mut::<B>(&mut var));
            if let BnStats::Sync(sync) = stats {
                sync_moments::<B>(be, sync, &mut mean, &mut var)?;
            }
            let count = stats.count(m);
            be.bn_apply(
                m,
                c,
                full::<B>(x),
                full::<B>(&mean),
                full::<B>(&var),
                BN_EPS,
                gamma,
                beta,
                relu,
                full_mut::<B>(y),
            );
            if let Some(run) = running {
                let r = spec.stats_offset..spec.stats_offset + 2 * c;
                be.bn_running_update(
                    c,
                    full::<B>(&mean),
                    full::<B>(&var),
                    count,
                    BN_MOMENTUM,
                    B::view_mut(run, r),
                );
            }
            Ok(Some(BnSaved { mean, var, count }))
        }
    }
}

/// Backward of one BN layer (after any ReLU mask has been applied to `dy`): accumulates
/// dgamma/dbeta into `grads` (local sums: the gradient all-reduce averages them later, as DDP
/// does with SyncBN) and writes dx.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward<B: Backend>(
    be: &B,
    spec: &BnSpec,
    params: &B::Buf,
    grads: &mut B::Buf,
    stats: BnStats<'_, B>,
    saved: &BnSaved<B>,
    m: usize,
    x: &B::Buf,
    dy: &B::Buf,
    dx: &mut B::Buf,
    topo_params: &[super::topology::ParamSpec],
) -> Result<()> {
    let c = spec.c;
    let mut sum_dy = be.zeros_master(c)?;
    let mut sum_dy_xhat = be.zeros_master(c)?;
    be.bn_bwd_reduce(
        m,
        c,
        full::<B>(x),
        full::<B>(dy),
        full::<B>(&saved.mean),
        full::<B>(&saved.var),
        BN_EPS,
        full_mut::<B>(&mut sum_dy),
        full_mut::<B>(&mut sum_dy_xhat),
    );
    if let (Some(gi), Some(bi)) = (spec.gamma, spec.beta) {
        be.add_inplace(full::<B>(&sum_dy_xhat), B::view_mut(grads, topo_params[gi].range()));
        be.add_inplace(full::<B>(&sum_dy), B::view_mut(grads, topo_params[bi].range()));
    }
    if let BnStats::Sync(sync) = stats {
        let mut both = be.zeros_master(2 * c)?;
        be.copy(full::<B>(&sum_dy), B::view_mut(&mut both, 0..c));
        be.copy(full::<B>(&sum_dy_xhat), B::view_mut(&mut both, c..2 * c));
        sync.sum(be, &mut both)?;
        be.copy(B::view(&both, 0..c), full_mut::<B>(&mut sum_dy));
        be.copy(B::view(&both, c..2 * c), full_mut::<B>(&mut sum_dy_xhat));
    }
    let gamma = spec.gamma.map(|i| B::view(params, topo_params[i].range()));
    be.bn_bwd_apply(
        m,
        c,
        saved.count,
        full::<B>(x),
        full::<B>(dy),
        full::<B>(&saved.mean),
        full::<B>(&saved.var),
        BN_EPS,
        gamma,
        full::<B>(&sum_dy),
        full::<B>(&sum_dy_xhat),
        full_mut::<B>(dx),
    );
    Ok(())
}

/// Merge per-rank (mean, biased var) over equal-sized rank batches: the global mean is the
/// average of means, the global variance the average of (var + mean^2) minus mean^2.
fn sync_moments<B: Backend>(
    be: &B,
    sync: &dyn StatSync<B>,
    mean: &mut B::Buf,
    var: &mut B::Buf,
) -> Result<()> {
    let c = B::buf_len(mean);
    let mut packed = be.zeros_master(2 * c)?;
    be.bn_moments_pack(c, full::<B>(mean), full::<B>(var), full_mut::<B>(&mut packed));
    sync.sum(be, &mut packed)?;
    be.bn_moments_unpack(c, sync.world(), full::<B>(&packed), full_mut::<B>(mean), full_mut::<B>(var));
    Ok(())
}
