//! Batch norm over `[m, c]` rows (NHWC activations with `m = n*h*w`, or linear features).
//!
//! Statistics and backward sums are two-pass and accumulate in f64 over a fixed split of the
//! rows (partials summed in chunk order), so they are accurate when |mean| >> std and
//! bit-identical on every machine. The elementwise passes run in f32 with per-channel
//! constants computed in f64.

use super::scratch::reduce_rows_per_chunk;
use super::simd::{avx2_fn, by_width};
use rayon::prelude::*;
use std::ops::Range;

/// Per-column f64 sums over the rows of an `[m, c]` matrix: `f(rows, partial)` adds rows
/// `rows` into `partial` (`width` values). Partials of a fixed row split are summed in order.
fn column_sums<F>(m: usize, c: usize, width: usize, f: F) -> Vec<f64>
where
    F: Fn(Range<usize>, &mut [f64]) + Sync,
{
    let per = reduce_rows_per_chunk(m, c);
    let partials: Vec<Vec<f64>> = (0..m.div_ceil(per))
        .into_par_iter()
        .map(|k| {
            let mut p = vec![0.0f64; width];
            f(k * per..m.min((k + 1) * per), &mut p);
            p
        })
        .collect();
    let mut total = vec![0.0f64; width];
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

fn inv_std(var: f32, eps: f32) -> f64 {
    1.0 / (var as f64 + eps as f64).sqrt()
}

/// ReLU that lets NaN through, so a non-finite activation stays visible downstream.
#[inline]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 || v.is_nan() {
        v
    } else {
        0.0
    }
}

avx2_fn! {
/// Per-channel mean and biased variance (divided by m) of x `[m, c]`; overwrites both.
pub fn bn_stats(m: usize, c: usize, x: &[f32], mean: &mut [f32], var: &mut [f32]) {
    assert!(m > 0, "bn_stats: no rows");
    assert_eq!(x.len(), m * c, "bn_stats: x is not [{m}, {c}]");
    assert!(mean.len() == c && var.len() == c, "bn_stats: mean/var must have {c} elements");
    if c == 0 {
        return;
    }
    let sums = column_sums(m, c, c, |rows, acc| {
        for row in x[rows.start * c..rows.end * c].chunks_exact(c) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64);
        }
    });
    let mu: Vec<f64> = sums.iter().map(|s| s / m as f64).collect();
    let sq = column_sums(m, c, c, |rows, acc| {
        for row in x[rows.start * c..rows.end * c].chunks_exact(c) {
            for ((a, v), u) in acc.iter_mut().zip(row).zip(&mu) {
                let d = *v as f64 - u;
                *a += d * d;
            }
        }
    });
    for ch in 0..c {
        mean[ch] = mu[ch] as f32;
        var[ch] = (sq[ch] / m as f64) as f32;
    }
}
}

avx2_fn! {
/// y = (x - mean) / sqrt(var + eps) * gamma + beta, then ReLU if `relu` (NaN passes through).
/// gamma/beta `None` = affine-free. y `[m, c]` is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn bn_apply(
    m: usize,
    c: usize,
    x: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    relu_out: bool,
    y: &mut [f32],
) {
    assert!(x.len() == m * c && y.len() == m * c, "bn_apply: x and y must be [{m}, {c}]");
    assert!(mean.len() == c && var.len() == c, "bn_apply: mean/var must have {c} elements");
    assert!(
        gamma.is_none_or(|g| g.len() == c) && beta.is_none_or(|b| b.len() == c),
        "bn_apply: gamma/beta length"
    );
    if m * c == 0 {
        return;
    }
    let scale: Vec<f32> =
        (0..c).map(|ch| (inv_std(var[ch], eps) * gamma.map_or(1.0, |g| g[ch] as f64)) as f32).collect();
    let shift: Vec<f32> = (0..c).map(|ch| beta.map_or(0.0, |b| b[ch])).collect();
    let per = reduce_rows_per_chunk(m, c);
    y.par_chunks_mut(per * c).zip(x.par_chunks(per * c)).for_each(|(yc, xc)| {
        by_width!(c, |w| {
            let (mean, scale, shift) = (&mean[..w], &scale[..w], &shift[..w]);
            for (yr, xr) in yc.chunks_exact_mut(w).zip(xc.chunks_exact(w)) {
                let per_channel = mean.iter().zip(scale).zip(shift);
                for ((y, &x), ((&mu, &sc), &sh)) in yr.iter_mut().zip(xr).zip(per_channel) {
                    let v = (x - mu) * sc + sh;
                    *y = if relu_out { relu(v) } else { v };
                }
            }
        })
    });
}
}

