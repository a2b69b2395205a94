//! Whole-buffer views: most ops address an entire activation buffer.

use moco_kernels::Backend;

pub fn full<B: Backend>(b: &B::Buf) -> B::View<'_> {
    B::view(b, 0..B::buf_len(b))
}

pub fn full_mut<B: Backend>(b: &mut B::Buf) -> B::ViewMut<'_> {
    let n = B::buf_len(b);
    B::view_mut(b, 0..n)
}
