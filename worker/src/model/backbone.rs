//! ResNet-50 backbone forward and backward on the `Backend` op set, with per-block recompute.
//!
//! The tape always keeps the block boundaries (stem output and every block's output): they are
//! the inputs of the blocks and what the final ReLU of each block needs in the backward. With
//! `Keep::All` it also keeps each block's inner activations; with `Keep::BlockInputs` (recompute)
//! it keeps only the BN statistics of the inner layers, and the backward re-runs the block
//! forward from its input with those saved statistics, so recomputed activations are bit-equal
//! to the first forward's and running statistics are not updated a second time.

use super::bn::{bn_backward, bn_forward, BnSaved, BnStats};
use super::topology::{BackboneSpec, Bottleneck, ConvSpec, ParamSpec};
use super::views::{full, full_mut};
use crate::error::Result;
use moco_kernels::{Backend, ConvShape, PoolShape};

/// What a forward keeps for the backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// No backward will follow (momentum encoder): free activations as soon as they are used.
    Nothing,
    /// Keep every activation the backward needs.
    All,
    /// Keep block inputs only; the backward recomputes each block (gradient checkpointing).
    BlockInputs,
}

/// Everything one forward pass needs besides its input.
pub struct Ctx<'a, B: Backend> {
    pub be: &'a B,
    pub params: &'a [ParamSpec],
    /// Weights used for compute (the fp16-rounded copy under AMP emulation).
    pub weights: &'a B::Buf,
    pub stats: BnStats<'a, B>,
    pub keep: Keep,
}

/// A block's inner activations: conv outputs (BN inputs) and BN+ReLU outputs (next conv inputs).
struct Inner<B: Backend> {
    z1: B::Buf,
    y1: B::Buf,
    z2: B::Buf,
    y2: B::Buf,
    z3: B::Buf,
    zd: Option<B::Buf>,
}

/// BN statistics of one block's four (or three) BN layers.
pub struct BlockStats<B: Backend> {
    bn1: BnSaved<B>,
    bn2: BnSaved<B>,
    bn3: BnSaved<B>,
    bnd: Option<BnSaved<B>>,
}

pub struct BlockTape<B: Backend> {
    stats: Option<BlockStats<B>>,
    inner: Option<Inner<B>>,
    /// Spatial size of the block input.
    h: usize,
    w: usize,
}

pub struct BackboneTape<B: Backend> {
    n: usize,
    /// Input image batch (stem conv backward-filter needs it).
    input: Option<B::Buf>,
    stem_z: Option<B::Buf>,
    stem_y: Option<B::Buf>,
    stem_bn: Option<BnSaved<B>>,
    /// (input size, stem conv output h, w).
    stem_hw: (usize, usize, usize),
    /// Spatial size of the last block's output.
    final_hw: (usize, usize),
    /// bounds[0] = stem output (after max pool); bounds[i + 1] = output of block i.
    pub bounds: Vec<B::Buf>,
    blocks: Vec<BlockTape<B>>,
}

impl<B: Backend> BackboneTape<B> {
    /// Output of stage `s` (0..4) as kept on the tape (`Keep::All` or `BlockInputs`).
    pub fn stage_output(&self, spec: &BackboneSpec, s: usize) -> Option<&B::Buf> {
        self.bounds.get(spec.stage_ends[s])
    }
    /// Stem output (after the max pool).
    pub fn stem_output(&self) -> Option<&B::Buf> {
        self.bounds.first()
    }
}

fn conv_shape(c: &ConvSpec, n: usize, h: usize, w: usize) -> ConvShape {
    ConvShape { n, h, w, c_in: c.c_in, c_out: c.c_out, k: c.k, stride: c.stride, pad: c.pad }
}

fn conv_fwd<B: Backend>(
    ctx: &Ctx<B>,
    c: &ConvSpec,
    n: usize,
    h: usize,
    w: usize,
    x: &B::Buf,
) -> Result<B::Buf> {
    let s = conv_shape(c, n, h, w);
    let mut y = ctx.be.alloc(s.y_len())?;
    ctx.be.conv2d_fwd(
        &s,
        full::<B>(x),
        B::view(ctx.weights, ctx.params[c.weight].range()),
        full_mut::<B>(&mut y),
    );
    ctx.be.round_act(full_mut::<B>(&mut y));
    Ok(y)
}

