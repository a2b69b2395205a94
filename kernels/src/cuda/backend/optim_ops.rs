//! Optimiser pieces on fp32 buffers: sums of squares (in double, summed on the host in a fixed
//! order), EMA, unscale into a device inf/NaN flag, and SGD, LARS, AdamW steps that a device
//! flag can skip. Compiled, not yet run on a GPU.

use super::CudaBackend;
use crate::cuda::buffer::{DevView, DevViewMut};
use crate::cuda::launch::driver_err;
use crate::cuda::optim::{SegmentTables, Segments, MAX_RANGE_PARTIALS};
use crate::error::{KernelError, Result};
use cudarc::driver::CudaSlice;

/// The hyper-parameters of one LARS step over all tensors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lars {
    pub lr: f32,
    pub momentum: f32,
    pub wd: f32,
    pub eta: f64,
}

/// The device tables of the LARS tensor layout: built on the first step and kept, since the
/// model's parameter list does not change during a run (no per-step upload).
pub(crate) struct LarsLayout {
    tensors: Vec<(usize, bool)>,
    segs: Segments,
    adapt: CudaSlice<i32>,
}

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

    pub(crate) fn unscale_check_impl(
        &self,
        g: &mut DevViewMut<'_>,
        inv_scale: f32,
        found: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let mut out = self.dst::<f32>(g, true)?;
        let mut flag = self.dst::<f32>(found, true)?;
        self.kernels.optim.unscale_check(&self.stream, inv_scale, &mut out.view(), &mut flag.view())?;
        out.finish(self)?;
        flag.finish(self)
    }

    /// `h` = [lr, momentum, wd].
    pub(crate) fn sgd_step_impl(
        &self,
        [lr, momentum, wd]: [f32; 3],
        p: &mut DevViewMut<'_>,
        g: &DevView<'_>,
        mu: &mut DevViewMut<'_>,
        skip: Option<&DevView<'_>>,
    ) -> Result<()> {
        let g = self.src::<f32>(g)?;
        let skip = skip.map(|s| self.src::<f32>(s)).transpose()?;
        let skip_view = skip.as_ref().map(|s| s.view());
        let mut p_out = self.dst::<f32>(p, true)?;
        let mut mu_out = self.dst::<f32>(mu, true)?;
        self.kernels.optim.sgd_step(
            &self.stream,
            lr,
            momentum,
            wd,
            skip_view.as_ref(),
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
        skip: Option<&DevView<'_>>,
    ) -> Result<()> {
        let g = self.src::<f32>(g)?;
        let skip = skip.map(|s| self.src::<f32>(s)).transpose()?;
        let skip_view = skip.as_ref().map(|s| s.view());
        let mut p_out = self.dst::<f32>(p, true)?;
        let mut mu_out = self.dst::<f32>(mu, true)?;
        self.kernels.optim.lars_step_scalar(
            &self.stream,
            lr,
            momentum,
            wd,
            trust,
            skip_view.as_ref(),
            &mut p_out.view(),
            &g.view(),
            &mut mu_out.view(),
            None,
        )?;
        p_out.finish(self)?;
        mu_out.finish(self)
    }

    /// LARS over every tensor: |p|^2 and |g + wd p|^2 per tensor by one segmented reduction
    /// each, the trust ratios from them, then one step, all on the device.
    pub(crate) fn lars_step_all_impl(
        &self,
        h: Lars,
        tensors: &[(usize, bool)],
        (p, g, mu): (&mut DevViewMut<'_>, &DevView<'_>, &mut DevViewMut<'_>),
        skip: Option<&DevView<'_>>,
    ) -> Result<()> {
        let mut cache = self
            .lars_layout
            .lock()
            .map_err(|_| KernelError::Cuda { op: "lars_step_all", detail: "layout lock poisoned".into() })?;
        let layout = match cache.take() {
            Some(l) if l.tensors == tensors => l,
            _ => {
                let lens: Vec<usize> = tensors.iter().map(|t| t.0).collect();
                let segs = Segments::upload(&self.stream, SegmentTables::from_lens(&lens)?)?;
                let adapt: Vec<i32> = tensors.iter().map(|t| i32::from(t.1)).collect();
                let adapt = self.stream.clone_htod(&adapt).map_err(|e| driver_err("memcpy_htod", e))?;
                LarsLayout { tensors: tensors.to_vec(), segs, adapt }
            }
        };
        let result = self.lars_with_layout(h, &layout, (p, g, mu), skip);
        *cache = Some(layout);
        result
    }

    fn lars_with_layout(
        &self,
        h: Lars,
        layout: &LarsLayout,
        (p, g, mu): (&mut DevViewMut<'_>, &DevView<'_>, &mut DevViewMut<'_>),
        skip: Option<&DevView<'_>>,
    ) -> Result<()> {
        let t = layout.segs.host();
        let (n_seg, blocks) = (t.n_seg(), t.total_blocks());
        let g = self.src::<f32>(g)?;
        let skip = skip.map(|s| self.src::<f32>(s)).transpose()?;
        let skip_view = skip.as_ref().map(|s| s.view());
        let mut p_out = self.dst::<f32>(p, true)?;
        let mut mu_out = self.dst::<f32>(mu, true)?;
        let mut partial = self.pool.alloc::<f64>("LARS partial sums", blocks.max(1))?;
        let mut p_sq = self.pool.alloc::<f64>("LARS |p|^2", n_seg)?;
        let mut d_sq = self.pool.alloc::<f64>("LARS |g + wd p|^2", n_seg)?;
        let mut trust = self.pool.alloc::<f32>("LARS trust ratios", n_seg)?;
        let optim = &self.kernels.optim;
        let (adapt, gv) = (layout.adapt.as_view(), g.view());
        {
            let pv = p_out.view();
            let mut part = partial.slice_mut().slice_mut(..blocks);
            optim.sumsq_segments(
                &self.stream,
                &layout.segs,
                0.0,
                None,
                &pv.as_view(),
                &mut part,
                &mut p_sq.slice_mut().as_view_mut(),
            )?;
            optim.sumsq_segments(
                &self.stream,
                &layout.segs,
                h.wd,
                Some(&pv.as_view()),
                &gv,
                &mut part,
                &mut d_sq.slice_mut().as_view_mut(),
            )?;
        }
        // The kernel takes eta in fp32 (0.001 becomes 0.0010000000475): a relative change of
        // 5e-8 in the trust ratio, within the fp32 rounding of the ratio itself.
        optim.lars_trust(
            &self.stream,
            h.eta as f32,
            &adapt,
            &p_sq.slice().as_view(),
            &d_sq.slice().as_view(),
            &mut trust.slice_mut().as_view_mut(),
        )?;
        optim.lars_step(
            &self.stream,
            &layout.segs,
            &adapt,
            &trust.slice().as_view(),
            h.lr,
            h.momentum,
            h.wd,
            skip_view.as_ref(),
            &mut p_out.view(),
            &gv,
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
        (m, v): (&mut DevViewMut<'_>, &mut DevViewMut<'_>),
        skip: Option<&DevView<'_>>,
    ) -> Result<()> {
        let g = self.src::<f32>(g)?;
        let skip = skip.map(|s| self.src::<f32>(s)).transpose()?;
        let skip_view = skip.as_ref().map(|s| s.view());
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
            skip_view.as_ref(),
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
