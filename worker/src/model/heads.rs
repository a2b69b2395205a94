//! The MoCo v3 projector and predictor: Linear (no bias) -> [BN] -> [ReLU] layers.

use super::backbone::{Ctx, GradsReady, Keep};
use super::bn::{bn_backward, bn_forward, BnSaved};
use super::topology::LinearSpec;
use super::views::{full, full_mut};
use crate::error::Result;
use moco_kernels::Backend;

struct LayerTape<B: Backend> {
    x: B::Buf,
    /// Linear output (BN input).
    h: B::Buf,
    /// Layer output (after BN and ReLU), kept for the ReLU mask.
    a: Option<B::Buf>,
    bn: Option<BnSaved<B>>,
}

pub struct HeadTape<B: Backend> {
    n: usize,
    layers: Vec<LayerTape<B>>,
}

/// Forward of an MLP head on `x` `[n, d_in]`; returns `[n, d_out]`.
pub fn head_forward<B: Backend>(
    ctx: &Ctx<B>,
    layers: &[LinearSpec],
    mut running: Option<&mut B::Buf>,
    x: B::Buf,
    n: usize,
) -> Result<(B::Buf, HeadTape<B>)> {
    let be = ctx.be;
    let keep = ctx.keep != Keep::Nothing;
    let mut tape = HeadTape { n, layers: Vec::new() };
    let mut cur = x;
    for l in layers {
        let mut h = be.alloc(n * l.d_out)?;
        be.linear_fwd(
            n,
            l.d_in,
            l.d_out,
            full::<B>(&cur),
            B::view(ctx.weights, ctx.params[l.weight].range()),
            full_mut::<B>(&mut h),
        );
        be.round_act(full_mut::<B>(&mut h));
        let (out, bn) = match &l.bn {
            Some(spec) => {
                let mut a = be.alloc(n * l.d_out)?;
                let saved = bn_forward(
                    be,
                    spec,
                    ctx.weights,
                    running.as_deref_mut(),
                    ctx.stats,
                    None,
                    n,
                    &h,
                    l.relu,
                    &mut a,
                    ctx.params,
                )?;
                be.round_act(full_mut::<B>(&mut a));
                (a, saved)
            }
            None => {
                let mut a = clone_buf(be, &h)?;
                if l.relu {
                    be.relu_inplace(full_mut::<B>(&mut a));
                }
                (a, None)
            }
        };
        if keep {
            let a_keep = if l.relu { Some(clone_buf(be, &out)?) } else { None };
            tape.layers.push(LayerTape { x: cur, h, a: a_keep, bn });
        }
        cur = out;
    }
    Ok((cur, tape))
}

/// Backward of an MLP head: parameter gradients accumulate into `grads`; returns dx.
pub fn head_backward<B: Backend>(
    ctx: &Ctx<B>,
    layers: &[LinearSpec],
    tape: HeadTape<B>,
    dout: B::Buf,
    grads: &mut B::Buf,
) -> Result<B::Buf> {
    head_backward_hooked(ctx, layers, tape, dout, grads, &mut None)
}

/// `head_backward` that reports finished gradient ranges (see `GradsReady`).
pub fn head_backward_hooked<B: Backend>(
    ctx: &Ctx<B>,
    layers: &[LinearSpec],
    tape: HeadTape<B>,
    dout: B::Buf,
    grads: &mut B::Buf,
    ready: &mut Option<GradsReady<'_, B>>,
) -> Result<B::Buf> {
    let be = ctx.be;
    let n = tape.n;
    let mut d = dout;
    for (l, t) in layers.iter().zip(tape.layers).rev() {
        if l.relu {
            let a = t.a.as_ref().expect("ReLU output on tape");
            let mut masked = be.alloc(B::buf_len(&d))?;
            be.relu_bwd(full::<B>(a), full::<B>(&d), full_mut::<B>(&mut masked));
            d = masked;
        }
        let dh = match (&l.bn, &t.bn) {
            (Some(spec), Some(saved)) => {
                let mut dh = be.alloc(n * l.d_out)?;
                bn_backward(
                    be,
                    spec,
                    ctx.weights,
                    grads,
                    ctx.stats,
                    saved,
                    n,
                    &t.h,
                    &d,
                    &mut dh,
                    ctx.params,
                )?;
                be.round_act(full_mut::<B>(&mut dh));
                dh
            }
            _ => d,
        };
        let range = ctx.params[l.weight].range();
        be.linear_bwd_weight(
            n,
            l.d_in,
            l.d_out,
            full::<B>(&t.x),
            full::<B>(&dh),
            B::view_mut(grads, range.clone()),
        );
        let mut dx = be.alloc(n * l.d_in)?;
        be.linear_bwd_data(
            n,
            l.d_in,
            l.d_out,
            full::<B>(&dh),
            B::view(ctx.weights, range),
            full_mut::<B>(&mut dx),
        );
        be.round_act(full_mut::<B>(&mut dx));
        d = dx;
        if let Some(r) = ready.as_mut() {
            // A layer's parameters start with its weight (then its BN's gamma and beta).
            r(ctx.params[l.weight].offset, grads)?;
        }
    }
    Ok(d)
}

pub fn clone_buf<B: Backend>(be: &B, x: &B::Buf) -> Result<B::Buf> {
    let mut y = be.alloc(B::buf_len(x))?;
    be.copy(full::<B>(x), full_mut::<B>(&mut y));
    Ok(y)
}

impl<B: Backend> HeadTape<B> {
    /// The head's input as kept on the tape (pooled features for the projector, projector output
    /// for the predictor).
    pub fn input(&self) -> Option<&B::Buf> {
        self.layers.first().map(|l| &l.x)
    }
}
