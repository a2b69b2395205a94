//! ReLU forward/backward, `add_inplace` in each precision mix, `axpby`, `scale`, `round_act`.

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full, full_mut, Cx, Tol, EXACT};

/// One fp16 rounding of an fp32 result: half an fp16 ulp is 4.9e-4 relative.
const ONE_FP16_ROUNDING: Tol = Tol::new(0.0, 1e-3);
/// alpha x + beta y: the GPU may fuse it into one FMA (one rounding instead of two), so the
/// results may differ by an fp32 ulp (6e-8) relative to the larger term.
const FMA: Tol = Tol::both(1e-6);

fn relus<X: Backend>(be: &X, x: &[f32], y: &[f32], dy: &[f32]) -> Result<[Vec<f32>; 2]> {
    let mut xb = be.act_from_host(x)?;
    be.relu_inplace(full_mut::<X>(&mut xb));
    let (yb, dyb) = (be.act_from_host(y)?, be.act_from_host(dy)?);
    let mut dx = be.zeros(y.len())?;
    be.relu_bwd(full::<X>(&yb), full::<X>(&dyb), full_mut::<X>(&mut dx));
    be.sync()?;
    Ok([be.to_host(&xb)?, be.to_host(&dx)?])
}

/// add_inplace act += act, fp32 += fp32, fp32 += act (the BN sums into the gradient buffer,
/// and an fp16 gradient into fp32).
fn adds<X: Backend>(be: &X, a: &[f32], b: &[f32], m1: &[f32], m2: &[f32]) -> Result<[Vec<f32>; 3]> {
    let (ab, mut bb) = (be.act_from_host(a)?, be.act_from_host(b)?);
    be.add_inplace(full::<X>(&ab), full_mut::<X>(&mut bb));
    let (m1b, mut m2b) = (be.from_host(m1)?, be.from_host(m2)?);
    be.add_inplace(full::<X>(&m1b), full_mut::<X>(&mut m2b));
    let mut m3 = be.from_host(m1)?;
    be.add_inplace(full::<X>(&ab), full_mut::<X>(&mut m3));
    be.sync()?;
    Ok([be.to_host(&bb)?, be.to_host(&m2b)?, be.to_host(&m3)?])
}

fn axpby_scale<X: Backend>(be: &X, x: &[f32], y: &[f32], act: &[f32]) -> Result<[Vec<f32>; 3]> {
    let xb = be.from_host(x)?;
    let mut yb = be.from_host(y)?;
    be.axpby(0.7, full::<X>(&xb), -1.3, full_mut::<X>(&mut yb));
    let mut s = be.from_host(x)?;
    be.scale(full_mut::<X>(&mut s), 0.37);
    let mut sa = be.act_from_host(act)?;
    be.scale(full_mut::<X>(&mut sa), 0.37);
    be.sync()?;
    Ok([be.to_host(&yb)?, be.to_host(&s)?, be.to_host(&sa)?])
}

/// round_act on an activation buffer and on an fp32 buffer (rounded under AMP on both
/// backends, untouched without).
fn rounds<X: Backend>(be: &X, act: &[f32], master: &[f32]) -> Result<[Vec<f32>; 2]> {
    let mut a = be.act_from_host(act)?;
    be.round_act(full_mut::<X>(&mut a));
    let mut m = be.from_host(master)?;
    be.round_act(full_mut::<X>(&mut m));
    be.sync()?;
    Ok([be.to_host(&a)?, be.to_host(&m)?])
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    let n = cx.size(301, 1 << 20);
    let x = cx.gen.acts(n, 0.0, 1.0);
    // y is a ReLU output: exact zeros where the input was negative.
    let y: Vec<f32> = cx.gen.acts(n, 0.0, 1.0).into_iter().map(|v| v.max(0.0)).collect();
    let dy = cx.gen.acts(n, 0.0, 1.0);
    let (r, c) = both!(cx, relus(&x, &y, &dy));
    cx.compare("relu_inplace", EXACT, &r[0], &c[0]);
    cx.compare("relu_bwd", EXACT, &r[1], &c[1]);

    let (a, b) = (cx.gen.acts(n, 0.0, 1.0), cx.gen.acts(n, 0.0, 1.0));
    let (m1, m2) = (cx.gen.normals(n, 0.0, 1.0), cx.gen.normals(n, 0.0, 1.0));
    let (r, c) = both!(cx, adds(&a, &b, &m1, &m2));
    cx.compare("add_inplace act+=act", ONE_FP16_ROUNDING, &r[0], &c[0]);
    cx.compare("add_inplace fp32+=fp32", EXACT, &r[1], &c[1]);
    cx.compare("add_inplace fp32+=act", EXACT, &r[2], &c[2]);

    let (r, c) = both!(cx, axpby_scale(&m1, &m2, &a));
    cx.compare("axpby fp32", FMA, &r[0], &c[0]);
    cx.compare("scale fp32", EXACT, &r[1], &c[1]);
    cx.compare("scale act", ONE_FP16_ROUNDING, &r[2], &c[2]);

    let (r, c) = both!(cx, rounds(&a, &m1));
    cx.compare("round_act act", EXACT, &r[0], &c[0]);
    cx.compare("round_act fp32 buffer", EXACT, &r[1], &c[1]);
    Ok(())
}
