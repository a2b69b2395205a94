//! Elementwise ops: ReLU, residual add, axpby, scale, fp16 rounding. Compiled, not yet run on
//! a GPU.

use super::CudaBackend;
use crate::cuda::buffer::{BufElem, DevView, DevViewMut};
use crate::cuda::launch::Dtype;
use crate::error::Result;
use half::f16;

impl CudaBackend {
    pub(crate) fn relu_inplace_impl(&self, x: &mut DevViewMut<'_>) -> Result<()> {
        let k = &self.kernels.elementwise;
        match x {
            DevViewMut::F16(v) => k.relu_inplace(&self.stream, v),
            DevViewMut::F32(v) => k.relu_inplace(&self.stream, v),
        }
    }

    pub(crate) fn relu_bwd_impl(
        &self,
        y: &DevView<'_>,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        match dx.dtype() {
            Dtype::F16 => self.relu_bwd_t::<f16>(y, dy, dx),
            Dtype::F32 => self.relu_bwd_t::<f32>(y, dy, dx),
        }
    }

    fn relu_bwd_t<T: BufElem>(
        &self,
        y: &DevView<'_>,
        dy: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let (y, dy) = (self.src::<T>(y)?, self.src::<T>(dy)?);
        let mut out = self.dst::<T>(dx, false)?;
        self.kernels.elementwise.relu_bwd(&self.stream, &y.view(), &dy.view(), &mut out.view())?;
        out.finish(self)
    }

    /// y += x. fp16 + fp16 stays fp16 (one rounding); anything involving fp32 is summed in
    /// fp32 and rounded once into y.
    pub(crate) fn add_inplace_impl(&self, x: &DevView<'_>, y: &mut DevViewMut<'_>) -> Result<()> {
        let k = &self.kernels.elementwise;
        match (x, &mut *y) {
            (DevView::F16(x), DevViewMut::F16(y)) => k.add_inplace(&self.stream, x, y),
            (DevView::F16(x), DevViewMut::F32(y)) => k.axpy_f16_to_f32(&self.stream, 1.0, x, y),
            _ => {
                let x = self.src::<f32>(x)?;
                let mut out = self.dst::<f32>(y, true)?;
                k.add_inplace(&self.stream, &x.view(), &mut out.view())?;
                out.finish(self)
            }
        }
    }

    /// y = alpha x + beta y, computed in fp32.
    pub(crate) fn axpby_impl(
        &self,
        alpha: f32,
        x: &DevView<'_>,
        beta: f32,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x = self.src::<f32>(x)?;
        let mut out = self.dst::<f32>(y, true)?;
        self.kernels.elementwise.axpby(&self.stream, alpha, &x.view(), beta, &mut out.view())?;
        out.finish(self)
    }

    /// x *= alpha, computed in fp32.
    pub(crate) fn scale_impl(&self, x: &mut DevViewMut<'_>, alpha: f32) -> Result<()> {
        let mut out = self.dst::<f32>(x, true)?;
        self.kernels.elementwise.scale(&self.stream, alpha, &mut out.view())?;
        out.finish(self)
    }

    /// Under AMP an fp32 buffer is rounded to fp16 precision in place (what the CPU backend
    /// emulates); fp16 buffers already are, and without AMP nothing is rounded.
    pub(crate) fn round_act_impl(&self, x: &mut DevViewMut<'_>) -> Result<()> {
        match x {
            DevViewMut::F32(v) if self.amp => self.kernels.cast.round_to_f16(&self.stream, v),
            _ => Ok(()),
        }
    }
}
