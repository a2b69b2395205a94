//! Batch norm: the training-mode composite (bn_stats + bn_apply [+ ReLU]) differentiated by
//! finite differences against bn_bwd_reduce + bn_bwd_apply; statistics and the running
//! update against hand computations.

use crate::util::{assert_close, dot, fd_check, uniform};
use moco_kernels::cpu::batchnorm::{bn_apply, bn_bwd_apply, bn_bwd_reduce, bn_running_update, bn_stats};
use moco_kernels::cpu::elementwise::relu_bwd;

const EPS: f32 = 1e-5;

struct Bn {
    m: usize,
    c: usize,
    affine: bool,
    relu: bool,
}

impl Bn {
    /// y = relu?(bn(x; batch statistics of x) * gamma + beta).
    fn forward(&self, x: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
        let (m, c) = (self.m, self.c);
        let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
        bn_stats(m, c, x, &mut mean, &mut var);
        let mut y = vec![f32::NAN; m * c];
        let (g, b) = if self.affine { (Some(gamma), Some(beta)) } else { (None, None) };
        bn_apply(m, c, x, &mean, &var, EPS, g, b, self.relu, &mut y);
        y
    }

    /// (dx, dgamma, dbeta) of L = <r, forward(x)>, through the backward ops.
    fn backward(&self, x: &[f32], gamma: &[f32], beta: &[f32], r: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (m, c) = (self.m, self.c);
        let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
        bn_stats(m, c, x, &mut mean, &mut var);
        let mut dz = r.to_vec();
        if self.relu {
            relu_bwd(&self.forward(x, gamma, beta), r, &mut dz);
        }
        let (mut sum_dy, mut sum_dy_xhat) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        bn_bwd_reduce(m, c, x, &dz, &mean, &var, EPS, &mut sum_dy, &mut sum_dy_xhat);
        let mut dx = vec![f32::NAN; m * c];
        let g = if self.affine { Some(gamma) } else { None };
        bn_bwd_apply(m, c, m, x, &dz, &mean, &var, EPS, g, &sum_dy, &sum_dy_xhat, &mut dx);
        (dx, sum_dy_xhat, sum_dy)
    }

    /// The pre-ReLU outputs, to keep finite differences away from the kink.
    fn pre_activation(&self, x: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
        Bn { relu: false, ..*self }.forward(x, gamma, beta)
    }
}

fn check(bn: Bn, seed: u64) {
    let (m, c) = (bn.m, bn.c);
    let x = uniform(seed, m * c);
    let gamma: Vec<f32> = uniform(seed + 1, c).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = uniform(seed + 2, c);
    let r = uniform(seed + 3, m * c);
    let label = format!("bn affine={} relu={}", bn.affine, bn.relu);
    const STEP: f32 = 1e-2;
    if bn.relu {
        // A step of 1e-2 in one x moves its own output by ~|gamma| * invstd * 1e-2 < 0.03 (and
        // the others by 1/m of that); outputs closer to 0 than 0.05 could cross the kink, where
        // the finite difference is not the derivative. The fixed seeds are chosen to avoid it.
        let z = bn.pre_activation(&x, &gamma, &beta);
        let margin = z.iter().fold(f32::INFINITY, |a, v| a.min(v.abs()));
        assert!(
            margin > 0.05,
            "{label}: pre-activation {margin} too close to the ReLU kink; pick another seed"
        );
        assert!(
            z.iter().any(|v| *v < 0.0),
            "{label}: the ReLU must cut something for the test to mean anything"
        );
    }
    let (dx, dgamma, dbeta) = bn.backward(&x, &gamma, &beta, &r);
    // BN is smooth: central differences err by STEP^2 * f''' / 6 (~1e-5 here, with
    // invstd ~1.7) plus the f32 rounding of the 36 outputs, all of which move when one input
    // does (~1e-6 / 2e-2 = 5e-5); measured worst 4e-5. 2e-4 of the largest gradient (~2), i.e.
    // ~4e-4, bounds both tenfold, while a sign or scale error in any term of the backward,
    // or a biased/unbiased slip in the variance, is O(0.1-1).
    fd_check(&format!("{label} dx"), &x, &dx, STEP, 1e-5, 2e-4, None, |xp| {
        dot(&r, &bn.forward(xp, &gamma, &beta))
    });
    if bn.affine {
        fd_check(&format!("{label} dgamma"), &gamma, &dgamma, STEP, 1e-5, 2e-4, None, |gp| {
            dot(&r, &bn.forward(&x, gp, &beta))
        });
        fd_check(&format!("{label} dbeta"), &beta, &dbeta, STEP, 1e-5, 2e-4, None, |bp| {
            dot(&r, &bn.forward(&x, &gamma, bp))
        });
    }
}

