//! Optimiser pieces against hand-computed values and an independent f64 transcription of
//! PyTorch's update rules.

use crate::util::{assert_close, uniform};
use moco_kernels::cpu::optim::{adamw_step, ema, lars_step, sgd_step, sumsq, sumsq_axpy, unscale_check};

/// lr 0.1, momentum 0.9, wd 0.01, p 1, g 0.5, mu 0:
/// step 1: d = 0.5 + 0.01 = 0.51, mu = 0.51, p = 1 - 0.051 = 0.949;
/// step 2: d = 0.5 + 0.00949 = 0.50949, mu = 0.459 + 0.50949 = 0.96849, p = 0.949 - 0.096849 = 0.852151.
#[test]
fn sgd_by_hand() {
    let (mut p, mut mu) = ([1.0f32], [0.0f32]);
    sgd_step(0.1, 0.9, 0.01, &mut p, &[0.5], &mut mu);
    assert_close("sgd p1", &p, &[0.949], 0.0, 1e-7);
    assert_close("sgd mu1", &mu, &[0.51], 0.0, 1e-7);
    sgd_step(0.1, 0.9, 0.01, &mut p, &[0.5], &mut mu);
    assert_close("sgd p2", &p, &[0.852151], 0.0, 1e-6);
    assert_close("sgd mu2", &mu, &[0.96849], 0.0, 1e-6);
}

/// As SGD with d scaled by trust = 2: d = 1.02, mu = 1.02, p = 1 - 0.102 = 0.898.
#[test]
fn lars_by_hand() {
    let (mut p, mut mu) = ([1.0f32], [0.0f32]);
    lars_step(0.1, 0.9, 0.01, 2.0, &mut p, &[0.5], &mut mu);
    assert_close("lars p", &p, &[0.898], 0.0, 1e-7);
    assert_close("lars mu", &mu, &[1.02], 0.0, 1e-7);
}

/// lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.01, p 1, g 0.5, step 1:
/// p = 1 * (1 - 0.001) = 0.999; m = 0.05; v = 0.001 * 0.25 = 2.5e-4;
/// denom = sqrt(2.5e-4) / sqrt(0.001) + 1e-8 = 0.5 + 1e-8; step_size = 0.1 / 0.1 = 1;
/// p = 0.999 - 0.05 / 0.5 = 0.899.
#[test]
fn adamw_by_hand() {
    let (mut p, mut m, mut v) = ([1.0f32], [0.0f32], [0.0f32]);
    adamw_step(0.1, 0.9, 0.999, 1e-8, 0.01, 1, &mut p, &[0.5], &mut m, &mut v);
    assert_close("adamw p", &p, &[0.899], 0.0, 1e-6);
    assert_close("adamw m", &m, &[0.05], 0.0, 1e-6);
    // beta2 arrives as f32: 0.999f32 = 0.99900001287, so 1 - beta2 = 9.99987e-4 and v is
    // 1.3e-5 below the decimal value (the trait's f32 hyperparameters, not the update).
    assert_close("adamw v", &v, &[2.5e-4], 0.0, 2e-5);
}

