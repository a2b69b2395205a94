//! Convolutions: forward against a direct f64 loop, both backwards against finite differences
//! (and, on a multi-chunk shape, against direct f64 adjoint loops), accumulate semantics.

use crate::util::{assert_close, dot, fd_check, uniform};
use moco_kernels::cpu::conv::{conv2d_bwd_data, conv2d_bwd_filter, conv2d_fwd};
use moco_kernels::ConvShape;

/// Calls `f(x_index, w_index, y_index)` for every in-range tap of every output: the
/// textbook definition, shared by the direct forward and both direct adjoints.
fn for_each_tap(s: &ConvShape, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (s.out_h(), s.out_w());
    for img in 0..s.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..s.c_out {
                    for ky in 0..s.k {
                        for kx in 0..s.k {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            for ci in 0..s.c_in {
                                let xi = ((img * s.h + iy as usize) * s.w + ix as usize) * s.c_in + ci;
                                let wi = ((co * s.k + ky) * s.k + kx) * s.c_in + ci;
                                let yi = ((img * oh + oy) * ow + ox) * s.c_out + co;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn direct_fwd(s: &ConvShape, x: &[f32], w: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0f64; s.y_len()];
    for_each_tap(s, |xi, wi, yi| y[yi] += x[xi] as f64 * w[wi] as f64);
    y
}

fn direct_bwd_data(s: &ConvShape, dy: &[f32], w: &[f32]) -> Vec<f64> {
    let mut dx = vec![0.0f64; s.x_len()];
    for_each_tap(s, |xi, wi, yi| dx[xi] += dy[yi] as f64 * w[wi] as f64);
    dx
}

fn direct_bwd_filter(s: &ConvShape, x: &[f32], dy: &[f32]) -> Vec<f64> {
    let mut dw = vec![0.0f64; s.w_len()];
    for_each_tap(s, |xi, wi, yi| dw[wi] += dy[yi] as f64 * x[xi] as f64);
    dw
}

fn shape(n: usize, hw: usize, c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize) -> ConvShape {
    ConvShape { n, h: hw, w: hw, c_in, c_out, k, stride, pad }
}

/// Every kernel ResNet-50 uses, plus odd sizes and a padding wider than usual.
fn tiny_shapes() -> Vec<(&'static str, ConvShape)> {
    vec![
        ("1x1 s1", shape(2, 5, 3, 4, 1, 1, 0)),
        ("1x1 s2", shape(2, 6, 3, 4, 1, 2, 0)),
        ("3x3 s1 p1", shape(2, 5, 3, 4, 3, 1, 1)),
        ("3x3 s2 p1", shape(2, 7, 3, 4, 3, 2, 1)),
        ("3x3 s2 p1 even", shape(1, 6, 2, 3, 3, 2, 1)),
        ("7x7 s2 p3", shape(2, 9, 3, 4, 7, 2, 3)),
        ("5x5 s3 p2", shape(1, 8, 2, 3, 5, 3, 2)),
        ("3x3 s1 p0", shape(1, 5, 2, 2, 3, 1, 0)),
    ]
}

#[test]
fn conv_fwd_matches_direct_loop() {
    for (name, s) in tiny_shapes() {
        let x = uniform(1, s.x_len());
        let w = uniform(2, s.w_len());
        let mut y = vec![f32::NAN; s.y_len()]; // NaN: the forward must overwrite every output
        conv2d_fwd(&s, &x, &w, &mut y);
        // Sums of at most 7*7*3 = 147 products of values in [-1, 1): fp32 rounding error of
        // such a sum is below 147 * 2^-24 * 147 ~ 1.3e-3 worst case, ~1e-5 typical; 1e-5
        // relative to the largest output (~5) leaves room while any indexing slip is O(1).
        assert_close(&format!("conv fwd {name}"), &y, &direct_fwd(&s, &x, &w), 1e-6, 1e-5);
    }
}

#[test]
fn conv_bwd_data_matches_finite_differences() {
    for (name, s) in tiny_shapes() {
        let x = uniform(3, s.x_len());
        let w = uniform(4, s.w_len());
        let r = uniform(5, s.y_len());
        let mut dx = vec![f32::NAN; s.x_len()];
        conv2d_bwd_data(&s, &r, &w, &mut dx);
        // L = <R, conv(x, w)> is linear in x, so central differences have no truncation
        // error; what remains is the f32 rounding of the few outputs x_i feeds (~1e-7 * |y|)
        // divided by the 2e-2 step: ~1e-5. A wrong sign or tap is O(max|grad|) ~ 1.
        let loss = |xp: &[f32]| {
            let mut y = vec![0.0; s.y_len()];
            conv2d_fwd(&s, xp, &w, &mut y);
            dot(&r, &y)
        };
        fd_check(&format!("conv dx {name}"), &x, &dx, 1e-2, 1e-4, 1e-4, None, loss);
        // Input pixels no window reads (stride 2, 1x1) must get exactly zero.
        if s.k == 1 && s.stride == 2 {
            assert!(dx[s.c_in..2 * s.c_in].iter().all(|v| *v == 0.0), "conv dx {name}: skipped pixel");
        }
    }
}

#[test]
fn conv_bwd_filter_matches_finite_differences() {
    for (name, s) in tiny_shapes() {
        let x = uniform(6, s.x_len());
        let w = uniform(7, s.w_len());
        let r = uniform(8, s.y_len());
        let mut dw = vec![0.0; s.w_len()];
        conv2d_bwd_filter(&s, &x, &r, &mut dw);
        // Linear in w as above; each weight feeds up to n*oh*ow outputs (~50), so the
        // rounding term is ~sqrt(50) times larger: still ~1e-4 against gradients of ~5.
        let loss = |wp: &[f32]| {
            let mut y = vec![0.0; s.y_len()];
            conv2d_fwd(&s, &x, wp, &mut y);
            dot(&r, &y)
        };
        fd_check(&format!("conv dw {name}"), &w, &dw, 1e-2, 1e-4, 2e-4, None, loss);
    }
}

#[test]
fn conv_bwd_filter_accumulates() {
    for (name, s) in tiny_shapes() {
        let x = uniform(9, s.x_len());
        let r = uniform(10, s.y_len());
        let mut once = vec![0.0; s.w_len()];
        conv2d_bwd_filter(&s, &x, &r, &mut once);
        let mut twice = once.clone();
        conv2d_bwd_filter(&s, &x, &r, &mut twice);
        // twice = once + (the same product): 2 * once up to one rounding of the addition.
        let want: Vec<f64> = once.iter().map(|v| 2.0 * *v as f64).collect();
        assert_close(&format!("conv dw accumulate {name}"), &twice, &want, 1e-6, 1e-6);
        assert!(once.iter().any(|v| *v != 0.0), "{name}: vacuous");
    }
}

/// Many chunks (9216 output rows, ~230 per chunk, 16 backward-filter groups) and
/// one-image backward-data tasks: the chunk offsets of all three ops against the direct loops.
#[test]
fn conv_multi_chunk_matches_direct_loops() {
    let s = shape(4, 48, 64, 8, 3, 1, 1);
    let x = uniform(11, s.x_len());
    let w = uniform(12, s.w_len());
    let dy = uniform(13, s.y_len());
    let mut y = vec![0.0; s.y_len()];
    conv2d_fwd(&s, &x, &w, &mut y);
    // 576-term sums of values in [-1, 1): typical rounding ~1e-5 relative to the max (~60).
    assert_close("multi-chunk fwd", &y, &direct_fwd(&s, &x, &w), 1e-5, 1e-5);
    let mut dx = vec![0.0; s.x_len()];
    conv2d_bwd_data(&s, &dy, &w, &mut dx);
    assert_close("multi-chunk dx", &dx, &direct_bwd_data(&s, &dy, &w), 1e-5, 1e-5);
    let mut dw = vec![0.0; s.w_len()];
    conv2d_bwd_filter(&s, &x, &dy, &mut dw);
    // dw sums 4*48*48 = 9216 products per element: rounding grows ~sqrt(9216) = 96 ulps of
    // partial sums, ~1e-5 relative to the largest (~300).
    assert_close("multi-chunk dw", &dw, &direct_bwd_filter(&s, &x, &dy), 1e-4, 2e-5);
}

/// Each stage of ResNet-50 at width 0.125 on a 16 px input (the `tiny` topology in
/// miniature), all three ops against the direct loops: the exact kernel/stride/channel
/// combinations the model runs, including c_in = 3 for the stem.
#[test]
fn conv_resnet_shapes_match_direct_loops() {
    let shapes = [
        shape(2, 16, 3, 8, 7, 2, 3),
        shape(2, 4, 8, 8, 1, 1, 0),
        shape(2, 4, 8, 8, 3, 1, 1),
        shape(2, 4, 32, 16, 1, 1, 0),
        shape(2, 4, 16, 16, 3, 2, 1),
        shape(2, 4, 32, 64, 1, 2, 0),
    ];
    for (i, s) in shapes.iter().enumerate() {
        let x = uniform(20 + i as u64, s.x_len());
        let w = uniform(30 + i as u64, s.w_len());
        let dy = uniform(40 + i as u64, s.y_len());
        let mut y = vec![0.0; s.y_len()];
        conv2d_fwd(s, &x, &w, &mut y);
        assert_close(&format!("resnet fwd {s:?}"), &y, &direct_fwd(s, &x, &w), 1e-6, 1e-5);
        let mut dx = vec![0.0; s.x_len()];
        conv2d_bwd_data(s, &dy, &w, &mut dx);
        assert_close(&format!("resnet dx {s:?}"), &dx, &direct_bwd_data(s, &dy, &w), 1e-6, 1e-5);
        let mut dw = vec![0.0; s.w_len()];
        conv2d_bwd_filter(s, &x, &dy, &mut dw);
        assert_close(&format!("resnet dw {s:?}"), &dw, &direct_bwd_filter(s, &x, &dy), 1e-6, 1e-5);
    }
}

/// A weight too large for per-group partials (22 x 7*7*512 = 552 K floats): the backward
/// filter accumulates chunk by chunk (two chunks of 144 rows) straight into dW, with the
/// product split over dW's columns and im2col in parallel sub-ranges.
#[test]
fn conv_bwd_filter_large_weight_matches_direct_loop() {
    let s = shape(1, 12, 512, 22, 7, 1, 3);
    let x = uniform(50, s.x_len());
    let dy = uniform(51, s.y_len());
    let mut dw = vec![1.0; s.w_len()]; // accumulates onto the ones
    conv2d_bwd_filter(&s, &x, &dy, &mut dw);
    let want: Vec<f64> = direct_bwd_filter(&s, &x, &dy).iter().map(|v| v + 1.0).collect();
    // Each dW element sums at most 144 products of values in [-1, 1) (largest ~25).
    assert_close("large-weight dw", &dw, &want, 1e-5, 1e-5);
}
