//! cuBLAS GEMMs for the linear layers (projector, predictor) and the MoCo logits, on
//! row-major fp16 matrices with fp32 accumulation (tensor cores on sm_80+).
//!
//! STATUS: compiled, not yet run on a GPU.
//!
//! cuBLAS is column-major; a row-major `[r, c]` matrix is the column-major `[c, r]` matrix
//! with leading dimension c, i.e. its transpose. Each function below writes the row-major
//! product as the equivalent column-major one (derivation in its comment).
//!
//! fp16-output GEMMs use cudarc's safe `Gemm<f16>` (fp16 A/B/C, fp32 compute). GEMMs with an
//! fp32 output (logits, and weight gradients accumulated straight into the fp32 gradient
//! buffer) call `cublasGemmEx` with C in fp32, which cuBLAS supports for fp16 A/B with fp32
//! compute; the safe wrapper has no such combination. fp32 GEMMs (training without AMP) use
//! `Gemm<f32>` (SGEMM) in cuBLAS's default math mode, which never uses TF32.

use crate::cuda::launch::expect_len;
use crate::error::{KernelError, Result};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::cublas::{result as blas_result, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::f16;
use std::ffi::c_int;
use std::sync::Arc;

const N: cublasOperation_t = cublasOperation_t::CUBLAS_OP_N;
const T: cublasOperation_t = cublasOperation_t::CUBLAS_OP_T;

fn blas_err(op: &'static str) -> impl Fn(blas_result::CublasError) -> KernelError {
    move |e| KernelError::Cuda { op, detail: format!("{e:?}") }
}

fn to_c_int(op: &'static str, v: usize) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| KernelError::Shape { op, detail: format!("dimension {v} too large") })
}

/// A column-major GEMM C = alpha op(A) op(B) + beta C with its dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColMajorGemm {
    pub transa: bool,
    pub transb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

impl ColMajorGemm {
    /// Elements A, B and C must hold for these dimensions and leading dimensions.
    pub fn operand_lens(&self) -> (usize, usize, usize) {
        let need = |rows: usize, cols: usize, ld: usize| if cols == 0 { 0 } else { ld * (cols - 1) + rows };
        let a = if self.transa { need(self.k, self.m, self.lda) } else { need(self.m, self.k, self.lda) };
        let b = if self.transb { need(self.n, self.k, self.ldb) } else { need(self.k, self.n, self.ldb) };
        (a, b, need(self.m, self.n, self.ldc))
    }

    fn check(&self, op: &'static str, a: usize, b: usize, c: usize) -> Result<()> {
        let (na, nb, nc) = self.operand_lens();
        if a < na || b < nb || c < nc {
            return Err(KernelError::Shape {
                op,
                detail: format!("GEMM {self:?} needs A/B/C of {na}/{nb}/{nc} elements, got {a}/{b}/{c}"),
            });
        }
        Ok(())
    }
}

/// Row-major y[n, out] = x[n, in] . w[out, in]^T.
/// Column-major: Y' = y^T [out, n], W' = w^T [in, out], X' = x^T [in, n];
/// y^T = w x^T, so Y' = (W')^T X': A = w (transposed), B = x, m = out, n = n, k = in.
pub fn linear_fwd_gemm(n: usize, d_in: usize, d_out: usize) -> ColMajorGemm {
    ColMajorGemm { transa: true, transb: false, m: d_out, n, k: d_in, lda: d_in, ldb: d_in, ldc: d_out }
}

/// Row-major dx[n, in] = dy[n, out] . w[out, in].
/// dx^T = w^T dy^T: DX' [in, n] = W' [in, out] . DY' [out, n]; m = in, n = n, k = out.
/// A = w, B = dy.
pub fn linear_bwd_data_gemm(n: usize, d_in: usize, d_out: usize) -> ColMajorGemm {
    ColMajorGemm { transa: false, transb: false, m: d_in, n, k: d_out, lda: d_in, ldb: d_out, ldc: d_in }
}

/// Row-major dw[out, in] = dy[n, out]^T . x[n, in].
/// dw^T = x^T dy: DW' [in, out] = X' [in, n] . (DY')^T [n, out]; m = in, n = out, k = n.
/// A = x, B = dy.
pub fn linear_bwd_weight_gemm(n: usize, d_in: usize, d_out: usize) -> ColMajorGemm {
    ColMajorGemm { transa: false, transb: true, m: d_in, n: d_out, k: n, lda: d_in, ldb: d_out, ldc: d_in }
}

/// cuBLAS on one stream.
#[derive(Debug)]
pub struct Blas {
    blas: CudaBlas,
    stream: Arc<CudaStream>,
}

impl Blas {
    /// A cuBLAS handle on `stream`, or an error (not a panic) when libcublas cannot be loaded.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        // SAFETY: is_culib_present only tries to dlopen the candidate names and drops them.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(KernelError::Cuda {
                op: "cublas",
                detail: "libcublas could not be loaded; put its folder (e.g. the nvidia-cublas \
                         wheel's lib folder) on LD_LIBRARY_PATH"
                    .to_string(),
            });
        }
        let blas = CudaBlas::new(stream.clone()).map_err(blas_err("cublasCreate"))?;
        Ok(Blas { blas, stream })
    }

    /// fp16 C = alpha op(A) op(B) + beta C, fp32 accumulation.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16(
        &self,
        op: &'static str,
        g: ColMajorGemm,
        alpha: f32,
        a: &CudaView<'_, f16>,
        b: &CudaView<'_, f16>,
        beta: f32,
        c: &mut CudaViewMut<'_, f16>,
    ) -> Result<()> {
        g.check(op, a.len(), b.len(), c.len())?;
        let cfg = GemmConfig {
            transa: if g.transa { T } else { N },
            transb: if g.transb { T } else { N },
            m: to_c_int(op, g.m)?,
            n: to_c_int(op, g.n)?,
            k: to_c_int(op, g.k)?,
            alpha: f16::from_f32(alpha),
            lda: to_c_int(op, g.lda)?,
            ldb: to_c_int(op, g.ldb)?,
            beta: f16::from_f32(beta),
            ldc: to_c_int(op, g.ldc)?,
        };
        // SAFETY: a, b and c hold at least the elements the dimensions and leading dimensions
        // address (checked above), all fp16 as declared.
        unsafe { self.blas.gemm(cfg, a, b, c) }.map_err(blas_err(op))
    }

    /// fp32 C = alpha op(A) op(B) + beta C with fp16 A and B, fp32 accumulation.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16_to_f32(
        &self,
        op: &'static str,
        g: ColMajorGemm,
        alpha: f32,
        a: &CudaView<'_, f16>,
        b: &CudaView<'_, f16>,
        beta: f32,
        c: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        g.check(op, a.len(), b.len(), c.len())?;
        let (a_ptr, _a_sync) = a.device_ptr(&self.stream);
        let (b_ptr, _b_sync) = b.device_ptr(&self.stream);
        let (c_ptr, _c_sync) = c.device_ptr_mut(&self.stream);
        // SAFETY: the handle is bound to self.stream, on which the device pointers were
        // obtained (so the stream waits for earlier writers, and the guards record this use
        // when dropped after the call is queued). a, b (fp16) and c (fp32) hold at least the
        // elements the dimensions address (checked above); alpha and beta are f32 as
        // CUBLAS_COMPUTE_32F requires.
        unsafe {
            blas_result::gemm_ex(
                *self.blas.handle(),
                if g.transa { T } else { N },
                if g.transb { T } else { N },
                to_c_int(op, g.m)?,
                to_c_int(op, g.n)?,
                to_c_int(op, g.k)?,
                (&alpha) as *const f32 as *const _,
                a_ptr as *const _,
                cudaDataType_t::CUDA_R_16F,
                to_c_int(op, g.lda)?,
                b_ptr as *const _,
                cudaDataType_t::CUDA_R_16F,
                to_c_int(op, g.ldb)?,
                (&beta) as *const f32 as *const _,
                c_ptr as *mut _,
                cudaDataType_t::CUDA_R_32F,
                to_c_int(op, g.ldc)?,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(blas_err(op))
    }

    /// fp32 C = alpha op(A) op(B) + beta C (SGEMM, no TF32).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f32(
        &self,
        op: &'static str,
        g: ColMajorGemm,
        alpha: f32,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        beta: f32,
        c: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        g.check(op, a.len(), b.len(), c.len())?;
        let cfg = GemmConfig {
            transa: if g.transa { T } else { N },
            transb: if g.transb { T } else { N },
            m: to_c_int(op, g.m)?,
            n: to_c_int(op, g.n)?,
            k: to_c_int(op, g.k)?,
            alpha,
            lda: to_c_int(op, g.lda)?,
            ldb: to_c_int(op, g.ldb)?,
            beta,
            ldc: to_c_int(op, g.ldc)?,
        };
        // SAFETY: a, b and c hold at least the elements the dimensions and leading dimensions
        // address (checked above), all f32 as SGEMM expects.
        unsafe { self.blas.gemm(cfg, a, b, c) }.map_err(blas_err(op))
    }

    /// y[n, out] = x[n, in] . w[out, in]^T, fp16 output (linear layers).
    #[allow(clippy::too_many_arguments)]
    pub fn linear_fwd(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: &CudaView<'_, f16>,
        w: &CudaView<'_, f16>,
        y: &mut CudaViewMut<'_, f16>,
    ) -> Result<()> {
        const OP: &str = "linear_fwd";
        expect_len(OP, "x", x.len(), n * d_in)?;
        expect_len(OP, "w", w.len(), d_out * d_in)?;
        expect_len(OP, "y", y.len(), n * d_out)?;
        self.gemm_f16(OP, linear_fwd_gemm(n, d_in, d_out), 1.0, w, x, 0.0, y)
    }

    /// logits[n, cols] = alpha * q[n, d] . k[cols, d]^T in fp32 (alpha = 1/T): the MoCo
    /// logits against batch keys or a queue shard, kept in fp32 for the log-sum-exp.
    #[allow(clippy::too_many_arguments)]
    pub fn logits(
        &self,
        n: usize,
        d: usize,
        cols: usize,
        alpha: f32,
        q: &CudaView<'_, f16>,
        k: &CudaView<'_, f16>,
        logits: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "logits";
        expect_len(OP, "q", q.len(), n * d)?;
        expect_len(OP, "k", k.len(), cols * d)?;
        expect_len(OP, "logits", logits.len(), n * cols)?;
        self.gemm_f16_to_f32(OP, linear_fwd_gemm(n, d, cols), alpha, k, q, 0.0, logits)
    }

    /// dx[n, in] = dy[n, out] . w[out, in], fp16, overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_bwd_data(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        dy: &CudaView<'_, f16>,
        w: &CudaView<'_, f16>,
        dx: &mut CudaViewMut<'_, f16>,
    ) -> Result<()> {
        const OP: &str = "linear_bwd_data";
        expect_len(OP, "dy", dy.len(), n * d_out)?;
        expect_len(OP, "w", w.len(), d_out * d_in)?;
        expect_len(OP, "dx", dx.len(), n * d_in)?;
        self.gemm_f16(OP, linear_bwd_data_gemm(n, d_in, d_out), 1.0, w, dy, 0.0, dx)
    }

    /// dw[out, in] += dy[n, out]^T . x[n, in], accumulated in fp32 straight into the fp32
    /// gradient buffer (beta = 1), as the `Backend` contract for parameter gradients says.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_bwd_weight_acc(
        &self,
        n: usize,
        d_in: usize,
        d_out: usize,
        x: &CudaView<'_, f16>,
        dy: &CudaView<'_, f16>,
        dw: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "linear_bwd_weight";
        expect_len(OP, "x", x.len(), n * d_in)?;
        expect_len(OP, "dy", dy.len(), n * d_out)?;
        expect_len(OP, "dw", dw.len(), d_out * d_in)?;
        self.gemm_f16_to_f32(OP, linear_bwd_weight_gemm(n, d_in, d_out), 1.0, x, dy, 1.0, dw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column-major GEMM on host f32 slices, following the cuBLAS definition literally.
    fn col_gemm(g: ColMajorGemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        let at = |i: usize, p: usize| if g.transa { a[p + i * g.lda] } else { a[i + p * g.lda] };
        let bt = |p: usize, j: usize| if g.transb { b[j + p * g.ldb] } else { b[p + j * g.ldb] };
        for j in 0..g.n {
            for i in 0..g.m {
                c[i + j * g.ldc] = (0..g.k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
    }

    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| ((i * 7 % 11) as f32 - 5.0) * scale).collect()
    }

    /// The row-major <-> column-major mappings give the row-major products the `Backend`
    /// trait defines (checked on the host: the mapping is where such bugs hide).
    #[test]
    fn operand_lengths_of_the_row_major_mappings_are_the_full_matrices() {
        let (n, d_in, d_out) = (3, 4, 5);
        assert_eq!(linear_fwd_gemm(n, d_in, d_out).operand_lens(), (d_out * d_in, n * d_in, n * d_out));
        assert_eq!(linear_bwd_data_gemm(n, d_in, d_out).operand_lens(), (d_out * d_in, n * d_out, n * d_in));
        assert_eq!(
            linear_bwd_weight_gemm(n, d_in, d_out).operand_lens(),
            (n * d_in, n * d_out, d_out * d_in)
        );
        let g = linear_fwd_gemm(n, d_in, d_out);
        assert!(g.check("t", d_out * d_in, n * d_in - 1, n * d_out).is_err(), "a short B is refused");
    }

    #[test]
    fn column_major_mappings_compute_the_row_major_products() {
        let (n, d_in, d_out) = (3, 4, 5);
        let x = ramp(n * d_in, 0.5);
        let w = ramp(d_out * d_in, 0.25);
        let dy = ramp(n * d_out, 1.0);

        let mut y = vec![0.0; n * d_out];
        col_gemm(linear_fwd_gemm(n, d_in, d_out), &w, &x, &mut y);
        for r in 0..n {
            for o in 0..d_out {
                let want: f32 = (0..d_in).map(|i| x[r * d_in + i] * w[o * d_in + i]).sum();
                assert_eq!(y[r * d_out + o], want, "y[{r}, {o}]");
            }
        }

        let mut dx = vec![0.0; n * d_in];
        col_gemm(linear_bwd_data_gemm(n, d_in, d_out), &w, &dy, &mut dx);
        for r in 0..n {
            for i in 0..d_in {
                let want: f32 = (0..d_out).map(|o| dy[r * d_out + o] * w[o * d_in + i]).sum();
                assert_eq!(dx[r * d_in + i], want, "dx[{r}, {i}]");
            }
        }

        let mut dw = vec![0.0; d_out * d_in];
        col_gemm(linear_bwd_weight_gemm(n, d_in, d_out), &x, &dy, &mut dw);
        for o in 0..d_out {
            for i in 0..d_in {
                let want: f32 = (0..n).map(|r| dy[r * d_out + o] * x[r * d_in + i]).sum();
                assert_eq!(dw[o * d_in + i], want, "dw[{o}, {i}]");
            }
        }
    }
}
