//! An encoder = backbone + projector (+ predictor on the query side), forward and backward.

use super::backbone::{backbone_backward_hooked, backbone_forward, BackboneTape, Ctx, GradsReady};
use super::heads::{head_backward_hooked, head_forward, HeadTape};
use super::topology::Topology;
use crate::error::Result;
use moco_kernels::Backend;

pub struct EncoderTape<B: Backend> {
    pub backbone: BackboneTape<B>,
    pub projector: HeadTape<B>,
    pub predictor: Option<HeadTape<B>>,
}

/// Forward of `x` `[n, size, size, c_in]` through backbone, projector and, if `predictor`,
/// the predictor. Returns `[n, dim]` (not normalised).
pub fn encoder_forward<B: Backend>(
    ctx: &Ctx<B>,
    topo: &Topology,
    mut running: Option<&mut B::Buf>,
    x: B::Buf,
    n: usize,
    size: usize,
    predictor: bool,
) -> Result<(B::Buf, EncoderTape<B>)> {
    let (feat, backbone) = backbone_forward(ctx, &topo.backbone, running.as_deref_mut(), x, n, size)?;
    let (proj, projector) = head_forward(ctx, &topo.projector, running.as_deref_mut(), feat, n)?;
    if !predictor {
        return Ok((proj, EncoderTape { backbone, projector, predictor: None }));
    }
    let (pred, pred_tape) = head_forward(ctx, &topo.predictor, running, proj, n)?;
    Ok((pred, EncoderTape { backbone, projector, predictor: Some(pred_tape) }))
}

/// Backward from the gradient of the encoder output; parameter gradients accumulate into
/// `grads`. Returns the input gradient if asked.
pub fn encoder_backward<B: Backend>(
    ctx: &Ctx<B>,
    topo: &Topology,
    tape: EncoderTape<B>,
    dout: B::Buf,
    grads: &mut B::Buf,
    want_dinput: bool,
) -> Result<Option<B::Buf>> {
    encoder_backward_hooked(ctx, topo, tape, dout, grads, want_dinput, &mut None)
}

/// `encoder_backward` reporting, as it goes, the offset from which every parameter gradient is
/// final (predictor, projector, then backbone blocks from the last: the flat layout's suffixes).
pub fn encoder_backward_hooked<B: Backend>(
    ctx: &Ctx<B>,
    topo: &Topology,
    tape: EncoderTape<B>,
    dout: B::Buf,
    grads: &mut B::Buf,
    want_dinput: bool,
    ready: &mut Option<GradsReady<'_, B>>,
) -> Result<Option<B::Buf>> {
    let dproj = match tape.predictor {
        Some(pt) => head_backward_hooked(ctx, &topo.predictor, pt, dout, grads, ready)?,
        None => dout,
    };
    let dfeat = head_backward_hooked(ctx, &topo.projector, tape.projector, dproj, grads, ready)?;
    backbone_backward_hooked(ctx, &topo.backbone, tape.backbone, &dfeat, grads, want_dinput, ready)
}
