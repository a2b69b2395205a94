//! Optimiser pieces on flat fp32 buffers: norms, EMA, unscale with the inf/NaN verdict, and
//! the SGD / LARS / AdamW steps with PyTorch's exact operation order.
//!
//! Every update is elementwise in f32 with no fused multiply-adds (Rust never contracts), so
//! it is bit-identical on every machine; reductions use a fixed split summed in order.

use super::scratch::FLAT_CHUNK;
use super::simd::avx2_fn;
use rayon::prelude::*;

fn same_len(op: &str, a: usize, b: usize) {
    assert_eq!(a, b, "{op}: operands have {a} and {b} elements");
}

/// Sum in f64 of `f(i)` over fixed chunks of `len` elements, partials added in order.
fn chunked_sum(len: usize, f: impl Fn(std::ops::Range<usize>) -> f64 + Sync) -> f64 {
    let partials: Vec<f64> = (0..len.div_ceil(FLAT_CHUNK))
        .into_par_iter()
        .map(|k| f(k * FLAT_CHUNK..len.min((k + 1) * FLAT_CHUNK)))
        .collect();
    partials.iter().sum()
}

/// Sum of squares of x, in f64.
pub fn sumsq(x: &[f32]) -> f64 {
    chunked_sum(x.len(), |r| x[r].iter().map(|v| *v as f64 * *v as f64).sum())
}

/// Sum of squares of (y + alpha * x) in f64, the sum formed in f32 as the update would be:
/// LARS's |g + wd p|^2 with x = p, y = g, alpha = wd.
pub fn sumsq_axpy(alpha: f32, x: &[f32], y: &[f32]) -> f64 {
    same_len("sumsq_axpy", x.len(), y.len());
    chunked_sum(x.len(), |r| {
        x[r.clone()]
            .iter()
            .zip(&y[r])
            .map(|(x, y)| {
                let v = (y + alpha * x) as f64;
                v * v
            })
            .sum()
    })
}

avx2_fn! {
/// theta_k = m * theta_k + (1 - m) * theta_q.
pub fn ema(m: f32, theta_q: &[f32], theta_k: &mut [f32]) {
    same_len("ema", theta_q.len(), theta_k.len());
    let one_m = 1.0 - m;
    theta_k.par_chunks_mut(FLAT_CHUNK).zip(theta_q.par_chunks(FLAT_CHUNK)).for_each(|(k, q)| {
        k.iter_mut().zip(q).for_each(|(k, q)| *k = m * *k + one_m * q);
    });
}
}

avx2_fn! {
/// g *= inv_scale; true if any element was inf or NaN before or after the scaling.
///
/// A scale of exactly 1.0 (no loss scaling, one rank, one micro-batch: every CPU run without
/// AMP) only reads g: `v * 1.0` is `v` for every non-NaN v, and a NaN skips the step anyway.
/// That saves writing the whole gradient buffer back unchanged every step.
pub fn unscale_check(g: &mut [f32], inv_scale: f32) -> bool {
    if inv_scale == 1.0 {
        return g
            .par_chunks(FLAT_CHUNK)
            .map(|c| c.iter().fold(false, |bad, v| bad | !v.is_finite()))
            .reduce(|| false, |a, b| a || b);
    }
    g.par_chunks_mut(FLAT_CHUNK)
        .map(|c| {
            let mut bad = false;
            for v in c.iter_mut() {
                let after = *v * inv_scale;
                bad |= !v.is_finite() || !after.is_finite();
                *v = after;
            }
            bad
        })
        .reduce(|| false, |a, b| a || b)
}
}

avx2_fn! {
/// The momentum update shared by SGD and LARS: d = (g + wd p) * trust; mu = momentum mu + d;
/// p -= lr mu. `trust = None` skips the multiplication (plain SGD, bit-exact PyTorch).
fn momentum_step(
    lr: f32,
    momentum: f32,
    wd: f32,
    trust: Option<f32>,
    p: &mut [f32],
    g: &[f32],
    mu: &mut [f32],
) {
    same_len("momentum step", p.len(), g.len());
    same_len("momentum step", p.len(), mu.len());
    p.par_chunks_mut(FLAT_CHUNK).zip(g.par_chunks(FLAT_CHUNK)).zip(mu.par_chunks_mut(FLAT_CHUNK)).for_each(
        |((pc, gc), mc)| {
            for ((p, g), mu) in pc.iter_mut().zip(gc).zip(mc.iter_mut()) {
                let mut d = g + wd * *p;
                if let Some(t) = trust {
                    d *= t;
                }
                *mu = momentum * *mu + d;
                *p -= lr * *mu;
            }
        },
    );
}
}

