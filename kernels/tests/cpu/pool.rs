//! Max pool (3x3/2 pad 1) and global average pool: finite differences, and max-pool tie
//! routing against hand-worked examples and an independent argmax.

use crate::util::{assert_close, dot, fd_check, uniform};
use moco_kernels::cpu::pool::{avgpool_bwd, avgpool_fwd, maxpool_bwd, maxpool_fwd};
use moco_kernels::PoolShape;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Distinct values at least 0.01 apart in random order: no window has a near-tie, so a
/// finite-difference step of 1e-3 never changes which element is the maximum.
fn spread(seed: u64, len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.01 - len as f32 * 0.005).collect();
    v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    v
}

#[test]
fn maxpool_backward_matches_finite_differences() {
    for (i, s) in
        [PoolShape { n: 2, h: 7, w: 6, c: 3 }, PoolShape { n: 1, h: 8, w: 8, c: 2 }].iter().enumerate()
    {
        let x = spread(200 + i as u64, s.x_len());
        let r = uniform(210 + i as u64, s.y_len());
        let mut dx = vec![f32::NAN; s.x_len()];
        maxpool_bwd(s, &x, &r, &mut dx);
        // Piecewise linear with no switch within the step: exact up to the rounding of
        // x +- 1e-3 (relative 1e-4 of the step).
        let loss = |xp: &[f32]| {
            let mut y = vec![0.0; s.y_len()];
            maxpool_fwd(s, xp, &mut y);
            dot(&r, &y)
        };
        fd_check(&format!("maxpool {s:?}"), &x, &dx, 1e-3, 1e-4, 1e-3, None, loss);
    }
}

/// A constant 4x4 image: every window is a tie, and the first in-range tap (row-major) of
/// each window wins: window (0,0) covers rows/cols -1..=1, so its first tap is (0,0);
/// (0,1) -> (0,1); (1,0) -> (1,0); (1,1) -> (1,1). Everything else gets 0.
#[test]
fn maxpool_ties_route_to_first_tap() {
    let s = PoolShape { n: 1, h: 4, w: 4, c: 1 };
    let x = [2.0; 16];
    let dy = [1.0, 10.0, 100.0, 1000.0];
    let mut y = [0.0; 4];
    maxpool_fwd(&s, &x, &mut y);
    assert_eq!(y, [2.0; 4]);
    let mut dx = [f32::NAN; 16];
    maxpool_bwd(&s, &x, &dy, &mut dx);
    #[rustfmt::skip]
    let want = [
        1.0, 10.0, 0.0, 0.0,
        100.0, 1000.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(dx, want);
}

/// Two windows share their maximum: pixel (0, 3) of a 3x5 image is the max of windows (0,1)
/// and (0,2), so both gradients add there; in window (0,2) it also ties with (0,4) (both 9)
/// and wins as the first in row-major order.
#[test]
fn maxpool_shared_max_and_tie() {
    let s = PoolShape { n: 1, h: 3, w: 5, c: 1 };
    #[rustfmt::skip]
    let x = [
        0.0, 1.0, 8.0, 9.0, 9.0,
        0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    // Output 2x3. Windows: (0,0) cols 0..=1 -> max 1 at (0,1); (0,1) cols 1..=3 -> 9 at (0,3);
    // (0,2) cols 3..=4 -> 9 at (0,3) (tie with (0,4)). Row 1 windows cover rows 1..=2 of zeros
    // -> all ties at 0, first tap of each: (1,0), (1,1), (1,3).
    let dy = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
    let mut y = [0.0; 6];
    maxpool_fwd(&s, &x, &mut y);
    assert_eq!(y, [1.0, 9.0, 9.0, 0.0, 0.0, 0.0]);
    let mut dx = [0.0; 15];
    maxpool_bwd(&s, &x, &dy, &mut dx);
    #[rustfmt::skip]
    let want = [
        0.0, 1.0, 0.0, 6.0, 0.0,
        8.0, 16.0, 0.0, 32.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(dx, want);
}

/// Heavily tied random data (values from {0, 1, 2}) against an independent argmax written
/// as a scan over the window's taps in row-major order that keeps the first maximum.
#[test]
fn maxpool_ties_match_independent_argmax() {
    let s = PoolShape { n: 2, h: 9, w: 8, c: 3 };
    let x: Vec<f32> = uniform(220, s.x_len()).iter().map(|v| ((v + 1.0) * 1.5).floor()).collect();
    let dy = uniform(221, s.y_len());
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut want = vec![0.0f64; s.x_len()];
    for img in 0..s.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..s.c {
                    let taps = (0..9).filter_map(|t| {
                        let (iy, ix) = ((oy * 2 + t / 3) as isize - 1, (ox * 2 + t % 3) as isize - 1);
                        let inside = iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize;
                        inside.then(|| ((img * s.h + iy as usize) * s.w + ix as usize) * s.c + ch)
                    });
                    let best = taps.reduce(|b, i| if x[i] > x[b] { i } else { b }).unwrap();
                    want[best] += dy[((img * oh + oy) * ow + ox) * s.c + ch] as f64;
                }
            }
        }
    }
    let mut dx = vec![0.0; s.x_len()];
    maxpool_bwd(&s, &x, &dy, &mut dx);
    // Each dx sums at most 4 values of dy in f32.
    assert_close("maxpool ties", &dx, &want, 1e-6, 0.0);
}

#[test]
fn maxpool_propagates_nan() {
    let s = PoolShape { n: 1, h: 2, w: 2, c: 1 };
    let mut y = [0.0];
    maxpool_fwd(&s, &[1.0, f32::NAN, 3.0, 2.0], &mut y);
    assert!(y[0].is_nan(), "a NaN in the window must reach the output, got {}", y[0]);
}

#[test]
fn avgpool_backward_matches_finite_differences() {
    let (n, hw, c) = (3, 5, 4);
    let x = uniform(230, n * hw * c);
    let r = uniform(231, n * c);
    let mut dx = vec![f32::NAN; n * hw * c];
    avgpool_bwd(n, hw, c, &r, &mut dx);
    // Linear: exact up to rounding of a 5-term mean (~1e-7) over the 2e-2 step.
    let loss = |xp: &[f32]| {
        let mut y = vec![0.0; n * c];
        avgpool_fwd(n, hw, c, xp, &mut y);
        dot(&r, &y)
    };
    fd_check("avgpool", &x, &dx, 1e-2, 1e-5, 1e-4, None, loss);
    let mut y = vec![0.0; n * c];
    avgpool_fwd(n, hw, c, &x, &mut y);
    let want: Vec<f64> = (0..n * c)
        .map(|o| (0..hw).map(|p| x[((o / c) * hw + p) * c + o % c] as f64).sum::<f64>() / hw as f64)
        .collect();
    assert_close("avgpool fwd", &y, &want, 0.0, 1e-7);
}