/// Ten steps on random data against torch.optim.AdamW's single-tensor update transcribed
/// in f64 (decoupled decay, lerp, bias corrections, denom = sqrt(v)/sqrt(bc2) + eps) with a
/// large eps so the eps placement matters.
#[test]
fn adamw_matches_pytorch_formula() {
    let (lr, b1, b2, eps, wd) = (3e-3f64, 0.9f64, 0.95f64, 1e-3f64, 0.1f64);
    let n = 50;
    let mut p = uniform(700, n);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut pr: Vec<f64> = p.iter().map(|x| *x as f64).collect();
    let (mut mr, mut vr) = (vec![0.0f64; n], vec![0.0f64; n]);
    for step in 1..=10u64 {
        let g: Vec<f32> = uniform(700 + step, n).iter().map(|x| 0.1 * x).collect();
        adamw_step(lr as f32, b1 as f32, b2 as f32, eps as f32, wd as f32, step, &mut p, &g, &mut m, &mut v);
        let (b1f, b2f) = (b1 as f32 as f64, b2 as f32 as f64);
        let (bc1, bc2) = (1.0 - b1f.powi(step as i32), 1.0 - b2f.powi(step as i32));
        for i in 0..n {
            let gi = g[i] as f64;
            pr[i] *= 1.0 - lr * wd;
            mr[i] = b1f * mr[i] + (1.0 - b1f) * gi;
            vr[i] = b2f * vr[i] + (1.0 - b2f) * gi * gi;
            let denom = vr[i].sqrt() / bc2.sqrt() + eps;
            pr[i] -= lr / bc1 * mr[i] / denom;
        }
    }
    // Ten f32 updates of size ~lr = 3e-3 each carry ~1e-7 relative rounding; the parameters
    // are O(1). A misplaced eps (inside the sqrt, or without the bias correction) moves a
    // step by ~30% of lr ~ 1e-3.
    assert_close("adamw p", &p, &pr, 1e-6, 0.0);
    assert_close("adamw m", &m, &mr, 1e-7, 1e-5);
    assert_close("adamw v", &v, &vr, 1e-9, 1e-5);
}

/// 0.99 * 1 + 0.01 * 3 = 1.02.
#[test]
fn ema_by_hand() {
    let mut k = [1.0f32, -2.0];
    ema(0.99, &[3.0, -2.0], &mut k);
    assert_close("ema", &k, &[1.02, -2.0], 0.0, 1e-7);
}

#[test]
fn unscale_check_flags_non_finite() {
    let mut g = [2.0f32, -4.0];
    assert!(!unscale_check(&mut g, 0.5));
    assert_eq!(g, [1.0, -2.0]);
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut g = vec![1.0f32; 70_000];
        g[69_999] = bad; // in the last of several reduction chunks
        assert!(unscale_check(&mut g, 0.5), "{bad} must be flagged");
        assert_eq!(g[0], 0.5, "the rest is still scaled");
    }
    let mut g = [3e38f32];
    assert!(unscale_check(&mut g, 10.0), "overflow caused by the scaling must be flagged");
}

/// A scale of exactly 1 takes the read-only path: the same verdicts, the values unchanged
/// bit for bit (-0.0 and subnormals included).
#[test]
fn unscale_check_by_one_reads_only() {
    let mut g = uniform(712, 70_000);
    g[5] = -0.0;
    g[6] = f32::from_bits(1); // the smallest subnormal
    let before = g.clone();
    assert!(!unscale_check(&mut g, 1.0));
    assert_eq!(
        g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        before.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut g = vec![1.0f32; 70_000];
        g[69_999] = bad; // in the last of several reduction chunks
        assert!(unscale_check(&mut g, 1.0), "{bad} must be flagged");
    }
}

/// [3, 4] -> 25; (y + 2x) with x = [1, 1], y = [1, 2] is [3, 4] -> 25; and a long random
/// vector (several chunks) against an f64 loop.
#[test]
fn sumsq_by_hand_and_long() {
    assert_eq!(sumsq(&[3.0, 4.0]), 25.0);
    assert_eq!(sumsq_axpy(2.0, &[1.0, 1.0], &[1.0, 2.0]), 25.0);
    let (x, y) = (uniform(710, 100_003), uniform(711, 100_003));
    let want: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
    // Both are f64 sums of the same squares, in a different order: ~1e-16 relative.
    assert!((sumsq(&x) - want).abs() <= 1e-12 * want, "{} vs {want}", sumsq(&x));
    let want_axpy: f64 = x.iter().zip(&y).map(|(a, b)| ((b + 0.3 * a) as f64).powi(2)).sum();
    let got = sumsq_axpy(0.3, &x, &y);
    assert!((got - want_axpy).abs() <= 1e-12 * want_axpy, "{got} vs {want_axpy}");
}
