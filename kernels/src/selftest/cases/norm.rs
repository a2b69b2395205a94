//! Batch norm (statistics, apply with and without affine / ReLU, backward reduce and apply,
//! running statistics) and L2 normalisation (forward, backward, a zero row).

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full, full_mut, round_f16, Cx, Tol};

/// fp32 statistics of identical inputs: Welford with a chunked merge on the GPU, the CPU's
/// own order; both are accurate to a few fp32 ulps of the statistics.
const STATS: Tol = Tol::both(1e-5);
/// (x - mean) * rsqrt(var + eps) * gamma + beta: rsqrtf is within 2 ulps; the fp16 output is
/// rounded once (4.9e-4).
const APPLY: Tol = Tol::new(2e-6, 1e-3);
/// The backward reduction sums m products in fp32 in another order (relative to the RMS of
/// the per-channel sums).
const REDUCE: Tol = Tol::both(2e-5);
/// dx subtracts per-channel means of dy from dy: cancellation makes it a few ulps worse than
/// the forward; fp16 rounds the result once.
const BWD_APPLY: Tol = Tol::new(1e-5, 1e-3);
/// (1 - m) r + m s with an FMA on the GPU.
const RUNNING: Tol = Tol::both(1e-6);
/// The groups' average: the same f32 additions of IEEE quotients in the same order on both
/// sides, so only a reordering could differ (one rounding of the result).
const GROUP_MEAN: Tol = Tol::both(1e-7);
/// SyncBN's moments: each operation rounded once, as the reference does: bit for bit.
const MOMENTS: Tol = Tol::both(0.0);
/// A row norm in fp32, then a scaling: a few ulps; fp16 output rounded once.
const L2: Tol = Tol::new(2e-6, 1e-3);
/// <y, dy> cancels; fp16 output rounded once.
const L2_BWD: Tol = Tol::new(1e-5, 1e-3);

fn bn_stats<X: Backend>(be: &X, m: usize, c: usize, x: &[f32]) -> Result<Vec<f32>> {
    let xb = be.act_from_host(x)?;
    let (mut mean, mut var) = (be.zeros_master(c)?, be.zeros_master(c)?);
    be.bn_stats(m, c, full::<X>(&xb), full_mut::<X>(&mut mean), full_mut::<X>(&mut var));
    let mut out = be.to_host(&mean)?;
    out.extend(be.to_host(&var)?);
    Ok(out)
}

/// `affine`: 0 = none, 1 = fp32 gamma/beta, 2 = gamma/beta read from an activation buffer
/// (the fp16 weight copy under AMP).
#[allow(clippy::too_many_arguments)]
fn bn_apply<X: Backend>(
    be: &X,
    m: usize,
    c: usize,
    x: &[f32],
    stats: &[f32],
    gb: &[f32],
    affine: u8,
    relu: bool,
) -> Result<Vec<f32>> {
    let xb = be.act_from_host(x)?;
    let (mean, var) = (be.from_host(&stats[..c])?, be.from_host(&stats[c..])?);
    let gbb = if affine == 2 { be.act_from_host(gb)? } else { be.from_host(gb)? };
    let gamma = (affine > 0).then(|| X::view(&gbb, 0..c));
    let beta = (affine > 0).then(|| X::view(&gbb, c..2 * c));
    let mut y = be.zeros(m * c)?;
    be.bn_apply(
        m,
        c,
        full::<X>(&xb),
        full::<X>(&mean),
        full::<X>(&var),
        1e-5,
        gamma,
        beta,
        relu,
        full_mut::<X>(&mut y),
    );
    be.to_host(&y)
}

fn bn_bwd_reduce<X: Backend>(
    be: &X,
    m: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
    stats: &[f32],
) -> Result<Vec<f32>> {
    let (xb, dyb) = (be.act_from_host(x)?, be.act_from_host(dy)?);
    let (mean, var) = (be.from_host(&stats[..c])?, be.from_host(&stats[c..])?);
    let (mut s1, mut s2) = (be.zeros_master(c)?, be.zeros_master(c)?);
    be.bn_bwd_reduce(
        m,
        c,
        full::<X>(&xb),
        full::<X>(&dyb),
        full::<X>(&mean),
        full::<X>(&var),
        1e-5,
        full_mut::<X>(&mut s1),
        full_mut::<X>(&mut s2),
    );
    let mut out = be.to_host(&s1)?;
    out.extend(be.to_host(&s2)?);
    Ok(out)
}

