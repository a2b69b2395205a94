//! cuDNN convolutions for ResNet-50: NHWC tensors and KRSC (= OHWI) filters with fp32
//! accumulation. Under AMP the data is fp16 (cuDNN's "pseudo-half" configuration) with
//! tensor-op math; without AMP it is fp32 with FMA math, i.e. true fp32 (no TF32), so that
//! fp32 training on the GPU matches the CPU reference to fp32 rounding.
//!
//! STATUS: compiled, not yet run on a GPU. Uses cudarc's safe `ConvForward`,
//! `ConvBackwardData` and `ConvBackwardFilter`.
//!
//! One [`ConvPlan`] per convolution shape holds the descriptors and the algorithm chosen for
//! each direction, within a workspace limit the memory plan sets. cudarc's safe wrappers expose
//! only cuDNN's top heuristic pick (and keep the raw descriptors private), so the choice is:
//! the heuristic's pick if its workspace fits, else the first algorithm of a fixed fallback
//! list whose workspace fits. The lists end with the algorithms that need the least workspace
//! (IMPLICIT_GEMM forward needs none); when nothing fits, building the plan fails with an error
//! naming the shape and the limit, which the memory planner reports before training starts.

use crate::cuda::launch::Elem;
use crate::error::{KernelError, Result};
use crate::shapes::ConvShape;
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t as BwdDataAlgo, cudnnConvolutionBwdFilterAlgo_t as BwdFilterAlgo,
    cudnnConvolutionFwdAlgo_t as FwdAlgo, cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t,
};
use cudarc::cudnn::CudnnDataType;
use cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnError, FilterDescriptor,
    TensorDescriptor,
};
use cudarc::driver::{CudaStream, CudaView, CudaViewMut};
use half::f16;
use std::sync::Arc;

/// An element type cuDNN convolves: fp16 (AMP) or fp32.
pub trait ConvElem: Elem + CudnnDataType + std::fmt::Debug {
    /// The math type of the convolution descriptor for this data type.
    const MATH: cudnnMathType_t;
    fn from_f32(v: f32) -> Self;
}

