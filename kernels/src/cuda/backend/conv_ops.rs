//! Convolutions through cuDNN: one [`ConvPlan`] per (shape, element type), built on first use
//! and kept; workspaces come from the arena for the duration of one call. Compiled, not yet run
//! on a GPU.

use super::stage::Src;
use super::CudaBackend;
use crate::cuda::buffer::{BufElem, DevView, DevViewMut};
use crate::cuda::cudnn_conv::{create_handle, ConvElem, ConvPlan};
use crate::cuda::launch::{expect_len, Dtype};
use crate::error::Result;
use crate::shapes::ConvShape;
use cudarc::cudnn::Cudnn;
use cudarc::driver::CudaStream;
use half::f16;
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

/// The cuDNN handle and the plans made with it.
pub(crate) struct Dnn {
    handle: Arc<Cudnn>,
    f16: HashMap<ConvShape, ConvPlan<f16>>,
    f32: HashMap<ConvShape, ConvPlan<f32>>,
}

// SAFETY: `Dnn` holds a cuDNN handle (and descriptors that keep an `Arc` to it), which cudarc
// marks !Send because cuDNN forbids using one handle from two threads AT THE SAME TIME. The
// backend keeps `Dnn` in a `Mutex` and never lets the handle or a descriptor out of it, so
// every use happens under the lock, by one thread at a time; cuDNN allows a handle to be used
// by different threads one after another. The `Arc<Cudnn>` clones all live inside this value
// and are dropped with it.
unsafe impl Send for Dnn {}

impl Dnn {
    pub(crate) fn new(stream: Arc<CudaStream>) -> Result<Self> {
        Ok(Dnn { handle: create_handle(stream)?, f16: HashMap::new(), f32: HashMap::new() })
    }
}

/// Element types with their own plan cache.
trait DnnElem: BufElem + ConvElem {
    fn plans(dnn: &mut Dnn) -> &mut HashMap<ConvShape, ConvPlan<Self>>;
}

impl DnnElem for f16 {
    fn plans(dnn: &mut Dnn) -> &mut HashMap<ConvShape, ConvPlan<Self>> {
        &mut dnn.f16
    }
}

impl DnnElem for f32 {
    fn plans(dnn: &mut Dnn) -> &mut HashMap<ConvShape, ConvPlan<Self>> {
        &mut dnn.f32
    }
}

/// What was chosen for one convolution shape (for the memory plan and the logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvPlanInfo {
    pub algorithms: String,
    /// Workspace bytes of the forward, backward-data and backward-filter algorithms.
    pub workspace: (usize, usize, usize),
}

impl CudaBackend {
    fn dnn(&self) -> MutexGuard<'_, Dnn> {
        self.dnn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan for `s` in element type `T`, made now if it is new.
    fn with_plan<T: DnnElem, R>(
        &self,
        s: &ConvShape,
        f: impl FnOnce(&ConvPlan<T>) -> Result<R>,
    ) -> Result<R> {
        self.bind()?;
        let mut dnn = self.dnn();
        if !T::plans(&mut dnn).contains_key(s) {
            let plan = ConvPlan::<T>::new(
                &dnn.handle,
                s,
                self.options.conv_workspace_limit,
                self.options.deterministic,
            )?;
            tracing::debug!(shape = ?s, dtype = T::DTYPE.name(), algorithms = ?plan.algorithms(), workspace = plan.workspace_bytes(), "cuDNN plan");
            T::plans(&mut dnn).insert(*s, plan);
        }
        match T::plans(&mut dnn).get(s) {
            Some(plan) => f(plan),
            None => unreachable_plan(s),
        }
    }

    /// The algorithms and workspace sizes cuDNN is given for `s` in the activation type.
    pub fn conv_plan_info(&self, s: &ConvShape) -> Result<ConvPlanInfo> {
        fn info<T: ConvElem>(p: &ConvPlan<T>) -> Result<ConvPlanInfo> {
            Ok(ConvPlanInfo { algorithms: format!("{:?}", p.algorithms()), workspace: p.workspace_each() })
        }
        match self.act_dtype() {
            Dtype::F16 => self.with_plan::<f16, _>(s, info),
            Dtype::F32 => self.with_plan::<f32, _>(s, info),
        }
    }

    fn workspace(&self, bytes: usize) -> Result<crate::cuda::memory::Block<u8>> {
        self.pool.alloc::<u8>("cuDNN workspace", bytes.max(1))
    }

