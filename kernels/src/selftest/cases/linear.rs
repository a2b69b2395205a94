//! Linear layers (projector-sized), the MoCo logits (fp32 output from activation inputs) and
//! the queue logits (an fp32 queue shard against activation queries).

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full, full_mut, Cx, Tol};

/// fp32: sums of up to a few thousand products in another order (and cuBLAS's split-K);
/// fp16 activation outputs: fp32 accumulation on tensor cores, rounded to fp16 once (4.9e-4),
/// with margin for split-K partial sums that cuBLAS may keep in fp16.
const GEMM_ACT: Tol = Tol::new(1e-5, 2e-3);
/// fp32 outputs (logits, weight gradients) from identical inputs: products of fp16 values are
/// exact in fp32, only the summation order differs.
const GEMM_F32: Tol = Tol::both(2e-5);

fn layer<X: Backend>(
    be: &X,
    dims: (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw0: &[f32],
) -> Result<[Vec<f32>; 3]> {
    let (n, d_in, d_out) = dims;
    let (xb, wb, dyb) = (be.act_from_host(x)?, be.act_from_host(w)?, be.act_from_host(dy)?);
    let mut y = be.zeros(n * d_out)?;
    be.linear_fwd(n, d_in, d_out, full::<X>(&xb), full::<X>(&wb), full_mut::<X>(&mut y));
    let mut dx = be.zeros(n * d_in)?;
    be.linear_bwd_data(n, d_in, d_out, full::<X>(&dyb), full::<X>(&wb), full_mut::<X>(&mut dx));
    let mut dw = be.from_host(dw0)?;
    be.linear_bwd_weight(n, d_in, d_out, full::<X>(&xb), full::<X>(&dyb), full_mut::<X>(&mut dw));
    be.sync()?;
    Ok([be.to_host(&y)?, be.to_host(&dx)?, be.to_host(&dw)?])
}

/// q . k^T into an fp32 buffer; `k_master`: k is an fp32 buffer (the queue shard).
fn logits<X: Backend>(
    be: &X,
    n: usize,
    d: usize,
    cols: usize,
    q: &[f32],
    k: &[f32],
    k_master: bool,
) -> Result<Vec<f32>> {
    let qb = be.act_from_host(q)?;
    let kb = if k_master { be.from_host(k)? } else { be.act_from_host(k)? };
    let mut l = be.zeros_master(n * cols)?;
    be.linear_fwd(n, d, cols, full::<X>(&qb), full::<X>(&kb), full_mut::<X>(&mut l));
    be.to_host(&l)
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    let (n, d_in, d_out) = (cx.size(6, 64), cx.size(20, 2048), cx.size(12, 4096));
    let x = cx.gen.acts(n * d_in, 0.0, 1.0);
    let w = cx.gen.acts(d_out * d_in, 0.0, (1.0 / d_in as f32).sqrt());
    let dy = cx.gen.acts(n * d_out, 0.0, 1.0);
    let dw0 = cx.gen.normals(d_out * d_in, 0.0, 0.1);
    let (r, c) = both!(cx, layer((n, d_in, d_out), &x, &w, &dy, &dw0));
    let dims = format!("n{n} {d_in}->{d_out}");
    cx.compare(format!("linear_fwd {dims}"), GEMM_ACT, &r[0], &c[0]);
    cx.compare(format!("linear_bwd_data {dims}"), GEMM_ACT, &r[1], &c[1]);
    cx.compare(format!("linear_bwd_weight (+=, fp32) {dims}"), GEMM_F32, &r[2], &c[2]);

    let (d, cols) = (cx.size(16, 256), cx.size(10, 4096));
    let q = cx.gen.acts(n * d, 0.0, (1.0 / d as f32).sqrt());
    let k = cx.gen.acts(cols * d, 0.0, (1.0 / d as f32).sqrt());
    let queue = cx.gen.normals(cols * d, 0.0, (1.0 / d as f32).sqrt());
    let (r, c) = both!(cx, logits(n, d, cols, &q, &k, false));
    cx.compare(format!("linear_fwd logits act.act->fp32 [{n}x{d}].[{cols}x{d}]"), GEMM_F32, &r, &c);
    let (r, c) = both!(cx, logits(n, d, cols, &q, &queue, true));
    cx.compare(format!("linear_fwd queue logits act.fp32->fp32 [{n}x{d}].[{cols}x{d}]"), GEMM_F32, &r, &c);
    Ok(())
}
