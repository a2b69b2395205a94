//! Optimiser pieces on fp32 buffers: sums of squares, EMA, unscale (clean and with an
//! injected inf, into a device flag), SGD, LARS (adapting and excluded tensors), AdamW (first
//! and a later step), each with its device skip flag clear and set.

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

/// The unscaled gradient followed by the device verdict (1.0 for "inf/NaN found"), which the
/// op ORs into a flag that starts at 0.
fn unscale<X: Backend>(be: &X, g: &[f32]) -> Result<Vec<f32>> {
    let mut gb = be.from_host(g)?;
    let mut found = be.zeros_master(1)?;
    be.unscale_check(full_mut::<X>(&mut gb), 1.0 / 1024.0, full_mut::<X>(&mut found));
    let mut out = be.to_host(&gb)?;
    out.extend(be.to_host(&found)?);
    Ok(out)
}

/// The skip flag of an optimiser step: absent, clear (0) or set (1).
fn skip_flag<X: Backend>(be: &X, skip: Option<f32>) -> Result<Option<X::Buf>> {
    skip.map(|v| be.from_host(&[v])).transpose()
}

fn sgd<X: Backend>(be: &X, p: &[f32], g: &[f32], mu: &[f32], skip: Option<f32>) -> Result<[Vec<f32>; 2]> {
    let (mut pb, gb, mut mb) = (be.from_host(p)?, be.from_host(g)?, be.from_host(mu)?);
    let flag = skip_flag(be, skip)?;
    let sk = flag.as_ref().map(|f| full::<X>(f));
    be.sgd_step(0.05, 0.9, 1e-4, full_mut::<X>(&mut pb), full::<X>(&gb), full_mut::<X>(&mut mb), sk);
    be.sync()?;
    Ok([be.to_host(&pb)?, be.to_host(&mb)?])
}

#[allow(clippy::too_many_arguments)]
fn lars<X: Backend>(
    be: &X,
    p: &[f32],
    g: &[f32],
    mu: &[f32],
    wd: f32,
    trust: f32,
    skip: Option<f32>,
) -> Result<[Vec<f32>; 2]> {
    let (mut pb, gb, mut mb) = (be.from_host(p)?, be.from_host(g)?, be.from_host(mu)?);
    let flag = skip_flag(be, skip)?;
    let sk = flag.as_ref().map(|f| full::<X>(f));
    be.lars_step(0.3, 0.9, wd, trust, full_mut::<X>(&mut pb), full::<X>(&gb), full_mut::<X>(&mut mb), sk);
    be.sync()?;
    Ok([be.to_host(&pb)?, be.to_host(&mb)?])
}

/// LARS over a flat buffer of `tensors`.
fn lars_all<X: Backend>(
    be: &X,
    tensors: &[(usize, bool)],
    [p, g, mu]: [&[f32]; 3],
    skip: Option<f32>,
) -> Result<[Vec<f32>; 2]> {
    let (mut pb, gb, mut mb) = (be.from_host(p)?, be.from_host(g)?, be.from_host(mu)?);
    let flag = skip_flag(be, skip)?;
    let sk = flag.as_ref().map(|f| full::<X>(f));
    be.lars_step_all(
        0.3,
        0.9,
        1e-6,
        0.001,
        tensors,
        full_mut::<X>(&mut pb),
        full::<X>(&gb),
        full_mut::<X>(&mut mb),
        sk,
    );
    Ok([be.to_host(&pb)?, be.to_host(&mb)?])
}

