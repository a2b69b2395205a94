//! The three optimisers of MOCO.md on the flat fp32 master weights, written once against the
//! op set: LARS (MoCo v3, ResNet), SGD with momentum (MoCo v2) and AdamW (MoCo v3, ViT).

use crate::error::Result;
use crate::model::topology::ParamSpec;
use moco_kernels::Backend;
use moco_proto::config::Optimizer;

/// SGD/LARS momentum coefficient (both references use 0.9).
pub const MOMENTUM: f32 = 0.9;
/// LARS trust coefficient (MoCo v3's `trust_coefficient`).
pub const TRUST: f64 = 0.001;
pub const ADAM_BETAS: (f32, f32) = (0.9, 0.999);
pub const ADAM_EPS: f32 = 1e-8;

/// Optimiser state: momentum buffer(s) the size of the parameters.
pub struct OptimState<B: Backend> {
    pub kind: Optimizer,
    /// SGD/LARS momentum, or AdamW's first moment.
    pub m: B::Buf,
    /// AdamW's second moment (empty for SGD/LARS).
    pub v: B::Buf,
    /// Optimiser steps taken (AdamW bias correction).
    pub steps: u64,
}

impl<B: Backend> OptimState<B> {
    pub fn new(be: &B, kind: Optimizer, len: usize) -> Result<Self> {
        let v_len = if kind == Optimizer::Adamw { len } else { 0 };
        Ok(OptimState { kind, m: be.zeros_master(len)?, v: be.zeros_master(v_len)?, steps: 0 })
    }

    /// One update of `params` from (already unscaled, averaged) `grads`, which does nothing on
    /// the device when `skip` (the step's inf/NaN verdict, a device flag) is set; the caller
    /// then undoes the step count with [`OptimState::unstep`] once it has read the verdict.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        be: &B,
        specs: &[ParamSpec],
        params: &mut B::Buf,
        grads: &B::Buf,
        lr: f32,
        wd: f32,
        skip: Option<(&B::Buf, usize)>,
    ) {
        // The flag is element `i` of a device buffer; each launch gets its own view of it.
        let flag = || skip.map(|(buf, i)| B::view(buf, i..i + 1));
        self.steps += 1;
        let n = B::buf_len(params);
        match self.kind {
            // torch.optim.SGD applies weight decay to every parameter, as MoCo v2 uses it.
            Optimizer::Sgd => be.sgd_step(
                lr,
                MOMENTUM,
                wd,
                B::view_mut(params, 0..n),
                B::view(grads, 0..n),
                B::view_mut(&mut self.m, 0..n),
                flag(),
            ),
            // MoCo v3 hands AdamW every parameter with one weight decay.
            Optimizer::Adamw => be.adamw_step(
                lr,
                ADAM_BETAS.0,
                ADAM_BETAS.1,
                ADAM_EPS,
                wd,
                self.steps,
                B::view_mut(params, 0..n),
                B::view(grads, 0..n),
                B::view_mut(&mut self.m, 0..n),
                B::view_mut(&mut self.v, 0..n),
                flag(),
            ),
            Optimizer::Lars => {
                // One call for every tensor: the norms and trust ratios stay on the device.
                // LARS excludes 1-D tensors (BN gammas/betas) from decay and adaptation.
                let tensors: Vec<(usize, bool)> =
                    specs.iter().map(|p| (p.range().len(), p.kind.is_matrix())).collect();
                debug_assert!(
                    specs.windows(2).all(|w| w[0].range().end == w[1].range().start)
                        && specs.first().is_none_or(|p| p.range().start == 0)
                        && specs.last().is_none_or(|p| p.range().end == n),
                    "the parameter tensors tile the flat buffer"
                );
                be.lars_step_all(
                    lr,
                    MOMENTUM,
                    wd,
                    TRUST,
                    &tensors,
                    B::view_mut(params, 0..n),
                    B::view(grads, 0..n),
                    B::view_mut(&mut self.m, 0..n),
                    flag(),
                );
            }
        }
    }

    /// A step that its skip flag turned into a no-op on the device is not counted (AdamW's
    /// bias correction counts applied steps).
    pub fn unstep(&mut self) {
        self.steps -= 1;
    }
}
