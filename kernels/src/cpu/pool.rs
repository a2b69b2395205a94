//! The stem's 3x3/2 pad-1 max pool and the global average pool, NHWC.

use super::simd::avx2_fn;
use crate::shapes::PoolShape;
use rayon::prelude::*;

const K: usize = PoolShape::K;
const STRIDE: usize = PoolShape::STRIDE;
const PAD: usize = PoolShape::PAD;

/// The in-range taps `[lo, hi)` of a window starting at `o * STRIDE - PAD` in an axis of `size`.
#[inline]
fn taps(o: usize, size: usize) -> (usize, usize) {
    let base = (o * STRIDE) as isize - PAD as isize;
    let lo = (-base).clamp(0, K as isize) as usize;
    let hi = (size as isize - base).clamp(lo as isize, K as isize) as usize;
    (lo, hi)
}

/// Per channel, the max of window (oy, ox) of one image `[h, w, c]` into `best` and the
/// index `ky * K + kx` of its FIRST maximal tap into `arg`. Taps are scanned row-major (ky
/// outer, kx inner) and a later tap wins only if strictly greater, as PyTorch's CPU kernel;
/// a NaN wins over any number (the first NaN is kept), so NaN propagates. Padding never
/// wins: the scan starts at the first in-range tap (every window has one since PAD < K).
#[inline(always)]
fn window_argmax(s: &PoolShape, x_img: &[f32], oy: usize, ox: usize, best: &mut [f32], arg: &mut [u8]) {
    let c = s.c;
    let (ky_lo, ky_hi) = taps(oy, s.h);
    let (kx_lo, kx_hi) = taps(ox, s.w);
    let pixel = |ky: usize, kx: usize| {
        let (iy, ix) = (oy * STRIDE + ky - PAD, ox * STRIDE + kx - PAD);
        &x_img[(iy * s.w + ix) * c..(iy * s.w + ix + 1) * c]
    };
    best.copy_from_slice(pixel(ky_lo, kx_lo));
    arg.fill((ky_lo * K + kx_lo) as u8);
    for ky in ky_lo..ky_hi {
        for kx in kx_lo..kx_hi {
            if ky == ky_lo && kx == kx_lo {
                continue;
            }
            let tap = (ky * K + kx) as u8;
            for ((b, a), v) in best.iter_mut().zip(arg.iter_mut()).zip(pixel(ky, kx)) {
                if *v > *b || (v.is_nan() && !b.is_nan()) {
                    *b = *v;
                    *a = tap;
                }
            }
        }
    }
}

fn check(op: &str, s: &PoolShape, x_len: usize, y_len: usize) {
    assert!(s.h >= 1 && s.w >= 1, "{op}: empty input in {s:?}");
    assert_eq!(x_len, s.x_len(), "{op}: input length for {s:?}");
    assert_eq!(y_len, s.y_len(), "{op}: output length for {s:?}");
}

avx2_fn! {
/// y = 3x3/2 pad-1 max pool of x. x `[n, h, w, c]`, y `[n, oh, ow, c]` (overwritten). A NaN in
/// a window makes its output NaN.
pub fn maxpool_fwd(s: &PoolShape, x: &[f32], y: &mut [f32]) {
    check("maxpool_fwd", s, x.len(), y.len());
    let (oh, c) = (s.out_h(), s.c);
    if y.is_empty() {
        return;
    }
    let img_len = s.h * s.w * c;
    y.par_chunks_mut(s.out_w() * c).enumerate().for_each(|(r, y_row)| {
        let (img, oy) = (r / oh, r % oh);
        let x_img = &x[img * img_len..(img + 1) * img_len];
        let (ky_lo, ky_hi) = taps(oy, s.h);
        for (ox, best) in y_row.chunks_exact_mut(c).enumerate() {
            let (kx_lo, kx_hi) = taps(ox, s.w);
            let pixel = |ky: usize, kx: usize| {
                let (iy, ix) = (oy * STRIDE + ky - PAD, ox * STRIDE + kx - PAD);
                &x_img[(iy * s.w + ix) * c..(iy * s.w + ix + 1) * c]
            };
            best.copy_from_slice(pixel(ky_lo, kx_lo));
            for ky in ky_lo..ky_hi {
                for kx in kx_lo..kx_hi {
                    for (b, &v) in best.iter_mut().zip(pixel(ky, kx)) {
                        if v > *b || v.is_nan() {
                            *b = v;
                        }
                    }
                }
            }
        }
    });
}
}

