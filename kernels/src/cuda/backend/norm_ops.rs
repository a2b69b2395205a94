//! Batch norm and L2 normalisation: activations in their own type, statistics, parameters and
//! sums in fp32 (gamma / beta read from the fp16 weight copy are widened first). Compiled, not
//! yet run on a GPU.

use super::stage::opt_view;
use super::CudaBackend;
use crate::cuda::batchnorm::workspace_len;
use crate::cuda::buffer::{BufElem, DevView, DevViewMut};
use crate::cuda::launch::Dtype;
use crate::error::Result;
use half::f16;

/// The scalar arguments of `bn_apply`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BnApply {
    pub m: usize,
    pub c: usize,
    pub eps: f32,
    pub relu: bool,
}

/// The scalar arguments of `bn_bwd_apply`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BnBwdApply {
    pub m: usize,
    pub c: usize,
    pub count: usize,
    pub eps: f32,
}

impl CudaBackend {
    pub(crate) fn bn_stats_impl(
        &self,
        m: usize,
        c: usize,
        x: &DevView<'_>,
        mean: &mut DevViewMut<'_>,
        var: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match x.dtype() {
            Dtype::F16 => self.bn_stats_t::<f16>(m, c, x, mean, var),
            Dtype::F32 => self.bn_stats_t::<f32>(m, c, x, mean, var),
        }
    }

