//! Optimiser pieces on fp32 buffers: sums of squares (in double, summed on the host in a fixed
//! order), EMA, unscale with the inf/NaN flag, SGD, LARS, AdamW. Compiled, not yet run on a GPU.

use super::CudaBackend;
use crate::cuda::buffer::{DevView, DevViewMut};
use crate::cuda::optim::MAX_RANGE_PARTIALS;
use crate::error::Result;

/// The hyper-parameters of one AdamW step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub wd: f32,
    pub step: u64,
}

impl CudaBackend {
    /// Sum of squares of (y + alpha x) (x absent: of y), in double.
    pub(crate) fn sumsq_impl(&self, alpha: f32, x: Option<&DevView<'_>>, y: &DevView<'_>) -> Result<f64> {
        let x = x.map(|x| self.src::<f32>(x)).transpose()?;
        let y = self.src::<f32>(y)?;
        let mut partial = self.pool.alloc::<f64>("sum-of-squares partials", MAX_RANGE_PARTIALS)?;
        let x_view = x.as_ref().map(|x| x.view());
        let blocks = self.kernels.optim.sumsq_range(
            &self.stream,
            alpha,
            x_view.as_ref(),
            &y.view(),
            &mut partial.slice_mut().as_view_mut(),
        )?;
        Ok(self.block_to_host(&partial, blocks)?.iter().sum())
    }

    pub(crate) fn ema_impl(&self, m: f32, theta_q: &DevView<'_>, theta_k: &mut DevViewMut<'_>) -> Result<()> {
        let q = self.src::<f32>(theta_q)?;
        let mut k = self.dst::<f32>(theta_k, true)?;
        self.kernels.optim.ema(&self.stream, m, &q.view(), &mut k.view(), None)?;
        k.finish(self)
    }

    pub(crate) fn unscale_check_impl(&self, g: &mut DevViewMut<'_>, inv_scale: f32) -> Result<bool> {
        let mut flag = self.pool.zeros::<i32>("inf/NaN flag", 1)?;
        let mut out = self.dst::<f32>(g, true)?;
        self.kernels.optim.unscale_check(
            &self.stream,
            inv_scale,
            &mut out.view(),
            &mut flag.slice_mut().as_view_mut(),
        )?;
        out.finish(self)?;
        Ok(self.block_to_host(&flag, 1)?.first().is_some_and(|&f| f != 0))
    }

    pub(crate) fn sgd_step_impl(
        &self,
        lr: f32,
        momentum: f32,
        wd: f32,
        p: &mut DevViewMut<'_>,
        g: &DevView<'_>,
        mu: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let g = self.src::<f32>(g)?;
        let mut p_out = self.dst::<f32>(p, true)?;
        let mut mu_out = self.dst::<f32>(mu, true)?;
        self.kernels.optim.sgd_step(
            &self.stream,
            lr,
            momentum,
            wd,
            None,
            &mut p_out.view(),
            &g.view(),
            &mut mu_out.view(),
            None,
        )?;
        p_out.finish(self)?;
        mu_out.finish(self)
    }

    /// `h` = [lr, momentum, wd, trust].
    pub(crate) fn lars_step_impl(
        &self,
        [lr, momentum, wd, trust]: [f32; 4],
        p: &mut DevViewMut<'_>,
        g: &DevView<'_>,
        mu: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let g = self.src::<f32>(g)?;
        let mut p_out = self.dst::<f32>(p, true)?;
        let mut mu_out = self.dst::<f32>(mu, true)?;
        self.kernels.optim.lars_step_scalar(
            &self.stream,
            lr,
            momentum,
            wd,
            trust,
            &mut p_out.view(),
            &g.view(),
            &mut mu_out.view(),
            None,
        )?;
        p_out.finish(self)?;
        mu_out.finish(self)
    }

    pub(crate) fn adamw_step_impl(
        &self,
        h: AdamW,
        p: &mut DevViewMut<'_>,
        g: &DevView<'_>,
        m: &mut DevViewMut<'_>,
        v: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let g = self.src::<f32>(g)?;
        let mut p_out = self.dst::<f32>(p, true)?;
        let mut m_out = self.dst::<f32>(m, true)?;
        let mut v_out = self.dst::<f32>(v, true)?;
        self.kernels.optim.adamw_step(
            &self.stream,
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            h.wd,
            h.step,
            None,
            &mut p_out.view(),
            &g.view(),
            &mut m_out.view(),
            &mut v_out.view(),
            None,
        )?;
        p_out.finish(self)?;
        m_out.finish(self)?;
        v_out.finish(self)
    }
}
