//! The stem's 3x3/2 max pool (with ties, which must go to the first maximum) and the global
//! average pool, forward and backward.

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full, full_mut, Cx, Tol, EXACT};
use crate::shapes::PoolShape;

/// Sums of up to 4 (max pool) or hw (average pool) fp32 values in possibly another order,
/// and a multiply by 1/hw where the CPU may divide: an ulp or two; fp16 output rounded once.
const POOL_SUM: Tol = Tol::new(1e-6, 1e-3);

fn maxpool<X: Backend>(be: &X, s: &PoolShape, x: &[f32], dy: &[f32]) -> Result<[Vec<f32>; 2]> {
    let xb = be.act_from_host(x)?;
    let mut y = be.zeros(s.y_len())?;
    be.maxpool_fwd(s, full::<X>(&xb), full_mut::<X>(&mut y));
    let dyb = be.act_from_host(dy)?;
    let mut dx = be.zeros(s.x_len())?;
    be.maxpool_bwd(s, full::<X>(&xb), full::<X>(&dyb), full_mut::<X>(&mut dx));
    be.sync()?;
    Ok([be.to_host(&y)?, be.to_host(&dx)?])
}

fn avgpool<X: Backend>(
    be: &X,
    n: usize,
    hw: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
) -> Result<[Vec<f32>; 2]> {
    let xb = be.act_from_host(x)?;
    let mut y = be.zeros(n * c)?;
    be.avgpool_fwd(n, hw, c, full::<X>(&xb), full_mut::<X>(&mut y));
    let dyb = be.act_from_host(dy)?;
    let mut dx = be.zeros(n * hw * c)?;
    be.avgpool_bwd(n, hw, c, full::<X>(&dyb), full_mut::<X>(&mut dx));
    be.sync()?;
    Ok([be.to_host(&y)?, be.to_host(&dx)?])
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    // Odd sizes give edge windows that hang over the padding.
    let s =
        if cx.full { PoolShape { n: 2, h: 56, w: 56, c: 64 } } else { PoolShape { n: 2, h: 9, w: 7, c: 8 } };
    // Values on a coarse grid (multiples of 0.5 in [-2, 2]) make ties common.
    let x: Vec<f32> = (0..s.x_len()).map(|_| (cx.gen.below(9) as f32 - 4.0) * 0.5).collect();
    let dy = cx.gen.acts(s.y_len(), 0.0, 1.0);
    let (r, c) = both!(cx, maxpool(&s, &x, &dy));
    let dims = format!("{}x{}x{} n{}", s.h, s.w, s.c, s.n);
    cx.compare(format!("maxpool_fwd (ties) {dims}"), EXACT, &r[0], &c[0]);
    cx.compare(format!("maxpool_bwd (ties) {dims}"), POOL_SUM, &r[1], &c[1]);

    let (n, hw, ch) = (cx.size(2, 8), cx.size(9, 49), cx.size(24, 2048));
    let x = cx.gen.acts(n * hw * ch, 0.5, 1.0);
    let dy = cx.gen.acts(n * ch, 0.0, 1.0);
    let (r, c) = both!(cx, avgpool(n, hw, ch, &x, &dy));
    cx.compare(format!("avgpool_fwd [{n}, {hw}, {ch}]"), POOL_SUM, &r[0], &c[0]);
    cx.compare(format!("avgpool_bwd [{n}, {hw}, {ch}]"), POOL_SUM, &r[1], &c[1]);
    Ok(())
}
