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

    /// One update of `params` from (already unscaled, averaged) `grads`.
    pub fn step(
        &mut self,
        be: &B,
        specs: &[ParamSpec],
        params: &mut B::Buf,
        grads: &B::Buf,
        lr: f32,
        wd: f32,
    ) {
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
            ),
            Optimizer::Lars => {
                for p in specs {
                    let r = p.range();
                    // LARS excludes 1-D tensors (BN gammas/betas) from decay and adaptation.
                    let (decay, trust) = if p.kind.is_matrix() {
                        let pn = be.sumsq(B::view(params, r.clone())).sqrt();
                        let dn =
                            be.sumsq_axpy(wd, B::view(params, r.clone()), B::view(grads, r.clone())).sqrt();
                        let trust = if pn > 0.0 && dn > 0.0 { (TRUST * pn / dn) as f32 } else { 1.0 };
                        (wd, trust)
                    } else {
                        (0.0, 1.0)
                    };
                    be.lars_step(
                        lr,
                        MOMENTUM,
                        decay,
                        trust,
                        B::view_mut(params, r.clone()),
                        B::view(grads, r.clone()),
                        B::view_mut(&mut self.m, r),
                    );
                }
            }
        }
    }
}