avx2_fn! {
/// sum_dy = sum over rows of dy; sum_dy_xhat = sum of dy * (x - mean) / sqrt(var + eps).
/// Both `[c]`, overwritten. (They are dbeta and dgamma.)
#[allow(clippy::too_many_arguments)]
pub fn bn_bwd_reduce(
    m: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    sum_dy: &mut [f32],
    sum_dy_xhat: &mut [f32],
) {
    assert!(x.len() == m * c && dy.len() == m * c, "bn_bwd_reduce: x and dy must be [{m}, {c}]");
    assert!(mean.len() == c && var.len() == c, "bn_bwd_reduce: mean/var must have {c} elements");
    assert!(sum_dy.len() == c && sum_dy_xhat.len() == c, "bn_bwd_reduce: outputs must have {c} elements");
    if c == 0 {
        return;
    }
    let sums = column_sums(m, c, 2 * c, |rows, acc| {
        let (a_dy, a_dyxc) = acc.split_at_mut(c);
        let span = rows.start * c..rows.end * c;
        for (xr, gr) in x[span.clone()].chunks_exact(c).zip(dy[span].chunks_exact(c)) {
            for (((a, b), (&g, &x)), &mu) in
                a_dy.iter_mut().zip(a_dyxc.iter_mut()).zip(gr.iter().zip(xr)).zip(mean)
            {
                let g = g as f64;
                *a += g;
                *b += g * (x as f64 - mu as f64);
            }
        }
    });
    for ch in 0..c {
        sum_dy[ch] = sums[ch] as f32;
        sum_dy_xhat[ch] = (sums[c + ch] * inv_std(var[ch], eps)) as f32;
    }
}
}

avx2_fn! {
/// dx = gamma * invstd * (dy - sum_dy / count - xhat * sum_dy_xhat / count), overwritten.
/// `count` is the number of rows the statistics came from (all ranks' rows under SyncBN).
#[allow(clippy::too_many_arguments)]
pub fn bn_bwd_apply(
    m: usize,
    c: usize,
    count: usize,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    gamma: Option<&[f32]>,
    sum_dy: &[f32],
    sum_dy_xhat: &[f32],
    dx: &mut [f32],
) {
    assert!(count > 0, "bn_bwd_apply: count must be positive");
    assert!(
        x.len() == m * c && dy.len() == m * c && dx.len() == m * c,
        "bn_bwd_apply: x, dy, dx must be [{m}, {c}]"
    );
    assert!(mean.len() == c && var.len() == c, "bn_bwd_apply: mean/var must have {c} elements");
    assert!(sum_dy.len() == c && sum_dy_xhat.len() == c, "bn_bwd_apply: sums must have {c} elements");
    assert!(gamma.is_none_or(|g| g.len() == c), "bn_bwd_apply: gamma length");
    if m * c == 0 {
        return;
    }
    let n = count as f64;
    let istd: Vec<f32> = (0..c).map(|ch| inv_std(var[ch], eps) as f32).collect();
    let k: Vec<f32> =
        (0..c).map(|ch| (inv_std(var[ch], eps) * gamma.map_or(1.0, |g| g[ch] as f64)) as f32).collect();
    let mean_dy: Vec<f32> = sum_dy.iter().map(|s| (*s as f64 / n) as f32).collect();
    let mean_dyxh: Vec<f32> = sum_dy_xhat.iter().map(|s| (*s as f64 / n) as f32).collect();
    let per = reduce_rows_per_chunk(m, c);
    dx.par_chunks_mut(per * c).zip(x.par_chunks(per * c)).zip(dy.par_chunks(per * c)).for_each(
        |((dxc, xc), dyc)| {
            by_width!(c, |w| {
                let (mean, istd, k) = (&mean[..w], &istd[..w], &k[..w]);
                let (mean_dy, mean_dyxh) = (&mean_dy[..w], &mean_dyxh[..w]);
                for ((dr, xr), gr) in dxc.chunks_exact_mut(w).zip(xc.chunks_exact(w)).zip(dyc.chunks_exact(w)) {
                    let per_channel = mean.iter().zip(istd).zip(k).zip(mean_dy.iter().zip(mean_dyxh));
                    for (((d, &x), &g), (((&mu, &is), &kc), (&mdy, &mdx))) in
                        dr.iter_mut().zip(xr).zip(gr).zip(per_channel)
                    {
                        let xhat = (x - mu) * is;
                        *d = kc * (g - mdy - xhat * mdx);
                    }
                }
            })
        },
    );
}
}