/// `sums` = [sum_dy, sum_dy_xhat], `count` may exceed m (SyncBN).
#[allow(clippy::too_many_arguments)]
fn bn_bwd_apply<X: Backend>(
    be: &X,
    m: usize,
    c: usize,
    count: usize,
    x: &[f32],
    dy: &[f32],
    stats: &[f32],
    gamma: Option<&[f32]>,
    sums: &[f32],
) -> Result<Vec<f32>> {
    let (xb, dyb) = (be.act_from_host(x)?, be.act_from_host(dy)?);
    let (mean, var) = (be.from_host(&stats[..c])?, be.from_host(&stats[c..])?);
    let gb = gamma.map(|g| be.from_host(g)).transpose()?;
    let (s1, s2) = (be.from_host(&sums[..c])?, be.from_host(&sums[c..])?);
    let mut dx = be.zeros(m * c)?;
    be.bn_bwd_apply(
        m,
        c,
        count,
        full::<X>(&xb),
        full::<X>(&dyb),
        full::<X>(&mean),
        full::<X>(&var),
        1e-5,
        gb.as_ref().map(|g| full::<X>(g)),
        full::<X>(&s1),
        full::<X>(&s2),
        full_mut::<X>(&mut dx),
    );
    be.to_host(&dx)
}

fn bn_running<X: Backend>(
    be: &X,
    c: usize,
    stats: &[f32],
    running: &[f32],
    count: usize,
) -> Result<Vec<f32>> {
    let (mean, var) = (be.from_host(&stats[..c])?, be.from_host(&stats[c..])?);
    let mut r = be.from_host(running)?;
    be.bn_running_update(c, full::<X>(&mean), full::<X>(&var), count, 0.1, full_mut::<X>(&mut r));
    be.to_host(&r)
}

fn group_mean<X: Backend>(be: &X, groups: usize, c: usize, x: &[f32]) -> Result<Vec<f32>> {
    let xb = be.from_host(x)?;
    let mut y = be.zeros_master(c)?;
    be.bn_group_mean(groups, c, full::<X>(&xb), full_mut::<X>(&mut y));
    be.to_host(&y)
}

/// SyncBN's pack, then the unpack of `world` ranks' packs summed (the collective's sum is made
/// on the host here: only the two kernels are under test).
fn moments<X: Backend>(be: &X, c: usize, world: usize, stats: &[f32]) -> Result<[Vec<f32>; 3]> {
    let mut packs = vec![0.0f32; 2 * c];
    let mut first = Vec::new();
    for r in 0..world {
        let s = &stats[r * 2 * c..(r + 1) * 2 * c];
        let (mean, var) = (be.from_host(&s[..c])?, be.from_host(&s[c..])?);
        let mut packed = be.zeros_master(2 * c)?;
        be.bn_moments_pack(c, full::<X>(&mean), full::<X>(&var), full_mut::<X>(&mut packed));
        let p = be.to_host(&packed)?;
        packs.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        if r == 0 {
            first = p;
        }
    }
    let summed = be.from_host(&packs)?;
    let (mut mean, mut var) = (be.zeros_master(c)?, be.zeros_master(c)?);
    be.bn_moments_unpack(c, world, full::<X>(&summed), full_mut::<X>(&mut mean), full_mut::<X>(&mut var));
    Ok([first, be.to_host(&mean)?, be.to_host(&var)?])
}

fn l2_fwd<X: Backend>(be: &X, n: usize, d: usize, x: &[f32]) -> Result<[Vec<f32>; 2]> {
    let xb = be.act_from_host(x)?;
    let (mut y, mut norm) = (be.zeros(n * d)?, be.zeros_master(n)?);
    be.l2norm_fwd(n, d, full::<X>(&xb), full_mut::<X>(&mut y), full_mut::<X>(&mut norm));
    Ok([be.to_host(&y)?, be.to_host(&norm)?])
}

fn l2_bwd<X: Backend>(be: &X, n: usize, d: usize, y: &[f32], norm: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
    let (yb, nb, dyb) = (be.act_from_host(y)?, be.from_host(norm)?, be.act_from_host(dy)?);
    let mut dx = be.zeros(n * d)?;
    be.l2norm_bwd(n, d, full::<X>(&yb), full::<X>(&nb), full::<X>(&dyb), full_mut::<X>(&mut dx));
    be.to_host(&dx)
}