/// conv backward: dw += filter grad, returns dx.
#[allow(clippy::too_many_arguments)]
fn conv_bwd<B: Backend>(
    ctx: &Ctx<B>,
    grads: &mut B::Buf,
    c: &ConvSpec,
    n: usize,
    h: usize,
    w: usize,
    x: &B::Buf,
    dy: &B::Buf,
    want_dx: bool,
) -> Result<Option<B::Buf>> {
    let s = conv_shape(c, n, h, w);
    let range = ctx.params[c.weight].range();
    ctx.be.conv2d_bwd_filter(&s, full::<B>(x), full::<B>(dy), B::view_mut(grads, range.clone()));
    if !want_dx {
        return Ok(None);
    }
    let mut dx = ctx.be.alloc(s.x_len())?;
    ctx.be.conv2d_bwd_data(&s, full::<B>(dy), B::view(ctx.weights, range), full_mut::<B>(&mut dx));
    ctx.be.round_act(full_mut::<B>(&mut dx));
    Ok(Some(dx))
}

/// BN (+ReLU) forward over an NHWC activation; returns (y, saved stats).
fn bn_fwd<B: Backend>(
    ctx: &Ctx<B>,
    spec: &super::topology::BnSpec,
    running: Option<&mut B::Buf>,
    saved: Option<&BnSaved<B>>,
    x: &B::Buf,
    relu: bool,
) -> Result<(B::Buf, Option<BnSaved<B>>)> {
    let len = B::buf_len(x);
    let m = len / spec.c;
    let mut y = ctx.be.alloc(len)?;
    let s = bn_forward(ctx.be, spec, ctx.weights, running, ctx.stats, saved, m, x, relu, &mut y, ctx.params)?;
    ctx.be.round_act(full_mut::<B>(&mut y));
    Ok((y, s))
}

/// dz = BN backward of dy (dy already masked by the ReLU if any).
fn bn_bwd<B: Backend>(
    ctx: &Ctx<B>,
    grads: &mut B::Buf,
    spec: &super::topology::BnSpec,
    saved: &BnSaved<B>,
    z: &B::Buf,
    dy: &B::Buf,
) -> Result<B::Buf> {
    let len = B::buf_len(z);
    let mut dz = ctx.be.alloc(len)?;
    bn_backward(
        ctx.be,
        spec,
        ctx.weights,
        grads,
        ctx.stats,
        saved,
        len / spec.c,
        z,
        dy,
        &mut dz,
        ctx.params,
    )?;
    ctx.be.round_act(full_mut::<B>(&mut dz));
    Ok(dz)
}

fn relu_bwd<B: Backend>(be: &B, y: &B::Buf, dy: &B::Buf) -> Result<B::Buf> {
    let mut dx = be.alloc(B::buf_len(y))?;
    be.relu_bwd(full::<B>(y), full::<B>(dy), full_mut::<B>(&mut dx));
    Ok(dx)
}

/// A block's output, inner activations and BN statistics.
type BlockOut<B> = (<B as Backend>::Buf, Inner<B>, Option<BlockStats<B>>);

/// One bottleneck forward. Returns the output, its inner activations and its BN statistics.
#[allow(clippy::too_many_arguments)]
fn block_forward<B: Backend>(
    ctx: &Ctx<B>,
    blk: &Bottleneck,
    mut running: Option<&mut B::Buf>,
    saved: Option<&BlockStats<B>>,
    x: &B::Buf,
    n: usize,
    h: usize,
    w: usize,
) -> Result<BlockOut<B>> {
    let (h2, w2) = (blk.conv2.out_size(h), blk.conv2.out_size(w));
    let z1 = conv_fwd(ctx, &blk.conv1, n, h, w, x)?;
    let (y1, s1) = bn_fwd(ctx, &blk.bn1, running.as_deref_mut(), saved.map(|s| &s.bn1), &z1, true)?;
    let z2 = conv_fwd(ctx, &blk.conv2, n, h, w, &y1)?;
    let (y2, s2) = bn_fwd(ctx, &blk.bn2, running.as_deref_mut(), saved.map(|s| &s.bn2), &z2, true)?;
    let z3 = conv_fwd(ctx, &blk.conv3, n, h2, w2, &y2)?;
    let (mut out, s3) = bn_fwd(ctx, &blk.bn3, running.as_deref_mut(), saved.map(|s| &s.bn3), &z3, false)?;
    let (zd, sd) = match &blk.downsample {
        Some((conv, bn)) => {
            let zd = conv_fwd(ctx, conv, n, h, w, x)?;
            let saved_d = saved.and_then(|s| s.bnd.as_ref());
            let (yd, sd) = bn_fwd(ctx, bn, running, saved_d, &zd, false)?;
            ctx.be.add_inplace(full::<B>(&yd), full_mut::<B>(&mut out));
            (Some(zd), sd)
        }
        None => {
            ctx.be.add_inplace(full::<B>(x), full_mut::<B>(&mut out));
            (None, None)
        }
    };
    ctx.be.relu_inplace(full_mut::<B>(&mut out));
    ctx.be.round_act(full_mut::<B>(&mut out));
    let stats = match (s1, s2, s3) {
        (Some(bn1), Some(bn2), Some(bn3)) => Some(BlockStats { bn1, bn2, bn3, bnd: sd }),
        _ => None,
    };
    Ok((out, Inner { z1, y1, z2, y2, z3, zd }, stats))
}

