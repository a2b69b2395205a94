//! Max pool (the stem's 3x3/2) and global average pool, forward and backward, in the
//! activation type. Compiled, not yet run on a GPU.

use super::CudaBackend;
use crate::cuda::buffer::{BufElem, DevView, DevViewMut};
use crate::cuda::launch::Dtype;
use crate::error::Result;
use crate::shapes::PoolShape;
use half::f16;

impl CudaBackend {
    pub(crate) fn maxpool_fwd_impl(
        &self,
        s: &PoolShape,
        x: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match x.dtype() {
            Dtype::F16 => self.maxpool_fwd_t::<f16>(s, x, y),
            Dtype::F32 => self.maxpool_fwd_t::<f32>(s, x, y),
        }
    }

    fn maxpool_fwd_t<T: BufElem>(
        &self,
        s: &PoolShape,
        x: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x = self.src::<T>(x)?;
        let mut out = self.dst::<T>(y, false)?;
        self.kernels.pool.maxpool_fwd(&self.stream, s, &x.view(), &mut out.view())?;
        out.finish(self)
    }

    pub(crate) fn maxpool_bwd_impl(
        &self,
        s: &PoolShape,
        x: &DevView<'_>,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match dx.dtype() {
            Dtype::F16 => self.maxpool_bwd_t::<f16>(s, x, dy, dx),
            Dtype::F32 => self.maxpool_bwd_t::<f32>(s, x, dy, dx),
        }
    }

    fn maxpool_bwd_t<T: BufElem>(
        &self,
        s: &PoolShape,
        x: &DevView<'_>,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (x, dy) = (self.src::<T>(x)?, self.src::<T>(dy)?);
        let mut out = self.dst::<T>(dx, false)?;
        self.kernels.pool.maxpool_bwd(&self.stream, s, &x.view(), &dy.view(), &mut out.view())?;
        out.finish(self)
    }

    pub(crate) fn avgpool_fwd_impl(
        &self,
        n: usize,
        hw: usize,
        c: usize,
        x: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match x.dtype() {
            Dtype::F16 => self.avgpool_fwd_t::<f16>(n, hw, c, x, y),
            Dtype::F32 => self.avgpool_fwd_t::<f32>(n, hw, c, x, y),
        }
    }

    fn avgpool_fwd_t<T: BufElem>(
        &self,
        n: usize,
        hw: usize,
        c: usize,
        x: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x = self.src::<T>(x)?;
        let mut out = self.dst::<T>(y, false)?;
        self.kernels.pool.avgpool_fwd(&self.stream, n, hw, c, &x.view(), &mut out.view())?;
        out.finish(self)
    }

    pub(crate) fn avgpool_bwd_impl(
        &self,
        n: usize,
        hw: usize,
        c: usize,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match dx.dtype() {
            Dtype::F16 => self.avgpool_bwd_t::<f16>(n, hw, c, dy, dx),
            Dtype::F32 => self.avgpool_bwd_t::<f32>(n, hw, c, dy, dx),
        }
    }

    fn avgpool_bwd_t<T: BufElem>(
        &self,
        n: usize,
        hw: usize,
        c: usize,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let dy = self.src::<T>(dy)?;
        let mut out = self.dst::<T>(dx, false)?;
        self.kernels.pool.avgpool_bwd(&self.stream, n, hw, c, &dy.view(), &mut out.view())?;
        out.finish(self)
    }
}
