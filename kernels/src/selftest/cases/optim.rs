//! Optimiser pieces on fp32 buffers: sums of squares, EMA, unscale (clean and with an
//! injected inf), SGD, LARS (adapting and excluded tensors), AdamW (first and a later step).

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full, full_mut, Cx, Tol, EXACT};

/// Both backends square in f64 and sum in f64 in different orders: ~1e-16 per term.
const SUMSQ: Tol = Tol::both(1e-9);
/// y + alpha x is formed in fp32 (the GPU may fuse it into an FMA) before squaring.
const SUMSQ_AXPY: Tol = Tol::both(1e-6);
/// Elementwise updates whose multiply-adds the GPU may fuse (one rounding instead of two), and
/// AdamW's sqrt / division: an fp32 ulp or two relative to the tensor's scale.
const UPDATE: Tol = Tol::both(1e-6);

fn sums<X: Backend>(be: &X, x: &[f32], y: &[f32]) -> Result<Vec<f64>> {
    let (xb, yb) = (be.from_host(x)?, be.from_host(y)?);
    let a = be.sumsq(full::<X>(&xb));
    let b = be.sumsq_axpy(1e-4, full::<X>(&xb), full::<X>(&yb));
    // A sub-range that is not a multiple of any block size.
    let c = be.sumsq(X::view(&xb, 3..x.len() - 1));
    be.sync()?;
    Ok(vec![a, b, c])
}

fn ema<X: Backend>(be: &X, q: &[f32], k: &[f32]) -> Result<Vec<f32>> {
    let qb = be.from_host(q)?;
    let mut kb = be.from_host(k)?;
    be.ema(0.99, full::<X>(&qb), full_mut::<X>(&mut kb));
    be.to_host(&kb)
}

/// The unscaled gradient followed by the verdict (1.0 for "inf/NaN found").
fn unscale<X: Backend>(be: &X, g: &[f32]) -> Result<Vec<f32>> {
    let mut gb = be.from_host(g)?;
    let bad = be.unscale_check(full_mut::<X>(&mut gb), 1.0 / 1024.0);
    let mut out = be.to_host(&gb)?;
    out.push(if bad { 1.0 } else { 0.0 });
    Ok(out)
}

fn sgd<X: Backend>(be: &X, p: &[f32], g: &[f32], mu: &[f32]) -> Result<[Vec<f32>; 2]> {
    let (mut pb, gb, mut mb) = (be.from_host(p)?, be.from_host(g)?, be.from_host(mu)?);
    be.sgd_step(0.05, 0.9, 1e-4, full_mut::<X>(&mut pb), full::<X>(&gb), full_mut::<X>(&mut mb));
    be.sync()?;
    Ok([be.to_host(&pb)?, be.to_host(&mb)?])
}

fn lars<X: Backend>(be: &X, p: &[f32], g: &[f32], mu: &[f32], wd: f32, trust: f32) -> Result<[Vec<f32>; 2]> {
    let (mut pb, gb, mut mb) = (be.from_host(p)?, be.from_host(g)?, be.from_host(mu)?);
    be.lars_step(0.3, 0.9, wd, trust, full_mut::<X>(&mut pb), full::<X>(&gb), full_mut::<X>(&mut mb));
    be.sync()?;
    Ok([be.to_host(&pb)?, be.to_host(&mb)?])
}

fn adamw<X: Backend>(be: &X, p: &[f32], g: &[f32], m: &[f32], v: &[f32], step: u64) -> Result<[Vec<f32>; 3]> {
    let (mut pb, gb) = (be.from_host(p)?, be.from_host(g)?);
    let (mut mb, mut vb) = (be.from_host(m)?, be.from_host(v)?);
    be.adamw_step(
        1e-3,
        0.9,
        0.999,
        1e-8,
        0.1,
        step,
        full_mut::<X>(&mut pb),
        full::<X>(&gb),
        full_mut::<X>(&mut mb),
        full_mut::<X>(&mut vb),
    );
    be.sync()?;
    Ok([be.to_host(&pb)?, be.to_host(&mb)?, be.to_host(&vb)?])
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    // More than one 4096-element block in the small case; about a ResNet layer in the full one.
    let n = cx.size(5_003, 1 << 20);
    let p = cx.gen.normals(n, 0.0, 0.05);
    let g = cx.gen.normals(n, 0.0, 0.01);
    let mu = cx.gen.normals(n, 0.0, 0.01);

    let (r, c) = both!(cx, sums(&p, &g));
    cx.compare64("sumsq", SUMSQ, &[r[0], r[2]], &[c[0], c[2]]);
    cx.compare64("sumsq_axpy", SUMSQ_AXPY, &r[1..2], &c[1..2]);

    let (r, c) = both!(cx, ema(&p, &mu));
    cx.compare("ema", UPDATE, &r, &c);

    // The scale is a power of two, so unscaling is exact; the verdict must agree.
    let scaled: Vec<f32> = g.iter().map(|v| v * 1024.0).collect();
    let (r, c) = both!(cx, unscale(&scaled));
    cx.compare("unscale_check (finite: false)", EXACT, &r, &c);
    let mut bad = scaled;
    bad[n / 2] = f32::INFINITY;
    let (r, c) = both!(cx, unscale(&bad));
    cx.compare("unscale_check (injected inf: true)", EXACT, &r, &c);
    if r.last() != Some(&1.0) {
        if let Some(row) = cx.rows.last_mut() {
            row.pass = false;
            row.note = "the reference did not report the injected inf".into();
        }
    }

    let (r, c) = both!(cx, sgd(&p, &g, &mu));
    cx.compare("sgd_step p", UPDATE, &r[0], &c[0]);
    cx.compare("sgd_step mu", UPDATE, &r[1], &c[1]);

    for (wd, trust, label) in [(1e-6, 0.37, "adapting"), (0.0, 1.0, "excluded")] {
        let (r, c) = both!(cx, lars(&p, &g, &mu, wd, trust));
        cx.compare(format!("lars_step p ({label})"), UPDATE, &r[0], &c[0]);
        cx.compare(format!("lars_step mu ({label})"), UPDATE, &r[1], &c[1]);
    }

    let zeros = vec![0.0f32; n];
    let v: Vec<f32> = cx.gen.normals(n, 0.0, 0.01).iter().map(|x| x * x).collect();
    for (step, m, v, label) in [(1u64, &zeros, &zeros, "step 1"), (7, &mu, &v, "step 7")] {
        let (r, c) = both!(cx, adamw(&p, &g, m, v, step));
        cx.compare(format!("adamw_step p ({label})"), UPDATE, &r[0], &c[0]);
        cx.compare(format!("adamw_step m ({label})"), UPDATE, &r[1], &c[1]);
        cx.compare(format!("adamw_step v ({label})"), UPDATE, &r[2], &c[2]);
    }
    Ok(())
}