/// Backbone forward of an NHWC batch `[n, size, size, c_in]`; returns pooled features `[n, feat]`.
pub fn backbone_forward<B: Backend>(
    ctx: &Ctx<B>,
    spec: &BackboneSpec,
    mut running: Option<&mut B::Buf>,
    x: B::Buf,
    n: usize,
    size: usize,
) -> Result<(B::Buf, BackboneTape<B>)> {
    let keep = ctx.keep != Keep::Nothing;
    let stem = &spec.stem_conv;
    let z = conv_fwd(ctx, stem, n, size, size, &x)?;
    let (y, stem_bn) = bn_fwd(ctx, &spec.stem_bn, running.as_deref_mut(), None, &z, true)?;
    let (h1, w1) = (stem.out_size(size), stem.out_size(size));
    let ps = PoolShape { n, h: h1, w: w1, c: stem.c_out };
    let mut p = ctx.be.alloc(ps.y_len())?;
    ctx.be.maxpool_fwd(&ps, full::<B>(&y), full_mut::<B>(&mut p));
    let (mut h, mut w) = (ps.out_h(), ps.out_w());

    let mut tape = BackboneTape {
        n,
        input: keep.then_some(x),
        stem_z: keep.then_some(z),
        stem_y: keep.then_some(y),
        stem_bn: if keep { stem_bn } else { None },
        stem_hw: (size, h1, w1),
        final_hw: (0, 0),
        bounds: Vec::new(),
        blocks: Vec::new(),
    };
    let mut cur = p;
    for blk in &spec.blocks {
        let (out, inner, stats) = block_forward(ctx, blk, running.as_deref_mut(), None, &cur, n, h, w)?;
        tape.blocks.push(BlockTape {
            stats: if keep { stats } else { None },
            inner: (ctx.keep == Keep::All).then_some(inner),
            h,
            w,
        });
        let next = out;
        if keep {
            tape.bounds.push(std::mem::replace(&mut cur, next));
        } else {
            cur = next;
        }
        h = blk.conv2.out_size(h);
        w = blk.conv2.out_size(w);
    }
    let hw = h * w;
    let mut feat = ctx.be.alloc(n * spec.feat_dim)?;
    ctx.be.avgpool_fwd(n, hw, spec.feat_dim, full::<B>(&cur), full_mut::<B>(&mut feat));
    ctx.be.round_act(full_mut::<B>(&mut feat));
    tape.bounds.push(cur);
    tape.final_hw = (h, w);
    Ok((feat, tape))
}

/// Backbone backward from the gradient of the pooled features. Parameter gradients accumulate
/// into `grads`; returns the input gradient if asked (gradient checks).
pub fn backbone_backward<B: Backend>(
    ctx: &Ctx<B>,
    spec: &BackboneSpec,
    tape: BackboneTape<B>,
    dfeat: &B::Buf,
    grads: &mut B::Buf,
    want_dinput: bool,
) -> Result<Option<B::Buf>> {
    backbone_backward_hooked(ctx, spec, tape, dfeat, grads, want_dinput, &mut None)
}

/// Called during a backward with `start` whenever the gradients of every parameter at offset
/// >= `start` are final (in this backward), so their all-reduce can begin.
pub type GradsReady<'a, B> = &'a mut dyn FnMut(usize, &mut <B as Backend>::Buf) -> Result<()>;

