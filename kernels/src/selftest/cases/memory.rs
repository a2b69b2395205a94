//! Buffers to and from the host, zeroed buffers, `write`, `buf_len`, sub-range views, `copy`
//! between precisions and `fill`.

use crate::backend::Backend;
use crate::error::Result;
use crate::selftest::harness::{both, full_mut, Cx, Tol, EXACT};

/// fp32 -> fp16 copies round once (to nearest even): half an fp16 ulp is 2^-11 = 4.9e-4
/// relative; 1e-3 allows that single rounding and nothing more.
const ONE_FP16_ROUNDING: Tol = Tol::new(0.0, 1e-3);

/// Everything the memory ops produce, concatenated: round trips of both kinds of buffer,
/// zeroed buffers, a write at an offset, and the buffer length.
fn round_trips<X: Backend>(be: &X, act: &[f32], master: &[f32]) -> Result<Vec<f32>> {
    let a = be.act_from_host(act)?;
    let m = be.from_host(master)?;
    let z = be.zeros(5)?;
    let zm = be.zeros_master(7)?;
    let mut w = be.from_host(master)?;
    be.write(&mut w, 3, &act[..4])?;
    let mut out = be.to_host(&a)?;
    out.extend(be.to_host(&m)?);
    out.extend(be.to_host(&z)?);
    out.extend(be.to_host(&zm)?);
    out.extend(be.to_host(&w)?);
    out.push(X::buf_len(&w) as f32);
    out.push(X::buf_len(&be.zeros(0)?) as f32);
    Ok(out)
}

/// Three uploads of the same size in a row, read back only after all were queued: on CUDA, at
/// full scale, they go through the two pinned staging buffers in turn, so the third reuses the
/// first's buffer and must not disturb the copy queued from it.
fn staged_uploads<X: Backend>(be: &X, act: &[f32]) -> Result<Vec<f32>> {
    let shifted: Vec<f32> = act.iter().rev().copied().collect();
    let negated: Vec<f32> = act.iter().map(|v| -v).collect();
    let bufs = [be.act_from_host(act)?, be.act_from_host(&shifted)?, be.act_from_host(&negated)?];
    let mut out = Vec::with_capacity(3 * act.len());
    for b in &bufs {
        out.extend(be.to_host(b)?);
    }
    Ok(out)
}

/// `copy` act -> act, master -> act (rounds under AMP) and act -> master, each between
/// sub-ranges at odd offsets.
fn copies<X: Backend>(be: &X, act: &[f32], master: &[f32]) -> Result<[Vec<f32>; 3]> {
    let n = act.len() - 3;
    let a = be.act_from_host(act)?;
    let m = be.from_host(master)?;
    let mut aa = be.zeros(n + 5)?;
    be.copy(X::view(&a, 3..3 + n), X::view_mut(&mut aa, 5..5 + n));
    let mut ma = be.zeros(n)?;
    be.copy(X::view(&m, 1..1 + n), full_mut::<X>(&mut ma));
    let mut am = be.zeros_master(n + 1)?;
    be.copy(X::view(&a, 0..n), X::view_mut(&mut am, 1..1 + n));
    be.sync()?;
    Ok([be.to_host(&aa)?, be.to_host(&ma)?, be.to_host(&am)?])
}

/// `fill` of a sub-range of an activation buffer (0.1 is not an fp16 value) and of a whole
/// fp32 buffer.
fn fills<X: Backend>(be: &X, len: usize) -> Result<[Vec<f32>; 2]> {
    let mut a = be.zeros(len)?;
    be.fill(X::view_mut(&mut a, 3..len - 2), 0.1);
    let mut m = be.zeros_master(len)?;
    be.fill(full_mut::<X>(&mut m), -0.25);
    be.sync()?;
    Ok([be.to_host(&a)?, be.to_host(&m)?])
}

pub(crate) fn run<A: Backend, B: Backend>(cx: &mut Cx<'_, A, B>) -> Result<()> {
    let n = cx.size(37, 100_003);
    let act = cx.gen.acts(n, 0.0, 2.0);
    let master = cx.gen.normals(n, 0.5, 3.0);

    // Pre-rounded activations make both kinds of round trip exact in either precision.
    let (r, c) = both!(cx, round_trips(&act, &master));
    cx.compare("act_from_host/from_host/to_host/zeros/zeros_master/write/buf_len", EXACT, &r, &c);

    let (r, c) = both!(cx, staged_uploads(&act));
    cx.compare("act_from_host x3 in a row (pinned staging, reused)", EXACT, &r, &c);

    let (r, c) = both!(cx, copies(&act, &master));
    cx.compare("copy act->act (sub-ranges)", EXACT, &r[0], &c[0]);
    cx.compare("copy fp32->act (rounds under AMP)", ONE_FP16_ROUNDING, &r[1], &c[1]);
    cx.compare("copy act->fp32", EXACT, &r[2], &c[2]);

    let (r, c) = both!(cx, fills(n));
    cx.compare("fill act sub-range with 0.1", ONE_FP16_ROUNDING, &r[0], &c[0]);
    cx.compare("fill fp32", EXACT, &r[1], &c[1]);

    // view/view_mut are exercised above (sub-ranges) and by every case below; host_mut is
    // backend-specific by definition (Some on the CPU, None on a device) and not compared.
    Ok(())
}