/// PyTorch SGD (dampening 0, no Nesterov): d = g + wd p; mu = momentum mu + d; p -= lr mu.
/// PyTorch starts the momentum buffer at d on the first step; a zeroed mu gives the same.
pub fn sgd_step(lr: f32, momentum: f32, wd: f32, p: &mut [f32], g: &[f32], mu: &mut [f32]) {
    momentum_step(lr, momentum, wd, None, p, g, mu);
}

/// LARS with a precomputed trust ratio: d = (g + wd p) * trust; mu = momentum mu + d;
/// p -= lr mu (trust = 1 and wd = 0 for the tensors LARS excludes).
#[allow(clippy::too_many_arguments)]
pub fn lars_step(lr: f32, momentum: f32, wd: f32, trust: f32, p: &mut [f32], g: &[f32], mu: &mut [f32]) {
    momentum_step(lr, momentum, wd, Some(trust), p, g, mu);
}

avx2_fn! {
/// PyTorch AdamW (`torch.optim.AdamW`, single-tensor path), operation for operation:
/// ```text
/// p *= 1 - lr * wd
/// m.lerp_(g, 1 - beta1)                      # m + w (g - m), w = 1 - beta1 (< 0.5)
/// v = v * beta2 + (1 - beta2) * g * g        # mul_ then addcmul_
/// denom = sqrt(v) / sqrt(1 - beta2^step) + eps
/// p += (-lr / (1 - beta1^step)) * m / denom  # addcdiv_
/// ```
/// The scalars are formed in f64 and rounded to f32 once, as PyTorch's Python floats are
/// when they reach an f32 kernel. `step` is 1-based.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
    step: u64,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    assert!(step >= 1, "adamw_step: step is 1-based");
    same_len("adamw_step", p.len(), g.len());
    same_len("adamw_step", p.len(), m.len());
    same_len("adamw_step", p.len(), v.len());
    let t = i32::try_from(step).unwrap_or(i32::MAX);
    let (b1, b2) = (beta1 as f64, beta2 as f64);
    let decay = (1.0 - lr as f64 * wd as f64) as f32;
    let w = (1.0 - b1) as f32;
    let one_minus_w = 1.0 - w;
    let one_minus_b2 = (1.0 - b2) as f32;
    let neg_step_size = (-(lr as f64) / (1.0 - b1.powi(t))) as f32;
    let bc2_sqrt = (1.0 - b2.powi(t)).sqrt() as f32;
    p.par_chunks_mut(FLAT_CHUNK)
        .zip(g.par_chunks(FLAT_CHUNK))
        .zip(m.par_chunks_mut(FLAT_CHUNK))
        .zip(v.par_chunks_mut(FLAT_CHUNK))
        .for_each(|(((pc, gc), mc), vc)| {
            for (((p, &g), m), v) in pc.iter_mut().zip(gc).zip(mc.iter_mut()).zip(vc.iter_mut()) {
                *p *= decay;
                // ATen's lerp: self + w (end - self) for |w| < 0.5, else end - (end - self)(1 - w).
                *m = if w.abs() < 0.5 { *m + w * (g - *m) } else { g - (g - *m) * one_minus_w };
                *v *= beta2;
                *v += one_minus_b2 * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *p += neg_step_size * *m / denom;
            }
        });
}
}

/// LARS over the tensors of a flat buffer (tensor s: the next `tensors[s].0` elements), one
/// tensor at a time: an adapting tensor gets trust = eta |p| / |g + wd p| from f64 norms (1 when
/// either is 0) and decay wd; an excluded one trust 1 and no decay; then [`lars_step`].
#[allow(clippy::too_many_arguments)]
pub fn lars_step_all(
    lr: f32,
    momentum: f32,
    wd: f32,
    eta: f64,
    tensors: &[(usize, bool)],
    p: &mut [f32],
    g: &[f32],
    mu: &mut [f32],
) {
    let total: usize = tensors.iter().map(|t| t.0).sum();
    assert!(
        p.len() == total && g.len() == total && mu.len() == total,
        "lars_step_all: the tensors cover {total} elements, the buffers {}/{}/{}",
        p.len(),
        g.len(),
        mu.len()
    );
    let mut start = 0;
    for &(len, adapt) in tensors {
        let r = start..start + len;
        start += len;
        let (decay, trust) = if adapt {
            let pn = sumsq(&p[r.clone()]).sqrt();
            let dn = sumsq_axpy(wd, &p[r.clone()], &g[r.clone()]).sqrt();
            (wd, if pn > 0.0 && dn > 0.0 { (eta * pn / dn) as f32 } else { 1.0 })
        } else {
            (0.0, 1.0)
        };
        lars_step(lr, momentum, decay, trust, &mut p[r.clone()], &g[r.clone()], &mut mu[r]);
    }
}