/// `backbone_backward` that reports finished gradient ranges to `ready`.
#[allow(clippy::too_many_arguments)]
pub fn backbone_backward_hooked<B: Backend>(
    ctx: &Ctx<B>,
    spec: &BackboneSpec,
    mut tape: BackboneTape<B>,
    dfeat: &B::Buf,
    grads: &mut B::Buf,
    want_dinput: bool,
    ready: &mut Option<GradsReady<'_, B>>,
) -> Result<Option<B::Buf>> {
    let be = ctx.be;
    let n = tape.n;
    let (h, w) = tape.final_hw;
    let mut dcur = be.alloc(n * h * w * spec.feat_dim)?;
    be.avgpool_bwd(n, h * w, spec.feat_dim, full::<B>(dfeat), full_mut::<B>(&mut dcur));
    be.round_act(full_mut::<B>(&mut dcur));

    for blk in spec.blocks.iter().rev() {
        let bt = tape.blocks.pop().expect("one tape entry per block");
        let out = tape.bounds.pop().expect("block output on tape");
        let x = tape.bounds.last().expect("block input on tape");
        let stats = bt.stats.as_ref().expect("backward needs a tape made with Keep::All or BlockInputs");
        let inner = match bt.inner {
            Some(inner) => inner,
            None => block_forward(ctx, blk, None, Some(stats), x, n, bt.h, bt.w)?.1,
        };
        let (h2, w2) = (blk.conv2.out_size(bt.h), blk.conv2.out_size(bt.w));
        // out = relu(bn3(z3) + shortcut): the mask applies to both branches.
        let g = relu_bwd(be, &out, &dcur)?;
        drop(out);
        let dz3 = bn_bwd(ctx, grads, &blk.bn3, &stats.bn3, &inner.z3, &g)?;
        let dy2 = conv_bwd(ctx, grads, &blk.conv3, n, h2, w2, &inner.y2, &dz3, true)?.expect("dx");
        let dy2 = relu_bwd(be, &inner.y2, &dy2)?;
        let dz2 = bn_bwd(ctx, grads, &blk.bn2, &stats.bn2, &inner.z2, &dy2)?;
        let dy1 = conv_bwd(ctx, grads, &blk.conv2, n, bt.h, bt.w, &inner.y1, &dz2, true)?.expect("dx");
        let dy1 = relu_bwd(be, &inner.y1, &dy1)?;
        let dz1 = bn_bwd(ctx, grads, &blk.bn1, &stats.bn1, &inner.z1, &dy1)?;
        let mut dx = conv_bwd(ctx, grads, &blk.conv1, n, bt.h, bt.w, x, &dz1, true)?.expect("dx");
        match (&blk.downsample, &inner.zd, &stats.bnd) {
            (Some((conv, bn)), Some(zd), Some(sd)) => {
                let dzd = bn_bwd(ctx, grads, bn, sd, zd, &g)?;
                let dxs = conv_bwd(ctx, grads, conv, n, bt.h, bt.w, x, &dzd, true)?.expect("dx");
                be.add_inplace(full::<B>(&dxs), full_mut::<B>(&mut dx));
            }
            _ => be.add_inplace(full::<B>(&g), full_mut::<B>(&mut dx)),
        }
        be.round_act(full_mut::<B>(&mut dx));
        dcur = dx;
        if let Some(r) = ready.as_mut() {
            // A block's parameters start with its conv1 weight; everything after it is final.
            r(ctx.params[blk.conv1.weight].offset, grads)?;
        }
    }

    // Stem: max pool, BN + ReLU, 7x7/2 conv.
    let (size, h1, w1) = tape.stem_hw;
    let stem = &spec.stem_conv;
    let y = tape.stem_y.take().expect("stem activations on tape");
    let z = tape.stem_z.take().expect("stem activations on tape");
    let input = tape.input.take().expect("input on tape");
    let bn = tape.stem_bn.take().expect("stem BN stats on tape");
    let ps = PoolShape { n, h: h1, w: w1, c: stem.c_out };
    let mut dy = be.alloc(ps.x_len())?;
    be.maxpool_bwd(&ps, full::<B>(&y), full::<B>(&dcur), full_mut::<B>(&mut dy));
    let dy = relu_bwd(be, &y, &dy)?;
    let dz = bn_bwd(ctx, grads, &spec.stem_bn, &bn, &z, &dy)?;
    let dx = conv_bwd(ctx, grads, stem, n, size, size, &input, &dz, want_dinput)?;
    if let Some(r) = ready.as_mut() {
        r(0, grads)?;
    }
    Ok(dx)
}
