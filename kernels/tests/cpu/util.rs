//! Helpers shared by the CPU op tests: seeded data, f64 dot products, finite differences.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `len` values uniform in [-1, 1) from a fixed seed.
pub fn uniform(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// sum(a * b) in f64: the scalar objective L = <R, y> every gradient check differentiates.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Largest |v|.
pub fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64))
}

/// Central finite differences of `loss` at `x`, coordinate by coordinate (all coordinates
/// when `coords` is None), against the analytic gradient `grad`:
/// asserts |fd_i - grad_i| <= atol + rtol * max|grad| for every checked i. The step actually
/// taken is measured after rounding to f32, so the quotient uses the true denominator.
/// Returns the worst error, for calibrating tolerances.
#[allow(clippy::too_many_arguments)]
pub fn fd_check(
    name: &str,
    x: &[f32],
    grad: &[f32],
    eps: f32,
    atol: f64,
    rtol: f64,
    coords: Option<&[usize]>,
    loss: impl Fn(&[f32]) -> f64,
) -> f64 {
    assert_eq!(x.len(), grad.len(), "{name}: gradient length");
    let all: Vec<usize> = (0..x.len()).collect();
    let coords = coords.unwrap_or(&all);
    let scale = max_abs(grad);
    assert!(scale > 0.0, "{name}: the analytic gradient is identically zero; the check would be vacuous");
    let bound = atol + rtol * scale;
    let mut xp = x.to_vec();
    let mut worst = 0.0f64;
    for &i in coords {
        let (hi, lo) = (x[i] + eps, x[i] - eps);
        xp[i] = hi;
        let l_hi = loss(&xp);
        xp[i] = lo;
        let l_lo = loss(&xp);
        xp[i] = x[i];
        let fd = (l_hi - l_lo) / (hi as f64 - lo as f64);
        let err = (fd - grad[i] as f64).abs();
        assert!(
            err <= bound,
            "{name}[{i}]: finite difference {fd} vs analytic {} (error {err} > {bound})",
            grad[i]
        );
        worst = worst.max(err);
    }
    worst
}

/// Asserts |got - want| <= atol + rtol * max|want| elementwise.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let bound = atol + rtol * scale;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs();
        assert!(err <= bound, "{name}[{i}]: got {g}, want {w} (error {err} > {bound})");
    }
}