    fn bn_stats_t<T: BufElem>(
        &self,
        m: usize,
        c: usize,
        x: &DevView<'_>,
        mean: &mut DevViewMut<'_>,
        var: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x = self.src::<T>(x)?;
        let mut ws = self.pool.alloc::<f32>("batch-norm partial sums", workspace_len(m, c))?;
        let mut mean_out = self.dst::<f32>(mean, false)?;
        let mut var_out = self.dst::<f32>(var, false)?;
        self.kernels.bn.stats(
            &self.stream,
            m,
            c,
            &x.view(),
            &mut ws.slice_mut().as_view_mut(),
            &mut mean_out.view(),
            &mut var_out.view(),
        )?;
        mean_out.finish(self)?;
        var_out.finish(self)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bn_apply_impl(
        &self,
        a: BnApply,
        x: &DevView<'_>,
        mean: &DevView<'_>,
        var: &DevView<'_>,
        gamma: &Option<DevView<'_>>,
        beta: &Option<DevView<'_>>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match x.dtype() {
            Dtype::F16 => self.bn_apply_t::<f16>(a, x, mean, var, gamma, beta, y),
            Dtype::F32 => self.bn_apply_t::<f32>(a, x, mean, var, gamma, beta, y),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn bn_apply_t<T: BufElem>(
        &self,
        a: BnApply,
        x: &DevView<'_>,
        mean: &DevView<'_>,
        var: &DevView<'_>,
        gamma: &Option<DevView<'_>>,
        beta: &Option<DevView<'_>>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x = self.src::<T>(x)?;
        let (mean, var) = (self.src::<f32>(mean)?, self.src::<f32>(var)?);
        let (gamma, beta) = (self.src_opt::<f32>(gamma)?, self.src_opt::<f32>(beta)?);
        let mut out = self.dst::<T>(y, false)?;
        self.kernels.bn.apply(
            &self.stream,
            a.m,
            a.c,
            &x.view(),
            &mean.view(),
            &var.view(),
            a.eps,
            opt_view(&gamma).as_ref(),
            opt_view(&beta).as_ref(),
            a.relu,
            &mut out.view(),
        )?;
        out.finish(self)
    }

    /// `ins` = [x, dy, mean, var].
    pub(crate) fn bn_bwd_reduce_impl(
        &self,
        m: usize,
        c: usize,
        eps: f32,
        ins: [&DevView<'_>; 4],
        sum_dy: &mut DevViewMut<'_>,
        sum_dy_xhat: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match ins[0].dtype() {
            Dtype::F16 => self.bn_bwd_reduce_t::<f16>(m, c, eps, ins, sum_dy, sum_dy_xhat),
            Dtype::F32 => self.bn_bwd_reduce_t::<f32>(m, c, eps, ins, sum_dy, sum_dy_xhat),
        }
    }

    fn bn_bwd_reduce_t<T: BufElem>(
        &self,
        m: usize,
        c: usize,
        eps: f32,
        [x, dy, mean, var]: [&DevView<'_>; 4],
        sum_dy: &mut DevViewMut<'_>,
        sum_dy_xhat: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (x, dy) = (self.src::<T>(x)?, self.src::<T>(dy)?);
        let (mean, var) = (self.src::<f32>(mean)?, self.src::<f32>(var)?);
        let mut ws = self.pool.alloc::<f32>("batch-norm partial sums", workspace_len(m, c))?;
        let mut s1 = self.dst::<f32>(sum_dy, false)?;
        let mut s2 = self.dst::<f32>(sum_dy_xhat, false)?;
        self.kernels.bn.bwd_reduce(
            &self.stream,
            m,
            c,
            &x.view(),
            &dy.view(),
            &mean.view(),
            &var.view(),
            eps,
            &mut ws.slice_mut().as_view_mut(),
            &mut s1.view(),
            &mut s2.view(),
        )?;
        s1.finish(self)?;
        s2.finish(self)
    }

    /// `ins` = [x, dy, mean, var, sum_dy, sum_dy_xhat].
    pub(crate) fn bn_bwd_apply_impl(
        &self,
        a: BnBwdApply,
        ins: [&DevView<'_>; 6],
        gamma: &Option<DevView<'_>>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match dx.dtype() {
            Dtype::F16 => self.bn_bwd_apply_t::<f16>(a, ins, gamma, dx),
            Dtype::F32 => self.bn_bwd_apply_t::<f32>(a, ins, gamma, dx),
        }
    }

    fn bn_bwd_apply_t<T: BufElem>(
        &self,
        a: BnBwdApply,
        [x, dy, mean, var, sum_dy, sum_dy_xhat]: [&DevView<'_>; 6],
        gamma: &Option<DevView<'_>>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (x, dy) = (self.src::<T>(x)?, self.src::<T>(dy)?);
        let (mean, var) = (self.src::<f32>(mean)?, self.src::<f32>(var)?);
        let (s1, s2) = (self.src::<f32>(sum_dy)?, self.src::<f32>(sum_dy_xhat)?);
        let gamma = self.src_opt::<f32>(gamma)?;
        let mut out = self.dst::<T>(dx, false)?;
        self.kernels.bn.bwd_apply(
            &self.stream,
            a.m,
            a.c,
            a.count,
            &x.view(),
            &dy.view(),
            &mean.view(),
            &var.view(),
            a.eps,
            opt_view(&gamma).as_ref(),
            &s1.view(),
            &s2.view(),
            &mut out.view(),
        )?;
        out.finish(self)
    }

    pub(crate) fn bn_running_update_impl(
        &self,
        c: usize,
        mean: &DevView<'_>,
        var: &DevView<'_>,
        count: usize,
        momentum: f32,
        running: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (mean, var) = (self.src::<f32>(mean)?, self.src::<f32>(var)?);
        let mut out = self.dst::<f32>(running, true)?;
        self.kernels.bn.running_update(
            &self.stream,
            c,
            &mean.view(),
            &var.view(),
            count,
            momentum,
            &mut out.view(),
        )?;
        out.finish(self)
    }

    pub(crate) fn bn_group_mean_impl(
        &self,
        groups: usize,
        c: usize,
        x: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x = self.src::<f32>(x)?;
        let mut out = self.dst::<f32>(y, false)?;
        self.kernels.bn.group_mean(&self.stream, groups, c, &x.view(), &mut out.view())?;
        out.finish(self)
    }

    pub(crate) fn bn_moments_pack_impl(
        &self,
        c: usize,
        mean: &DevView<'_>,
        var: &DevView<'_>,
        packed: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (mean, var) = (self.src::<f32>(mean)?, self.src::<f32>(var)?);
        let mut out = self.dst::<f32>(packed, false)?;
        self.kernels.bn.moments_pack(&self.stream, c, &mean.view(), &var.view(), &mut out.view())?;
        out.finish(self)
    }

    pub(crate) fn bn_moments_unpack_impl(
        &self,
        c: usize,
        world: usize,
        packed: &DevView<'_>,
        mean: &mut DevViewMut<'_>,
        var: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let packed = self.src::<f32>(packed)?;
        let mut m = self.dst::<f32>(mean, false)?;
        let mut v = self.dst::<f32>(var, false)?;
        self.kernels.bn.moments_unpack(
            &self.stream,
            c,
            world,
            &packed.view(),
            &mut m.view(),
            &mut v.view(),
        )?;
        m.finish(self)?;
        v.finish(self)
    }

    pub(crate) fn l2norm_fwd_impl(
        &self,
        n: usize,
        d: usize,
        x: &DevView<'_>,
        y: &mut DevViewMut<'_>,
        norm: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match x.dtype() {
            Dtype::F16 => self.l2norm_fwd_t::<f16>(n, d, x, y, norm),
            Dtype::F32 => self.l2norm_fwd_t::<f32>(n, d, x, y, norm),
        }
    }

    fn l2norm_fwd_t<T: BufElem>(
        &self,
        n: usize,
        d: usize,
        x: &DevView<'_>,
        y: &mut DevViewMut<'_>,
        norm: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x = self.src::<T>(x)?;
        let mut y_out = self.dst::<T>(y, false)?;
        let mut norm_out = self.dst::<f32>(norm, false)?;
        self.kernels.l2norm.fwd(&self.stream, n, d, &x.view(), &mut y_out.view(), &mut norm_out.view())?;
        y_out.finish(self)?;
        norm_out.finish(self)
    }

    pub(crate) fn l2norm_bwd_impl(
        &self,
        n: usize,
        d: usize,
        y: &DevView<'_>,
        norm: &DevView<'_>,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match dx.dtype() {
            Dtype::F16 => self.l2norm_bwd_t::<f16>(n, d, y, norm, dy, dx),
            Dtype::F32 => self.l2norm_bwd_t::<f32>(n, d, y, norm, dy, dx),
        }
    }

    fn l2norm_bwd_t<T: BufElem>(
        &self,
        n: usize,
        d: usize,
        y: &DevView<'_>,
        norm: &DevView<'_>,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (y, dy) = (self.src::<T>(y)?, self.src::<T>(dy)?);
        let norm = self.src::<f32>(norm)?;
        let mut out = self.dst::<T>(dx, false)?;
        self.kernels.l2norm.bwd(&self.stream, n, d, &y.view(), &norm.view(), &dy.view(), &mut out.view())?;
        out.finish(self)
    }
}
