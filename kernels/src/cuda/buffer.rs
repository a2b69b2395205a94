//! The CUDA backend's `Buf`, `View` and `ViewMut`: device buffers that know their element
//! type (fp16 activations under AMP, fp32 otherwise and for master state), and views of a
//! contiguous range of one. Compiled, not yet run on a GPU.

use crate::cuda::cudnn_conv::ConvElem;
use crate::cuda::launch::Dtype;
use crate::cuda::memory::Block;
use cudarc::driver::{CudaView, CudaViewMut};
use half::f16;
use std::ops::Range;

/// The memory of a buffer, by element type.
#[derive(Debug)]
pub enum Mem {
    F16(Block<f16>),
    F32(Block<f32>),
}

/// A device buffer of the CUDA backend (`<CudaBackend as Backend>::Buf`). Its memory returns to
/// the backend's arena when it is dropped.
#[derive(Debug)]
pub struct CudaBuf {
    pub(crate) mem: Mem,
}

impl CudaBuf {
    pub fn len(&self) -> usize {
        match &self.mem {
            Mem::F16(b) => b.len(),
            Mem::F32(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> Dtype {
        match &self.mem {
            Mem::F16(_) => Dtype::F16,
            Mem::F32(_) => Dtype::F32,
        }
    }

    /// A view of `range` (panics when the range is out of bounds, as slice indexing does).
    pub fn view(&self, range: Range<usize>) -> DevView<'_> {
        match &self.mem {
            Mem::F16(b) => DevView::F16(b.slice().slice(range)),
            Mem::F32(b) => DevView::F32(b.slice().slice(range)),
        }
    }

    /// A writable view of `range` (panics when the range is out of bounds).
    pub fn view_mut(&mut self, range: Range<usize>) -> DevViewMut<'_> {
        match &mut self.mem {
            Mem::F16(b) => DevViewMut::F16(b.slice_mut().slice_mut(range)),
            Mem::F32(b) => DevViewMut::F32(b.slice_mut().slice_mut(range)),
        }
    }

    pub fn full(&self) -> DevView<'_> {
        self.view(0..self.len())
    }

    pub fn full_mut(&mut self) -> DevViewMut<'_> {
        let len = self.len();
        self.view_mut(0..len)
    }
}

/// A read-only view of a range of a [`CudaBuf`] (`<CudaBackend as Backend>::View`).
#[derive(Debug)]
pub enum DevView<'a> {
    F16(CudaView<'a, f16>),
    F32(CudaView<'a, f32>),
}

/// A writable view of a range of a [`CudaBuf`] (`<CudaBackend as Backend>::ViewMut`).
#[derive(Debug)]
pub enum DevViewMut<'a> {
    F16(CudaViewMut<'a, f16>),
    F32(CudaViewMut<'a, f32>),
}

impl DevView<'_> {
    pub fn len(&self) -> usize {
        match self {
            DevView::F16(v) => v.len(),
            DevView::F32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> Dtype {
        match self {
            DevView::F16(_) => Dtype::F16,
            DevView::F32(_) => Dtype::F32,
        }
    }
}

impl DevViewMut<'_> {
    pub fn len(&self) -> usize {
        match self {
            DevViewMut::F16(v) => v.len(),
            DevViewMut::F32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> Dtype {
        match self {
            DevViewMut::F16(_) => Dtype::F16,
            DevViewMut::F32(_) => Dtype::F32,
        }
    }
    /// A read-only view of the same range.
    pub fn as_view(&self) -> DevView<'_> {
        match self {
            DevViewMut::F16(v) => DevView::F16(v.as_view()),
            DevViewMut::F32(v) => DevView::F32(v.as_view()),
        }
    }
}

/// The element types a buffer can hold, with typed access to views and blocks.
pub trait BufElem: ConvElem {
    fn of_view<'v, 'a>(v: &'v DevView<'a>) -> Option<&'v CudaView<'a, Self>>;
    fn of_view_mut<'v, 'a>(v: &'v mut DevViewMut<'a>) -> Option<&'v mut CudaViewMut<'a, Self>>;
    fn of_buf(b: &CudaBuf) -> Option<&Block<Self>>;
    fn of_buf_mut(b: &mut CudaBuf) -> Option<&mut Block<Self>>;
    fn wrap(b: Block<Self>) -> CudaBuf;
    fn wrap_view(v: CudaView<'_, Self>) -> DevView<'_>;
    fn wrap_view_mut(v: CudaViewMut<'_, Self>) -> DevViewMut<'_>;
}

impl BufElem for f16 {
    fn of_view<'v, 'a>(v: &'v DevView<'a>) -> Option<&'v CudaView<'a, Self>> {
        match v {
            DevView::F16(v) => Some(v),
            DevView::F32(_) => None,
        }
    }
    fn of_view_mut<'v, 'a>(v: &'v mut DevViewMut<'a>) -> Option<&'v mut CudaViewMut<'a, Self>> {
        match v {
            DevViewMut::F16(v) => Some(v),
            DevViewMut::F32(_) => None,
        }
    }
    fn of_buf(b: &CudaBuf) -> Option<&Block<Self>> {
        match &b.mem {
            Mem::F16(b) => Some(b),
            Mem::F32(_) => None,
        }
    }
    fn of_buf_mut(b: &mut CudaBuf) -> Option<&mut Block<Self>> {
        match &mut b.mem {
            Mem::F16(b) => Some(b),
            Mem::F32(_) => None,
        }
    }
    fn wrap(b: Block<Self>) -> CudaBuf {
        CudaBuf { mem: Mem::F16(b) }
    }
    fn wrap_view(v: CudaView<'_, Self>) -> DevView<'_> {
        DevView::F16(v)
    }
    fn wrap_view_mut(v: CudaViewMut<'_, Self>) -> DevViewMut<'_> {
        DevViewMut::F16(v)
    }
}

impl BufElem for f32 {
    fn of_view<'v, 'a>(v: &'v DevView<'a>) -> Option<&'v CudaView<'a, Self>> {
        match v {
            DevView::F32(v) => Some(v),
            DevView::F16(_) => None,
        }
    }
    fn of_view_mut<'v, 'a>(v: &'v mut DevViewMut<'a>) -> Option<&'v mut CudaViewMut<'a, Self>> {
        match v {
            DevViewMut::F32(v) => Some(v),
            DevViewMut::F16(_) => None,
        }
    }
    fn of_buf(b: &CudaBuf) -> Option<&Block<Self>> {
        match &b.mem {
            Mem::F32(b) => Some(b),
            Mem::F16(_) => None,
        }
    }
    fn of_buf_mut(b: &mut CudaBuf) -> Option<&mut Block<Self>> {
        match &mut b.mem {
            Mem::F32(b) => Some(b),
            Mem::F16(_) => None,
        }
    }
    fn wrap(b: Block<Self>) -> CudaBuf {
        CudaBuf { mem: Mem::F32(b) }
    }
    fn wrap_view(v: CudaView<'_, Self>) -> DevView<'_> {
        DevView::F32(v)
    }
    fn wrap_view_mut(v: CudaViewMut<'_, Self>) -> DevViewMut<'_> {
        DevViewMut::F32(v)
    }
}
