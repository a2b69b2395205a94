//! Linear layers: both gradients against finite differences, the forward against a direct
//! loop, and accumulation into dw.

use crate::util::{assert_close, dot, fd_check, uniform};
use moco_kernels::cpu::linear::{linear_bwd_data, linear_bwd_weight, linear_fwd};

const N: usize = 3;
const D_IN: usize = 5;
const D_OUT: usize = 4;

fn fwd(x: &[f32], w: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NAN; N * D_OUT];
    linear_fwd(N, D_IN, D_OUT, x, w, &mut y);
    y
}

#[test]
fn linear_fwd_matches_direct_loop() {
    let (x, w) = (uniform(300, N * D_IN), uniform(301, D_OUT * D_IN));
    let want: Vec<f64> = (0..N * D_OUT)
        .map(|o| (0..D_IN).map(|i| x[(o / D_OUT) * D_IN + i] as f64 * w[(o % D_OUT) * D_IN + i] as f64).sum())
        .collect();
    // Five-term fp32 dot products of values in [-1, 1).
    assert_close("linear fwd", &fwd(&x, &w), &want, 1e-6, 1e-6);
}

#[test]
fn linear_grads_match_finite_differences() {
    let (x, w, r) = (uniform(310, N * D_IN), uniform(311, D_OUT * D_IN), uniform(312, N * D_OUT));
    let mut dx = vec![f32::NAN; N * D_IN];
    linear_bwd_data(N, D_IN, D_OUT, &r, &w, &mut dx);
    let mut dw = vec![0.0; D_OUT * D_IN];
    linear_bwd_weight(N, D_IN, D_OUT, &x, &r, &mut dw);
    // Bilinear: exact in each argument up to fp32 rounding of the outputs (~1e-7) over the
    // 2e-2 step; a transposed or negated gradient is O(1).
    fd_check("linear dx", &x, &dx, 1e-2, 1e-5, 1e-4, None, |xp| dot(&r, &fwd(xp, &w)));
    fd_check("linear dw", &w, &dw, 1e-2, 1e-5, 1e-4, None, |wp| dot(&r, &fwd(&x, wp)));
}

#[test]
fn linear_bwd_weight_accumulates() {
    let (x, r) = (uniform(320, N * D_IN), uniform(321, N * D_OUT));
    let mut once = vec![0.0; D_OUT * D_IN];
    linear_bwd_weight(N, D_IN, D_OUT, &x, &r, &mut once);
    let mut twice = once.clone();
    linear_bwd_weight(N, D_IN, D_OUT, &x, &r, &mut twice);
    let want: Vec<f64> = once.iter().map(|v| 2.0 * *v as f64).collect();
    // once + (the same product) is exactly 2 * once in fp32.
    assert_close("linear dw accumulate", &twice, &want, 0.0, 0.0);
}

/// A product large enough to be split into a grid of 8 x 2 tiles (256 x 256 x 512), all three
/// ops against direct f64 loops; and a degenerate one: n = 0 leaves dw untouched.
#[test]
fn linear_tiled_and_empty() {
    let (n, d_in, d_out) = (256, 256, 512);
    let (x, w, dy) = (uniform(330, n * d_in), uniform(331, d_out * d_in), uniform(332, n * d_out));
    let direct = |rows: usize,
                  inner: usize,
                  cols: usize,
                  a: &dyn Fn(usize, usize) -> f32,
                  b: &dyn Fn(usize, usize) -> f32| {
        (0..rows * cols)
            .map(|o| (0..inner).map(|t| a(o / cols, t) as f64 * b(t, o % cols) as f64).sum::<f64>())
            .collect::<Vec<f64>>()
    };
    let mut y = vec![f32::NAN; n * d_out];
    linear_fwd(n, d_in, d_out, &x, &w, &mut y);
    // 256-term dot products of values in [-1, 1): fp32 rounding ~1e-6 relative to the max (~30).
    let want = direct(n, d_in, d_out, &|i, t| x[i * d_in + t], &|t, j| w[j * d_in + t]);
    assert_close("linear fwd 256x256x512", &y, &want, 1e-5, 1e-5);
    let mut dx = vec![f32::NAN; n * d_in];
    linear_bwd_data(n, d_in, d_out, &dy, &w, &mut dx);
    let want = direct(n, d_out, d_in, &|i, t| dy[i * d_out + t], &|t, j| w[t * d_in + j]);
    assert_close("linear dx 256x256x512", &dx, &want, 1e-5, 1e-5);
    let mut dw = vec![0.0; d_out * d_in];
    linear_bwd_weight(n, d_in, d_out, &x, &dy, &mut dw);
    let want = direct(d_out, n, d_in, &|i, t| dy[t * d_out + i], &|t, j| x[t * d_in + j]);
    assert_close("linear dw 256x256x512", &dw, &want, 1e-5, 1e-5);
    let mut dw = vec![1.5; 6];
    linear_bwd_weight(0, 3, 2, &[], &[], &mut dw);
    assert_eq!(dw, vec![1.5; 6]);
}