#[test]
fn bn_train_backward_affine() {
    check(Bn { m: 12, c: 3, affine: true, relu: false }, 100);
}

#[test]
fn bn_train_backward_affine_free() {
    check(Bn { m: 12, c: 3, affine: false, relu: false }, 110);
}

#[test]
fn bn_train_backward_affine_relu() {
    check(Bn { m: 12, c: 3, affine: true, relu: true }, 180);
}

#[test]
fn bn_train_backward_affine_free_relu() {
    check(Bn { m: 12, c: 3, affine: false, relu: true }, 190);
}

/// Biased variance, by hand: channel 0 = {1, 3, 5}: mean 3, var (4 + 0 + 4) / 3;
/// channel 1 = {10, 10, 16}: mean 12, var (4 + 4 + 16) / 3 = 8.
#[test]
fn bn_stats_by_hand() {
    let x = [1.0, 10.0, 3.0, 10.0, 5.0, 16.0];
    let (mut mean, mut var) = ([0.0; 2], [0.0; 2]);
    bn_stats(3, 2, &x, &mut mean, &mut var);
    assert_close("mean", &mean, &[3.0, 12.0], 0.0, 1e-7);
    assert_close("var", &var, &[8.0 / 3.0, 8.0], 0.0, 1e-7);
}

/// A large offset (|mean| = 1e4 >> std = 0.5) and more rows than one reduction chunk: the
/// two-pass f64 statistics keep full precision where E[x^2] - E[x]^2 in f32 would lose all of it.
#[test]
fn bn_stats_large_offset_many_rows() {
    let (m, c) = (40_000, 3);
    let x: Vec<f32> = uniform(140, m * c).iter().map(|v| 1e4 + 0.5 * v).collect();
    let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
    bn_stats(m, c, &x, &mut mean, &mut var);
    let mut want_mean = vec![0.0f64; c];
    for (i, v) in x.iter().enumerate() {
        want_mean[i % c] += *v as f64 / m as f64;
    }
    let mut want_var = vec![0.0f64; c];
    for (i, v) in x.iter().enumerate() {
        want_var[i % c] += (*v as f64 - want_mean[i % c]).powi(2) / m as f64;
    }
    // Both sides are f64 sums of the same f32 inputs, rounded once to f32.
    assert_close("mean", &mean, &want_mean, 0.0, 1e-7);
    assert_close("var", &var, &want_var, 0.0, 1e-6);
    assert!((var[0] - 1.0 / 12.0).abs() < 0.01, "uniform(-0.5, 0.5) has variance 1/12, got {}", var[0]);
}

/// running = (1 - 0.1) running + 0.1 batch, with the variance unbiased by count / (count - 1):
/// mean: 0.9 * 0 + 0.1 * [1, 2] = [0.1, 0.2];
/// var:  0.9 * 1 + 0.1 * [0.5, 2] * 5/4 = [0.9625, 1.15].
#[test]
fn bn_running_update_by_hand() {
    let mut running = [0.0, 0.0, 1.0, 1.0];
    bn_running_update(2, &[1.0, 2.0], &[0.5, 2.0], 5, 0.1, &mut running);
    assert_close("running", &running, &[0.1, 0.2, 0.9625, 1.15], 0.0, 1e-7);
}

/// bn_apply's formula by hand (no ReLU, then with): x = [-1, 3] in one channel, mean 1,
/// var 4 - eps (so invstd = 1/2), gamma 2, beta 0.5: y = (x - 1) / 2 * 2 + 0.5 = [-1.5, 2.5].
#[test]
fn bn_apply_by_hand() {
    let x = [-1.0, 3.0];
    let var = [4.0 - EPS];
    let mut y = [0.0; 2];
    bn_apply(2, 1, &x, &[1.0], &var, EPS, Some(&[2.0]), Some(&[0.5]), false, &mut y);
    assert_close("bn_apply", &y, &[-1.5, 2.5], 0.0, 1e-6);
    bn_apply(2, 1, &x, &[1.0], &var, EPS, Some(&[2.0]), Some(&[0.5]), true, &mut y);
    assert_close("bn_apply relu", &y, &[0.0, 2.5], 0.0, 1e-6);
}