#[allow(clippy::too_many_arguments)]
fn adamw<X: Backend>(
    be: &X,
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    step: u64,
    skip: Option<f32>,
) -> Result<[Vec<f32>; 3]> {
    let (mut pb, gb) = (be.from_host(p)?, be.from_host(g)?);
    let (mut mb, mut vb) = (be.from_host(m)?, be.from_host(v)?);
    let flag = skip_flag(be, skip)?;
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
        flag.as_ref().map(|f| full::<X>(f)),
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

    for (skip, label) in [(None, ""), (Some(0.0), " (skip flag clear)")] {
        let (r, c) = both!(cx, sgd(&p, &g, &mu, skip));
        cx.compare(format!("sgd_step p{label}"), UPDATE, &r[0], &c[0]);
        cx.compare(format!("sgd_step mu{label}"), UPDATE, &r[1], &c[1]);
    }

    for (wd, trust, label) in [(1e-6, 0.37, "adapting"), (0.0, 1.0, "excluded")] {
        let (r, c) = both!(cx, lars(&p, &g, &mu, wd, trust, None));
        cx.compare(format!("lars_step p ({label})"), UPDATE, &r[0], &c[0]);
        cx.compare(format!("lars_step mu ({label})"), UPDATE, &r[1], &c[1]);
    }

    // A conv weight spanning several blocks, a BN gamma (excluded), an all-zero tensor (|p| = 0:
    // trust 1), a tensor shorter than a block and an empty one, back to back.
    let big = n - 64 - 300 - 17;
    let tensors = [(big, true), (64, false), (300, true), (0, true), (17, true)];
    let mut pz = p.clone();
    pz[big + 64..big + 64 + 300].fill(0.0);
    let (r, c) = both!(cx, lars_all(&tensors, [&pz, &g, &mu], None));
    cx.compare("lars_step_all p (5 tensors)", UPDATE, &r[0], &c[0]);
    cx.compare("lars_step_all mu (5 tensors)", UPDATE, &r[1], &c[1]);

    let zeros = vec![0.0f32; n];
    let v: Vec<f32> = cx.gen.normals(n, 0.0, 0.01).iter().map(|x| x * x).collect();
    for (step, m, v, label) in [(1u64, &zeros, &zeros, "step 1"), (7, &mu, &v, "step 7")] {
        let (r, c) = both!(cx, adamw(&p, &g, m, v, step, None));
        cx.compare(format!("adamw_step p ({label})"), UPDATE, &r[0], &c[0]);
        cx.compare(format!("adamw_step m ({label})"), UPDATE, &r[1], &c[1]);
        cx.compare(format!("adamw_step v ({label})"), UPDATE, &r[2], &c[2]);
    }

    // A set skip flag (an overflowed step) leaves every buffer exactly as it was, on both sides.
    let unchanged = |cx: &mut Cx<'_, A, B>, op: &str, got: &[&[f32]], want: &[&[f32]]| {
        if got != want {
            if let Some(row) = cx.rows.last_mut() {
                row.pass = false;
                row.note = format!("{op} changed its buffers although its skip flag was set");
            }
        }
    };
    let (r, c) = both!(cx, sgd(&p, &g, &mu, Some(1.0)));
    cx.compare("sgd_step p (skipped)", EXACT, &r[0], &c[0]);
    unchanged(cx, "sgd_step", &[&r[0], &r[1], &c[0], &c[1]], &[&p, &mu, &p, &mu]);
    let (r, c) = both!(cx, lars(&p, &g, &mu, 1e-6, 0.37, Some(1.0)));
    cx.compare("lars_step p (skipped)", EXACT, &r[0], &c[0]);
    unchanged(cx, "lars_step", &[&r[0], &r[1], &c[0], &c[1]], &[&p, &mu, &p, &mu]);
    let (r, c) = both!(cx, lars_all(&tensors, [&pz, &g, &mu], Some(1.0)));
    cx.compare("lars_step_all p (skipped)", EXACT, &r[0], &c[0]);
    unchanged(cx, "lars_step_all", &[&r[0], &r[1], &c[0], &c[1]], &[&pz, &mu, &pz, &mu]);
    let (r, c) = both!(cx, adamw(&p, &g, &mu, &v, 7, Some(1.0)));
    cx.compare("adamw_step p (skipped)", EXACT, &r[0], &c[0]);
    unchanged(cx, "adamw_step", &[&r[0], &r[1], &r[2], &c[0], &c[1], &c[2]], &[&p, &mu, &v, &p, &mu, &v]);
    Ok(())
}
