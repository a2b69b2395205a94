//! Operands in the element type a kernel needs. The `Backend` trait does not say which
//! buffers are fp16 and which fp32 (the model decides: `zeros` vs `zeros_master`), so every op
//! accepts any mix: an operand that already has the kernel's type is used in place (the case
//! the model's hot path always hits), any other is converted into an arena temporary, and an
//! output temporary is converted back into the caller's view when the op is done. Operands
//! are also moved to a temporary when cuDNN needs 16-byte alignment they lack.

use super::CudaBackend;
use crate::cuda::buffer::{BufElem, DevView, DevViewMut};
use crate::cuda::launch::expect_len;
use crate::cuda::memory::Block;
use crate::error::{KernelError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr};

fn internal(what: &str) -> KernelError {
    KernelError::Cuda { op: "stage", detail: format!("internal: {what} has an unexpected element type") }
}

/// An input of element type `T`.
pub(crate) enum Src<'v, 'a, T> {
    /// The caller's view, used in place.
    View(&'v CudaView<'a, T>),
    /// A converted (or realigned) copy.
    Temp(Block<T>),
}

impl<T> Src<'_, '_, T> {
    pub fn view(&self) -> CudaView<'_, T> {
        match self {
            Src::View(v) => v.slice(..),
            Src::Temp(b) => b.slice().as_view(),
        }
    }
}

/// An output of element type `T`; call [`Dst::finish`] after the kernel.
pub(crate) enum Dst<'v, 'a, T> {
    View(&'v mut CudaViewMut<'a, T>),
    /// A temporary of type `T`, converted into `target` by `finish`.
    Temp {
        target: &'v mut DevViewMut<'a>,
        temp: Block<T>,
    },
}

impl<T: BufElem> Dst<'_, '_, T> {
    pub fn view(&mut self) -> CudaViewMut<'_, T> {
        match self {
            Dst::View(v) => v.slice_mut(..),
            Dst::Temp { temp, .. } => temp.slice_mut().as_view_mut(),
        }
    }

    /// Writes a temporary back into the caller's view (nothing to do for an in-place output).
    pub fn finish(self, be: &CudaBackend) -> Result<()> {
        match self {
            Dst::View(_) => Ok(()),
            Dst::Temp { target, temp } => be.convert(&T::wrap_view(temp.slice().as_view()), target),
        }
    }
}

/// An optional input (gamma / beta of an affine-free BN, an absent `x`).
pub(crate) fn opt_view<'s, T>(src: &'s Option<Src<'_, '_, T>>) -> Option<CudaView<'s, T>> {
    src.as_ref().map(Src::view)
}

fn is_aligned<T>(v: &CudaView<'_, T>, be: &CudaBackend) -> bool {
    let (ptr, _sync) = v.device_ptr(&be.stream);
    ptr % 16 == 0
}

fn is_aligned_mut<T>(v: &CudaViewMut<'_, T>, be: &CudaBackend) -> bool {
    let (ptr, _sync) = v.device_ptr(&be.stream);
    ptr % 16 == 0
}

impl CudaBackend {
    /// `src` converted to `T` (a copy only if its type differs).
    pub(crate) fn src<'v, 'a, T: BufElem>(&self, src: &'v DevView<'a>) -> Result<Src<'v, 'a, T>> {
        self.src_with(src, false)
    }

    /// As [`CudaBackend::src`], also copying a view whose address is not 16-byte aligned.
    pub(crate) fn src_aligned<'v, 'a, T: BufElem>(&self, src: &'v DevView<'a>) -> Result<Src<'v, 'a, T>> {
        self.src_with(src, true)
    }

    fn src_with<'v, 'a, T: BufElem>(&self, src: &'v DevView<'a>, align: bool) -> Result<Src<'v, 'a, T>> {
        if src.dtype() == T::DTYPE {
            let v = T::of_view(src).ok_or_else(|| internal("an input"))?;
            if !align || is_aligned(v, self) {
                return Ok(Src::View(v));
            }
        }
        let mut temp = self.pool.alloc::<T>("staging copy of an input", src.len())?;
        self.convert(src, &mut T::wrap_view_mut(temp.slice_mut().as_view_mut()))?;
        Ok(Src::Temp(temp))
    }

    /// An optional input converted to `T`.
    pub(crate) fn src_opt<'v, 'a, T: BufElem>(
        &self,
        src: &'v Option<DevView<'a>>,
    ) -> Result<Option<Src<'v, 'a, T>>> {
        src.as_ref().map(|v| self.src::<T>(v)).transpose()
    }

    /// An output of type `T`. With `read`, a temporary starts as a copy of the target (for
    /// ops that read their output: accumulations, in-place updates).
    pub(crate) fn dst<'v, 'a, T: BufElem>(
        &self,
        target: &'v mut DevViewMut<'a>,
        read: bool,
    ) -> Result<Dst<'v, 'a, T>> {
        self.dst_with(target, read, false)
    }

    /// As [`CudaBackend::dst`], also using a temporary when the target is not 16-byte aligned.
    pub(crate) fn dst_aligned<'v, 'a, T: BufElem>(
        &self,
        target: &'v mut DevViewMut<'a>,
        read: bool,
    ) -> Result<Dst<'v, 'a, T>> {
        self.dst_with(target, read, true)
    }

    fn dst_with<'v, 'a, T: BufElem>(
        &self,
        target: &'v mut DevViewMut<'a>,
        read: bool,
        align: bool,
    ) -> Result<Dst<'v, 'a, T>> {
        let in_place = target.dtype() == T::DTYPE && {
            let v = T::of_view_mut(target).ok_or_else(|| internal("an output"))?;
            !align || is_aligned_mut(v, self)
        };
        if in_place {
            return T::of_view_mut(target).map(Dst::View).ok_or_else(|| internal("an output"));
        }
        let mut temp = self.pool.alloc::<T>("staging copy of an output", target.len())?;
        if read {
            self.convert(&target.as_view(), &mut T::wrap_view_mut(temp.slice_mut().as_view_mut()))?;
        }
        Ok(Dst::Temp { target, temp })
    }

    /// dst = src converted to dst's element type (fp16 rounding to nearest even, or exact).
    pub(crate) fn convert(&self, src: &DevView<'_>, dst: &mut DevViewMut<'_>) -> Result<()> {
        expect_len("copy", "destination", dst.len(), src.len())?;
        let k = &self.kernels.cast;
        let copy_err = |e| crate::cuda::launch::driver_err("memcpy_dtod", e);
        match (src, dst) {
            (DevView::F16(s), DevViewMut::F16(d)) => self.stream.memcpy_dtod(s, d).map_err(copy_err),
            (DevView::F32(s), DevViewMut::F32(d)) => self.stream.memcpy_dtod(s, d).map_err(copy_err),
            (DevView::F32(s), DevViewMut::F16(d)) => k.f32_to_f16(&self.stream, s, d),
            (DevView::F16(s), DevViewMut::F32(d)) => k.f16_to_f32(&self.stream, s, d),
        }
    }
}
