//! Linear layers and logits through cuBLAS. Two fp16 inputs use the tensor cores (fp32
//! accumulation, fp16 or fp32 output as the output buffer is); if either input is fp32 (the
//! queue shard is an fp32 buffer in the model, or training runs without AMP) the GEMM runs in
//! fp32 on fp32 copies. Compiled, not yet run on a GPU.

use super::CudaBackend;
use crate::cuda::buffer::{DevView, DevViewMut};
use crate::cuda::cublas::{
    linear_bwd_data_gemm, linear_bwd_weight_gemm, linear_fwd_gemm, Blas, ColMajorGemm,
};
use crate::cuda::launch::expect_len;
use crate::error::Result;
use std::sync::MutexGuard;

impl CudaBackend {
    fn blas(&self) -> MutexGuard<'_, Blas> {
        self.blas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// C = alpha op(A) op(B) + beta C for any element types (see the module docs).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        op: &'static str,
        g: ColMajorGemm,
        alpha: f32,
        a: &DevView<'_>,
        b: &DevView<'_>,
        beta: f32,
        c: &mut DevViewMut<'_>,
    ) -> Result<()> {
        self.bind()?;
        let blas = self.blas();
        match (a, b, &mut *c) {
            (DevView::F16(a), DevView::F16(b), DevViewMut::F16(c)) => {
                blas.gemm_f16(op, g, alpha, a, b, beta, c)
            }
            (DevView::F16(a), DevView::F16(b), DevViewMut::F32(c)) => {
                blas.gemm_f16_to_f32(op, g, alpha, a, b, beta, c)
            }
            _ => {
                let a = self.src::<f32>(a)?;
                let b = self.src::<f32>(b)?;
                let mut out = self.dst::<f32>(c, beta != 0.0)?;
                blas.gemm_f32(op, g, alpha, &a.view(), &b.view(), beta, &mut out.view())?;
                drop(blas);
                out.finish(self)
            }
        }
    }

    pub(crate) fn linear_fwd_impl(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: &DevView<'_>,
        w: &DevView<'_>,
        y: &mut DevViewMut<'_>,
    ) -> Result<()> {
        const OP: &str = "linear_fwd";
        expect_len(OP, "x", x.len(), n * d_in)?;
        expect_len(OP, "w", w.len(), d_out * d_in)?;
        expect_len(OP, "y", y.len(), n * d_out)?;
        self.gemm(OP, linear_fwd_gemm(n, d_in, d_out), 1.0, w, x, 0.0, y)
    }

    pub(crate) fn linear_bwd_data_impl(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        dy: &DevView<'_>,
        w: &DevView<'_>,
        dx: &mut DevViewMut<'_>,
    ) -> Result<()> {
        const OP: &str = "linear_bwd_data";
        expect_len(OP, "dy", dy.len(), n * d_out)?;
        expect_len(OP, "w", w.len(), d_out * d_in)?;
        expect_len(OP, "dx", dx.len(), n * d_in)?;
        self.gemm(OP, linear_bwd_data_gemm(n, d_in, d_out), 1.0, w, dy, 0.0, dx)
    }

    /// dw += dy^T x, accumulated by cuBLAS (beta = 1) into the (fp32) gradient buffer.
    pub(crate) fn linear_bwd_weight_impl(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: &DevView<'_>,
        dy: &DevView<'_>,
        dw: &mut DevViewMut<'_>,
    ) -> Result<()> {
        const OP: &str = "linear_bwd_weight";
        expect_len(OP, "x", x.len(), n * d_in)?;
        expect_len(OP, "dy", dy.len(), n * d_out)?;
        expect_len(OP, "dw", dw.len(), d_out * d_in)?;
        self.gemm(OP, linear_bwd_weight_gemm(n, d_in, d_out), 1.0, x, dy, 1.0, dw)
    }
}