    pub(crate) fn conv_fwd(
        &self,
        s: &ConvShape,
        x: &DevView<'_>,
        w: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        check_lens("conv2d_fwd", s, x.len(), w.len(), y.len())?;
        match x.dtype() {
            Dtype::F16 => self.conv_fwd_t::<f16>(s, x, w, y),
            Dtype::F32 => self.conv_fwd_t::<f32>(s, x, w, y),
        }
    }

    fn conv_fwd_t<T: DnnElem>(
        &self,
        s: &ConvShape,
        x: &DevView<'_>,
        w: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let x: Src<T> = self.src_aligned(x)?;
        let w: Src<T> = self.src_aligned(w)?;
        let mut out = self.dst_aligned::<T>(y, false)?;
        self.with_plan::<T, _>(s, |plan| {
            let mut ws = self.workspace(plan.workspace_each().0)?;
            plan.fwd(&x.view(), &w.view(), &mut out.view(), &mut ws.slice_mut().as_view_mut())
        })?;
        out.finish(self)
    }

    pub(crate) fn conv_bwd_data(
        &self,
        s: &ConvShape,
        dy: &DevView<'_>,
        w: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        check_lens("conv2d_bwd_data", s, dx.len(), w.len(), dy.len())?;
        match dy.dtype() {
            Dtype::F16 => self.conv_bwd_data_t::<f16>(s, dy, w, dx),
            Dtype::F32 => self.conv_bwd_data_t::<f32>(s, dy, w, dx),
        }
    }

    fn conv_bwd_data_t<T: DnnElem>(
        &self,
        s: &ConvShape,
        dy: &DevView<'_>,
        w: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        let dy: Src<T> = self.src_aligned(dy)?;
        let w: Src<T> = self.src_aligned(w)?;
        let mut out = self.dst_aligned::<T>(dx, false)?;
        self.with_plan::<T, _>(s, |plan| {
            let mut ws = self.workspace(plan.workspace_each().1)?;
            plan.bwd_data(&dy.view(), &w.view(), &mut out.view(), &mut ws.slice_mut().as_view_mut())
        })?;
        out.finish(self)
    }

    /// dw += correlation(x, dy). fp16: into an fp16 scratch, then added into dw in fp32 (so
    /// sums over views and micro-batches happen in fp32). fp32: accumulated by cuDNN (beta 1).
    pub(crate) fn conv_bwd_filter(
        &self,
        s: &ConvShape,
        x: &DevView<'_>,
        dy: &DevView<'_>,
        dw: &mut DevViewMut<'_>,
    ) -> Result<()> {
        check_lens("conv2d_bwd_filter", s, x.len(), dw.len(), dy.len())?;
        match x.dtype() {
            Dtype::F16 => {
                let x: Src<f16> = self.src_aligned(x)?;
                let dy: Src<f16> = self.src_aligned(dy)?;
                let mut scratch = self.pool.alloc::<f16>("fp16 filter gradient", s.w_len())?;
                self.with_plan::<f16, _>(s, |plan| {
                    let mut ws = self.workspace(plan.workspace_each().2)?;
                    let mut out = scratch.slice_mut().as_view_mut();
                    plan.bwd_filter(&x.view(), &dy.view(), 0.0, &mut out, &mut ws.slice_mut().as_view_mut())
                })?;
                self.add_inplace_impl(&DevView::F16(scratch.slice().as_view()), dw)
            }
            Dtype::F32 => {
                let x: Src<f32> = self.src_aligned(x)?;
                let dy: Src<f32> = self.src_aligned(dy)?;
                let mut out = self.dst_aligned::<f32>(dw, true)?;
                self.with_plan::<f32, _>(s, |plan| {
                    let mut ws = self.workspace(plan.workspace_each().2)?;
                    plan.bwd_filter(
                        &x.view(),
                        &dy.view(),
                        1.0,
                        &mut out.view(),
                        &mut ws.slice_mut().as_view_mut(),
                    )
                })?;
                out.finish(self)
            }
        }
    }
}

fn check_lens(op: &'static str, s: &ConvShape, x: usize, w: usize, y: usize) -> Result<()> {
    expect_len(op, "x", x, s.x_len())?;
    expect_len(op, "w", w, s.w_len())?;
    expect_len(op, "y", y, s.y_len())
}

fn unreachable_plan<R>(s: &ConvShape) -> Result<R> {
    Err(crate::error::KernelError::Cuda {
        op: "conv_plan",
        detail: format!("internal: no plan for {s:?} after making it"),
    })
}