/// y `[c]` = the average over `groups` of x `[groups, c]`: f32, group order, each term x / groups
/// (the order the model used when it averaged shuffle-BN groups on the host).
pub fn bn_group_mean(groups: usize, c: usize, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), groups * c, "bn_group_mean: x must be [{groups}, {c}]");
    assert_eq!(y.len(), c, "bn_group_mean: y must have {c} elements");
    let g = groups as f32;
    for (ch, out) in y.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for k in 0..groups {
            acc += x[k * c + ch] / g;
        }
        *out = acc;
    }
}

/// SyncBN's exchange buffer: `packed` `[2c]` = `[mean, var + mean * mean]` (the arithmetic the
/// model did on the host before the moments stayed on the device).
pub fn bn_moments_pack(c: usize, mean: &[f32], var: &[f32], packed: &mut [f32]) {
    assert!(mean.len() == c && var.len() == c, "bn_moments_pack: mean and var must have {c} elements");
    assert_eq!(packed.len(), 2 * c, "bn_moments_pack: packed must have {} elements", 2 * c);
    let (pm, pv) = packed.split_at_mut(c);
    pm.copy_from_slice(mean);
    for ((p, &v), &m) in pv.iter_mut().zip(var).zip(mean) {
        *p = v + m * m;
    }
}

/// The global moments from `packed` summed over `world` ranks: mean = s / world, var =
/// max(s2 / world - mean^2, 0) (a NaN difference becomes 0, as `f32::max` makes it).
pub fn bn_moments_unpack(c: usize, world: usize, packed: &[f32], mean: &mut [f32], var: &mut [f32]) {
    assert_eq!(packed.len(), 2 * c, "bn_moments_unpack: packed must have {} elements", 2 * c);
    assert!(mean.len() == c && var.len() == c, "bn_moments_unpack: mean and var must have {c} elements");
    let w = world as f32;
    for ch in 0..c {
        let m = packed[ch] / w;
        mean[ch] = m;
        var[ch] = (packed[c + ch] / w - m * m).max(0.0);
    }
}

/// running = (1 - momentum) * running + momentum * batch stat, with the batch variance made
/// unbiased (var * count / (count - 1)) as PyTorch does; computed in f64. `running` is `[2c]`:
/// the running mean, then the running variance. With count = 1 (which PyTorch rejects in
/// training) the variance is used as it is rather than divided by zero.
pub fn bn_running_update(
    c: usize,
    mean: &[f32],
    var: &[f32],
    count: usize,
    momentum: f32,
    running: &mut [f32],
) {
    assert!(mean.len() == c && var.len() == c, "bn_running_update: mean/var must have {c} elements");
    assert_eq!(running.len(), 2 * c, "bn_running_update: running must be [2 * {c}]");
    let mo = momentum as f64;
    let unbias = if count > 1 { count as f64 / (count as f64 - 1.0) } else { 1.0 };
    let (rm, rv) = running.split_at_mut(c);
    for ch in 0..c {
        rm[ch] = (mo * mean[ch] as f64 + (1.0 - mo) * rm[ch] as f64) as f32;
        rv[ch] = (mo * var[ch] as f64 * unbias + (1.0 - mo) * rv[ch] as f64) as f32;
    }
}