avx2_fn! {
/// dx = the max pool's backward: each dy goes to the first maximal input of its window
/// (recomputed from x); dx `[n, h, w, c]` is overwritten.
///
/// Two passes: the argmax tap of every window (parallel over output rows), then a gather per
/// input row from the (at most two) rows of windows that cover it (parallel over input rows),
/// so no two tasks write the same memory and each dx element sums its windows in (oy, ox)
/// order.
pub fn maxpool_bwd(s: &PoolShape, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    check("maxpool_bwd", s, x.len(), dy.len());
    assert_eq!(dx.len(), x.len(), "maxpool_bwd: dx length for {s:?}");
    let (oh, ow, c) = (s.out_h(), s.out_w(), s.c);
    if dx.is_empty() {
        return;
    }
    let img_len = s.h * s.w * c;
    let mut args = vec![0u8; s.y_len()];
    args.par_chunks_mut(ow * c).enumerate().for_each_init(
        || vec![0.0f32; c],
        |best, (r, arg_row)| {
            let (img, oy) = (r / oh, r % oh);
            let x_img = &x[img * img_len..(img + 1) * img_len];
            for (ox, arg) in arg_row.chunks_exact_mut(c).enumerate() {
                window_argmax(s, x_img, oy, ox, best, arg);
            }
        },
    );
    dx.par_chunks_mut(s.w * c).enumerate().for_each(|(r, dx_row)| {
        let (img, iy) = (r / s.h, r % s.h);
        dx_row.fill(0.0);
        // Windows oy whose rows oy*STRIDE - PAD .. + K cover iy.
        let oy_lo = (iy + PAD + 1).saturating_sub(K).div_ceil(STRIDE);
        let oy_hi = ((iy + PAD) / STRIDE).min(oh - 1);
        // Per window and tap column kx, a masked add over the channels (vectorised) instead of
        // a per-channel scatter. Each dx element still receives its windows' gradients in
        // (oy, ox) order; the windows whose argmax is elsewhere add +0.0, which changes no
        // value: the row starts at +0.0 and a sum that starts at +0.0 is never -0.0.
        for oy in oy_lo..=oy_hi {
            let ky = iy + PAD - oy * STRIDE;
            let at = (img * oh + oy) * ow * c;
            let (g_row, a_row) = (&dy[at..at + ow * c], &args[at..at + ow * c]);
            for (ox, (g, a)) in g_row.chunks_exact(c).zip(a_row.chunks_exact(c)).enumerate() {
                let (kx_lo, kx_hi) = taps(ox, s.w);
                for kx in kx_lo..kx_hi {
                    let tap = (ky * K + kx) as u8;
                    let ix = ox * STRIDE + kx - PAD;
                    let d = &mut dx_row[ix * c..(ix + 1) * c];
                    for ((d, &g), &t) in d.iter_mut().zip(g).zip(a) {
                        *d += if t == tap { g } else { 0.0 };
                    }
                }
            }
        }
    });
}
}

avx2_fn! {
/// y[img, ch] = mean over the hw positions of x[img, hw, ch] (summed in f64).
pub fn avgpool_fwd(n: usize, hw: usize, c: usize, x: &[f32], y: &mut [f32]) {
    assert!(hw > 0, "avgpool_fwd: hw must be positive");
    assert!(
        x.len() == n * hw * c && y.len() == n * c,
        "avgpool_fwd: x must be [{n}, {hw}, {c}], y [{n}, {c}]"
    );
    if c == 0 {
        return;
    }
    y.par_chunks_mut(c).zip(x.par_chunks(hw * c)).for_each_init(
        || vec![0.0f64; c],
        |acc, (yr, xi)| {
            acc.fill(0.0);
            for px in xi.chunks_exact(c) {
                acc.iter_mut().zip(px).for_each(|(a, v)| *a += *v as f64);
            }
            yr.iter_mut().zip(acc.iter()).for_each(|(y, a)| *y = (a / hw as f64) as f32);
        },
    );
}
}

avx2_fn! {
/// dx[img, p, ch] = dy[img, ch] / hw for every position p; dx overwritten.
pub fn avgpool_bwd(n: usize, hw: usize, c: usize, dy: &[f32], dx: &mut [f32]) {
    assert!(hw > 0, "avgpool_bwd: hw must be positive");
    assert!(
        dx.len() == n * hw * c && dy.len() == n * c,
        "avgpool_bwd: dx must be [{n}, {hw}, {c}], dy [{n}, {c}]"
    );
    if c == 0 {
        return;
    }
    let inv = 1.0 / hw as f32;
    dx.par_chunks_mut(hw * c).zip(dy.par_chunks(c)).for_each(|(dxi, g)| {
        for px in dxi.chunks_exact_mut(c) {
            px.iter_mut().zip(g).for_each(|(d, g)| *d = g * inv);
        }
    });
}
}