impl ConvElem for f16 {
    /// Tensor cores for fp16 data.
    const MATH: cudnnMathType_t = cudnnMathType_t::CUDNN_TENSOR_OP_MATH;
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl ConvElem for f32 {
    /// Plain fp32 FMA: cuDNN would otherwise be free to use TF32 tensor cores (10-bit
    /// mantissa) for fp32 data on sm_80+, which is not what "fp32" promises.
    const MATH: cudnnMathType_t = cudnnMathType_t::CUDNN_FMA_MATH;
    fn from_f32(v: f32) -> Self {
        v
    }
}

fn cudnn_err(op: &'static str) -> impl Fn(CudnnError) -> KernelError {
    move |e| KernelError::Cuda { op, detail: format!("{e:?}") }
}

/// A cuDNN handle on `stream`, or an error (not a panic) when libcudnn cannot be loaded.
pub fn create_handle(stream: Arc<CudaStream>) -> Result<Arc<Cudnn>> {
    // SAFETY: is_culib_present only tries to dlopen the candidate names and drops the handles.
    if !unsafe { cudarc::cudnn::sys::is_culib_present() } {
        return Err(KernelError::Cuda {
            op: "cudnn",
            detail: "libcudnn (cuDNN 9) could not be loaded; put its folder (e.g. the \
                     nvidia-cudnn wheel's lib folder) on LD_LIBRARY_PATH"
                .to_string(),
        });
    }
    Cudnn::new(stream).map_err(cudnn_err("cudnnCreate"))
}

/// The first candidate whose workspace is known (`Some`, i.e. cuDNN supports the algorithm
/// for this shape) and at most `limit` bytes.
pub fn first_within_limit<A: Copy>(
    candidates: impl IntoIterator<Item = (A, Option<usize>)>,
    limit: usize,
) -> Option<(A, usize)> {
    candidates.into_iter().find_map(|(algo, ws)| ws.filter(|&b| b <= limit).map(|b| (algo, b)))
}

/// Backward algorithms that use atomics and so do not give bitwise repeatable gradients.
fn bwd_data_is_deterministic(a: BwdDataAlgo) -> bool {
    a != BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0
}
fn bwd_filter_is_deterministic(a: BwdFilterAlgo) -> bool {
    !matches!(
        a,
        BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0
            | BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3
    )
}

/// Fallbacks after the heuristic pick, best first; the last needs no workspace.
const FWD_FALLBACK: [FwdAlgo; 2] = [
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
];
const BWD_DATA_FALLBACK: [BwdDataAlgo; 2] =
    [BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0];
const BWD_FILTER_FALLBACK: [BwdFilterAlgo; 3] = [
    BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
    BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
    BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
];

/// Descriptors and chosen algorithms for one convolution shape and data type.
#[derive(Debug)]
pub struct ConvPlan<T: ConvElem> {
    shape: ConvShape,
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    y: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    fwd: (FwdAlgo, usize),
    bwd_data: (BwdDataAlgo, usize),
    bwd_filter: (BwdFilterAlgo, usize),
}

fn dims(op: &'static str, v: [usize; 4]) -> Result<[i32; 4]> {
    let mut out = [0i32; 4];
    for (o, d) in out.iter_mut().zip(v) {
        *o = i32::try_from(d)
            .map_err(|_| KernelError::Shape { op, detail: format!("dimension {d} too large") })?;
    }
    Ok(out)
}

impl<T: ConvElem> ConvPlan<T> {
    /// Builds the descriptors for `s` and picks an algorithm per direction whose workspace is
    /// at most `workspace_limit` bytes. With `deterministic`, backward algorithms that use
    /// atomics are never chosen.
    pub fn new(
        cudnn: &Arc<Cudnn>,
        s: &ConvShape,
        workspace_limit: usize,
        deterministic: bool,
    ) -> Result<Self> {
        const OP: &str = "conv_plan";
        if s.k == 0 || s.stride == 0 || s.h + 2 * s.pad < s.k || s.w + 2 * s.pad < s.k {
            return Err(KernelError::Shape { op: OP, detail: format!("invalid convolution {s:?}") });
        }
        let nhwc = cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
        // cuDNN takes NCHW-ordered dimensions even for NHWC layouts; the format sets strides.
        let x = cudnn
            .create_4d_tensor::<T>(nhwc, dims(OP, [s.n, s.c_in, s.h, s.w])?)
            .map_err(cudnn_err("x descriptor"))?;
        let y = cudnn
            .create_4d_tensor::<T>(nhwc, dims(OP, [s.n, s.c_out, s.out_h(), s.out_w()])?)
            .map_err(cudnn_err("y descriptor"))?;
        // NHWC filter format = KRSC = the project's OHWI weights.
        let w = cudnn
            .create_4d_filter::<T>(nhwc, dims(OP, [s.c_out, s.c_in, s.k, s.k])?)
            .map_err(cudnn_err("w descriptor"))?;
        let (pad, stride) = (s.pad as i32, s.stride as i32);
        // Compute type f32: fp16 data accumulated in fp32 (pseudo-half), or plain fp32.
        let mut conv = cudnn
            .create_conv2d::<f32>(
                [pad, pad],
                [stride, stride],
                [1, 1],
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(cudnn_err("conv descriptor"))?;
        conv.set_math_type(T::MATH).map_err(cudnn_err("math type"))?;

        let fwd_op = ConvForward { conv: &conv, x: &x, w: &w, y: &y };
        let heuristic = fwd_op.pick_algorithm().ok();
        let fwd = first_within_limit(
            heuristic.into_iter().chain(FWD_FALLBACK).map(|a| (a, fwd_op.get_workspace_size(a).ok())),
            workspace_limit,
        );

        let bwd_data_op = ConvBackwardData { conv: &conv, dx: &x, w: &w, dy: &y };
        let heuristic = bwd_data_op.pick_algorithm().ok();
        let bwd_data = first_within_limit(
            heuristic
                .into_iter()
                .chain(BWD_DATA_FALLBACK)
                .filter(|&a| !deterministic || bwd_data_is_deterministic(a))
                .map(|a| (a, bwd_data_op.get_workspace_size(a).ok())),
            workspace_limit,
        );

        let bwd_filter_op = ConvBackwardFilter { conv: &conv, x: &x, dw: &w, dy: &y };
        let heuristic = bwd_filter_op.pick_algorithm().ok();
        let bwd_filter = first_within_limit(
            heuristic
                .into_iter()
                .chain(BWD_FILTER_FALLBACK)
                .filter(|&a| !deterministic || bwd_filter_is_deterministic(a))
                .map(|a| (a, bwd_filter_op.get_workspace_size(a).ok())),
            workspace_limit,
        );

        let none = |dir: &str| KernelError::Cuda {
            op: OP,
            detail: format!("no cuDNN {dir} algorithm for {s:?} within {workspace_limit} bytes of workspace"),
        };
        let fwd = fwd.ok_or_else(|| none("forward"))?;
        let bwd_data = bwd_data.ok_or_else(|| none("backward-data"))?;
        let bwd_filter = bwd_filter.ok_or_else(|| none("backward-filter"))?;
        Ok(ConvPlan { shape: *s, conv, x, y, w, fwd, bwd_data, bwd_filter })
    }

    /// Workspace bytes the largest of the three directions needs (what the arena reserves).
    pub fn workspace_bytes(&self) -> usize {
        self.fwd.1.max(self.bwd_data.1).max(self.bwd_filter.1)
    }

    /// The algorithms chosen, for the log and the memory report.
    pub fn algorithms(&self) -> (FwdAlgo, BwdDataAlgo, BwdFilterAlgo) {
        (self.fwd.0, self.bwd_data.0, self.bwd_filter.0)
    }

    fn check(&self, op: &'static str, x: usize, w: usize, y: usize, ws: usize, need_ws: usize) -> Result<()> {
        let s = &self.shape;
        for (what, len, want) in [("x", x, s.x_len()), ("w", w, s.w_len()), ("y", y, s.y_len())] {
            crate::cuda::launch::expect_len(op, what, len, want)?;
        }
        if ws < need_ws {
            return Err(KernelError::Shape {
                op,
                detail: format!("workspace has {ws} bytes, needs {need_ws}"),
            });
        }
        Ok(())
    }

    /// y = conv(x, w) (overwritten).
    pub fn fwd(
        &self,
        x: &CudaView<'_, T>,
        w: &CudaView<'_, T>,
        y: &mut CudaViewMut<'_, T>,
        workspace: &mut CudaViewMut<'_, u8>,
    ) -> Result<()> {
        self.check("conv2d_fwd", x.len(), w.len(), y.len(), workspace.len(), self.fwd.1)?;
        let op = ConvForward { conv: &self.conv, x: &self.x, w: &self.w, y: &self.y };
        let ws = (self.fwd.1 > 0).then_some(workspace);
        let (one, zero) = (T::from_f32(1.0), T::from_f32(0.0));
        // SAFETY: x, w, y have exactly the element counts of the descriptors built from the
        // same ConvShape (checked above), all of type T as the descriptors declare; the
        // workspace holds at least the bytes cuDNN reported for this algorithm.
        unsafe { op.launch(self.fwd.0, ws, (one, zero), x, w, y) }.map_err(cudnn_err("conv2d_fwd"))
    }

    /// dx = conv_transpose(dy, w) (overwritten).
    pub fn bwd_data(
        &self,
        dy: &CudaView<'_, T>,
        w: &CudaView<'_, T>,
        dx: &mut CudaViewMut<'_, T>,
        workspace: &mut CudaViewMut<'_, u8>,
    ) -> Result<()> {
        self.check("conv2d_bwd_data", dx.len(), w.len(), dy.len(), workspace.len(), self.bwd_data.1)?;
        let op = ConvBackwardData { conv: &self.conv, dx: &self.x, w: &self.w, dy: &self.y };
        let ws = (self.bwd_data.1 > 0).then_some(workspace);
        let (one, zero) = (T::from_f32(1.0), T::from_f32(0.0));
        // SAFETY: as in `fwd`: lengths match the descriptors, type T throughout, workspace
        // large enough for the chosen algorithm.
        unsafe { op.launch(self.bwd_data.0, ws, (one, zero), dx, w, dy) }
            .map_err(cudnn_err("conv2d_bwd_data"))
    }

    /// dw = correlation(x, dy) + beta * dw. Under AMP the caller passes beta = 0 and an fp16
    /// scratch dw, then adds it into the fp32 gradient buffer with
    /// `Elementwise::axpy_f16_to_f32`, so sums over views and micro-batches happen in fp32
    /// (accumulating with beta = 1 here would sum in fp16). In fp32, beta = 1 accumulates
    /// straight into the gradient buffer, as the `Backend` contract for parameter gradients says.
    pub fn bwd_filter(
        &self,
        x: &CudaView<'_, T>,
        dy: &CudaView<'_, T>,
        beta: f32,
        dw: &mut CudaViewMut<'_, T>,
        workspace: &mut CudaViewMut<'_, u8>,
    ) -> Result<()> {
        self.check("conv2d_bwd_filter", x.len(), dw.len(), dy.len(), workspace.len(), self.bwd_filter.1)?;
        let op = ConvBackwardFilter { conv: &self.conv, x: &self.x, dw: &self.w, dy: &self.y };
        let ws = (self.bwd_filter.1 > 0).then_some(workspace);
        let (one, beta) = (T::from_f32(1.0), T::from_f32(beta));
        // SAFETY: as in `fwd`: lengths match the descriptors, type T throughout, workspace
        // large enough for the chosen algorithm.
        unsafe { op.launch(self.bwd_filter.0, ws, (one, beta), x, dw, dy) }
            .map_err(cudnn_err("conv2d_bwd_filter"))
    }

    /// Workspace bytes of each direction (forward, backward-data, backward-filter).
    pub fn workspace_each(&self) -> (usize, usize, usize) {
        (self.fwd.1, self.bwd_data.1, self.bwd_filter.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heuristic_pick_wins_when_it_fits() {
        let got = first_within_limit([("heur", Some(100)), ("fallback", Some(0))], 100);
        assert_eq!(got, Some(("heur", 100)));
    }

    #[test]
    fn oversized_and_unsupported_algorithms_are_skipped() {
        let got =
            first_within_limit([("heur", Some(1 << 30)), ("unsupported", None), ("gemm", Some(0))], 1 << 20);
        assert_eq!(got, Some(("gemm", 0)));
        assert_eq!(first_within_limit([("a", Some(10)), ("b", None)], 5), None);
    }

    #[test]
    fn deterministic_mode_keeps_a_candidate_per_direction() {
        // With `deterministic`, each direction still has a candidate.
        assert!(BWD_DATA_FALLBACK.iter().any(|&a| bwd_data_is_deterministic(a)));
        assert!(BWD_FILTER_FALLBACK.iter().any(|&a| bwd_filter_is_deterministic(a)));
        assert!(!bwd_filter_is_deterministic(BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0));
    }
}