/// Exact per-channel mean and biased variance (f64), the inputs every apply case shares.
fn host_stats(m: usize, c: usize, x: &[f32]) -> Vec<f32> {
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    for row in x.chunks(c) {
        for (k, &v) in row.iter().enumerate() {
            mean[k] += v as f64;
        }
    }
    mean.iter_mut().for_each(|v| *v /= m as f64);
    for row in x.chunks(c) {
        for (k, &v) in row.iter().enumerate() {
            var[k] += (v as f64 - mean[k]).powi(2);
        }
    }
    mean.iter().map(|&v| v as f32).chain(var.iter().map(|&v| (v / m as f64) as f32)).collect()
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    // A conv-output BN (channels not a multiple of the 32-channel tile in the small case) and
    // a BN1d of the projector (few rows, many channels).
    let shapes = [(cx.size(2 * 6 * 6, 2 * 28 * 28), cx.size(40, 256)), (cx.size(8, 64), cx.size(64, 4096))];
    for (m, c) in shapes {
        let dims = format!("[{m}, {c}]");
        // A mean well away from 0 checks that the variance does not cancel catastrophically.
        let x = cx.gen.acts(m * c, 3.0, 2.0);
        let (r, cand) = both!(cx, bn_stats(m, c, &x));
        cx.compare(format!("bn_stats {dims}"), STATS, &r, &cand);

        let stats = host_stats(m, c, &x);
        let mut gb = cx.gen.normals(c, 1.0, 0.2);
        gb.extend(cx.gen.normals(c, 0.0, 0.2));
        let gb_act = round_f16(&gb);
        for (affine, relu, label) in [
            (2u8, true, "affine(act gamma/beta)+relu"),
            (1, false, "affine"),
            (0, true, "no affine+relu"),
            (0, false, "plain"),
        ] {
            let gbv = if affine == 2 { &gb_act } else { &gb };
            let (r, cand) = both!(cx, bn_apply(m, c, &x, &stats, gbv, affine, relu));
            cx.compare(format!("bn_apply {label} {dims}"), APPLY, &r, &cand);
        }

        let dy = cx.gen.acts(m * c, 0.1, 1.0);
        let (r, cand) = both!(cx, bn_bwd_reduce(m, c, &x, &dy, &stats));
        cx.compare(format!("bn_bwd_reduce {dims}"), REDUCE, &r, &cand);
        let sums = r;
        let gamma = &gb[..c];
        for (count, g, label) in [(m, Some(gamma), "gamma"), (2 * m, None, "no gamma, SyncBN count 2m")] {
            let (r, cand) = both!(cx, bn_bwd_apply(m, c, count, &x, &dy, &stats, g, &sums));
            cx.compare(format!("bn_bwd_apply {label} {dims}"), BWD_APPLY, &r, &cand);
        }

        let mut running = cx.gen.normals(c, 0.0, 1.0);
        running.extend(cx.gen.normals(c, 1.0, 0.1));
        let (r, cand) = both!(cx, bn_running(c, &stats, &running, m));
        cx.compare(format!("bn_running_update {dims}"), RUNNING, &r, &cand);

        // Shuffle BN's 2 groups and an odd count (whose 1/g is not exact in binary).
        for groups in [2, 3] {
            let x = cx.gen.normals(groups * c, 0.5, 2.0);
            let (r, cand) = both!(cx, group_mean(groups, c, &x));
            cx.compare(format!("bn_group_mean {groups} groups {dims}"), GROUP_MEAN, &r, &cand);
        }

        // SyncBN's moments over 2 and 3 ranks (per rank: c means, then c variances). Channel 0
        // has the same mean and no variance on every rank: its global variance is a difference
        // of two nearly equal terms, where rounding can go below zero and the clamp acts.
        for world in [2, 3] {
            let mut stats = Vec::new();
            for _ in 0..world {
                stats.extend(cx.gen.normals(c, 0.5, 2.0));
                stats.extend(cx.gen.normals(c, 1.0, 0.5).iter().map(|v| v.abs()));
            }
            for r in 0..world {
                stats[r * 2 * c] = 3.1;
                stats[r * 2 * c + c] = 0.0;
            }
            let (r, cand) = both!(cx, moments(c, world, &stats));
            cx.compare(format!("bn_moments_pack {world} ranks {dims}"), MOMENTS, &r[0], &cand[0]);
            cx.compare(format!("bn_moments_unpack mean {world} ranks {dims}"), MOMENTS, &r[1], &cand[1]);
            cx.compare(format!("bn_moments_unpack var {world} ranks {dims}"), MOMENTS, &r[2], &cand[2]);
        }
    }

    let (n, d) = (cx.size(5, 64), cx.size(16, 256));
    let mut x = cx.gen.acts(n * d, 0.0, 1.0);
    x[d..2 * d].fill(0.0); // row 1 is zero: its norm is clamped to 1e-12
    let (r, cand) = both!(cx, l2_fwd(n, d, &x));
    cx.compare(format!("l2norm_fwd y [{n}, {d}] (zero row)"), L2, &r[0], &cand[0]);
    cx.compare(format!("l2norm_fwd norm [{n}, {d}]"), L2, &r[1], &cand[1]);
    // The backward gets the reference's forward outputs; the zero row gets dy = 0 (a nonzero
    // dy there is dy * 1e12, beyond fp16's range by design of the clamp).
    let y = round_f16(&r[0]);
    let mut dy = cx.gen.acts(n * d, 0.0, 1.0);
    dy[d..2 * d].fill(0.0);
    let (r, cand) = both!(cx, l2_bwd(n, d, &y, &r[1], &dy));
    cx.compare(format!("l2norm_bwd [{n}, {d}]"), L2_BWD, &r, &cand);
    Ok(())
}
