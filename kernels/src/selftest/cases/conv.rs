//! Convolutions at the shapes ResNet-50 uses: the 7x7/2 stem (3 input channels), 3x3/1,
//! 3x3/2 (v1.5 downsampling), 1x1/2 (projection shortcut) and 1x1/1; forward, backward-data
//! and backward-filter (which accumulates into an fp32 gradient holding earlier values).

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, Cx, Tol};
use crate::shapes::ConvShape;

/// fp32: the GPU sums the k*k*c_in (or n*oh*ow) products in another order than the CPU's
/// im2col GEMM, and cuDNN may pick FFT or Winograd algorithms, whose transforms add error of
/// order 1e-6 of the output scale; 5e-5 leaves an order of magnitude.
/// fp16: the output is rounded to fp16 once (4.9e-4) after fp32 accumulation; Winograd and
/// FFT variants on tensor cores round their transformed operands to fp16 as well, which can
/// add a few 1e-4. 3e-3 allows that and still catches any wrong index, sign or layout (those
/// give errors of order 1).
const CONV: Tol = Tol::new(5e-5, 3e-3);

fn conv_all<X: Backend>(
    be: &X,
    s: &ConvShape,
    x: &[f32],
    w_flat: &[f32],
    w_at: usize,
    dy: &[f32],
    dw0: &[f32],
) -> Result<[Vec<f32>; 3]> {
    let xb = be.act_from_host(x)?;
    // The weight sits inside a larger flat buffer, as in the model's parameter buffer.
    let wb = be.act_from_host(w_flat)?;
    let w = || X::view(&wb, w_at..w_at + s.w_len());
    let mut y = be.zeros(s.y_len())?;
    be.conv2d_fwd(s, X::view(&xb, 0..s.x_len()), w(), X::view_mut(&mut y, 0..s.y_len()));
    let dyb = be.act_from_host(dy)?;
    let mut dx = be.zeros(s.x_len())?;
    be.conv2d_bwd_data(s, X::view(&dyb, 0..s.y_len()), w(), X::view_mut(&mut dx, 0..s.x_len()));
    let mut dw = be.from_host(dw0)?;
    be.conv2d_bwd_filter(
        s,
        X::view(&xb, 0..s.x_len()),
        X::view(&dyb, 0..s.y_len()),
        X::view_mut(&mut dw, 0..s.w_len()),
    );
    be.sync()?;
    Ok([be.to_host(&y)?, be.to_host(&dx)?, be.to_host(&dw)?])
}

fn shape(n: usize, hw: usize, c_in: usize, c_out: usize, k: usize, stride: usize) -> ConvShape {
    ConvShape { n, h: hw, w: hw, c_in, c_out, k, stride, pad: k / 2 }
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    // (label, small shape, full shape, offset of the weight in its flat buffer). A 3-element
    // offset puts an fp16 weight 6 bytes off the 16-byte alignment cuDNN likes.
    let cases = [
        ("7x7/2", shape(2, 20, 3, 8, 7, 2), shape(2, 64, 3, 64, 7, 2), 0),
        ("3x3/1", shape(2, 10, 8, 16, 3, 1), shape(2, 28, 64, 64, 3, 1), 3),
        ("3x3/2", shape(2, 10, 16, 8, 3, 2), shape(2, 28, 128, 128, 3, 2), 0),
        ("1x1/2", shape(2, 10, 16, 32, 1, 2), shape(2, 28, 256, 512, 1, 2), 0),
        ("1x1/1", shape(2, 6, 32, 16, 1, 1), shape(2, 14, 256, 64, 1, 1), 8),
    ];
    for (label, small, big, w_at) in cases {
        let s = if cx.full { big } else { small };
        let x = cx.gen.acts(s.x_len(), 0.0, 1.0);
        // He-like weight scale keeps outputs O(1) whatever the fan-in.
        let std = (2.0 / (s.k * s.k * s.c_in) as f32).sqrt();
        let mut w_flat = cx.gen.acts(w_at, 0.0, 1.0);
        w_flat.extend(cx.gen.acts(s.w_len(), 0.0, std));
        w_flat.extend(cx.gen.acts(5, 0.0, 1.0));
        let dy = cx.gen.acts(s.y_len(), 0.0, 1.0);
        let dw0 = cx.gen.normals(s.w_len(), 0.0, 0.1);
        let (r, c) = both!(cx, conv_all(&s, &x, &w_flat, w_at, &dy, &dw0));
        let dims = format!("{label} {}->{} {}x{} n{}", s.c_in, s.c_out, s.h, s.w, s.n);
        cx.compare(format!("conv2d_fwd {dims}"), CONV, &r[0], &c[0]);
        cx.compare(format!("conv2d_bwd_data {dims}"), CONV, &r[1], &c[1]);
        cx.compare(format!("conv2d_bwd_filter (+=) {dims}"), CONV, &r[2], &c[2]);
    }
    Ok(())
}
