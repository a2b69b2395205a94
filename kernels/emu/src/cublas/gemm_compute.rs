//! The arithmetic of a column-major GEMM, C = alpha op(A) op(B) + beta C (cuBLAS's
//! definition): op(A) is m x k, op(B) is k x n, C is m x n, element (i, j) of a matrix X with
//! leading dimension ld is X[i + j * ld].
//!
//! Both operands are first copied into f32 working matrices (op(A) column-major m x k, op(B)
//! column-major k x n), which also resolves the transposes; the product then accumulates in
//! f32 over blocks of MB rows x NB columns, each column of the block an axpy over contiguous
//! rows of op(A) (vectorised), with rayon over column blocks. C is read (for beta) and written
//! once, at the end.

use crate::elem::{axpy, blend, Elem};
use rayon::prelude::*;

/// One GEMM whose arguments `gemm_api` has checked.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: usize,
    pub a_ty: Elem,
    pub lda: usize,
    pub b: usize,
    pub b_ty: Elem,
    pub ldb: usize,
    pub c: usize,
    pub c_ty: Elem,
    pub ldc: usize,
}

/// Rows per block: MB x NB accumulators (4 KiB) stay in L1 while k streams past.
const MB: usize = 128;
/// Most columns per block: each loaded row-slice of op(A) is reused NB times.
const NB: usize = 8;

impl Gemm {
    /// op(A) as a column-major m x k f32 matrix.
    ///
    /// # Safety
    /// A's extent was checked to lie in live device memory.
    unsafe fn pack_a(&self) -> Vec<f32> {
        let (m, k, a, ty, ld, t) = (self.m, self.k, self.a, self.a_ty, self.lda, self.trans_a);
        let mut out = vec![0.0f32; m * k];
        out.par_chunks_mut(m).enumerate().for_each(|(p, col)| {
            for (i, v) in col.iter_mut().enumerate() {
                // op(A)(i, p) = A(i, p), or A(p, i) when transposed.
                let idx = if t { p + i * ld } else { i + p * ld };
                // SAFETY: idx addresses an element inside A's checked extent (i < m, p < k).
                *v = unsafe { ty.load(a, idx) };
            }
        });
        out
    }

    /// op(B) as a column-major k x n f32 matrix.
    ///
    /// # Safety
    /// B's extent was checked to lie in live device memory.
    unsafe fn pack_b(&self) -> Vec<f32> {
        let (k, n, b, ty, ld, t) = (self.k, self.n, self.b, self.b_ty, self.ldb, self.trans_b);
        let mut out = vec![0.0f32; k * n];
        out.par_chunks_mut(k).enumerate().for_each(|(j, col)| {
            for (p, v) in col.iter_mut().enumerate() {
                let idx = if t { j + p * ld } else { p + j * ld };
                // SAFETY: idx addresses an element inside B's checked extent (p < k, j < n).
                *v = unsafe { ty.load(b, idx) };
            }
        });
        out
    }

    /// op(A) op(B) as a column-major m x n f32 matrix.
    fn product(&self, ap: &[f32], bp: &[f32]) -> Vec<f32> {
        let (m, n, k) = (self.m, self.n, self.k);
        // Fewer columns per block when n is small, so both cores get work.
        let threads = rayon::current_num_threads().max(1);
        let nb = (n / (2 * threads)).clamp(1, NB);
        let mut out = vec![0.0f32; m * n];
        out.par_chunks_mut(m * nb).enumerate().for_each(|(blk, cols)| {
            let j0 = blk * nb;
            let ncols = cols.len() / m;
            for i0 in (0..m).step_by(MB) {
                let i1 = (i0 + MB).min(m);
                for p in 0..k {
                    let a = &ap[p * m + i0..p * m + i1];
                    for jj in 0..ncols {
                        let b = bp[p + (j0 + jj) * k];
                        axpy(&mut cols[jj * m + i0..jj * m + i1], b, a);
                    }
                }
            }
        });
        out
    }

    /// Runs the GEMM. alpha == 0 (or k == 0) leaves A and B unread, and beta == 0 leaves C
    /// unread, as the BLAS definition allows, so NaN there does not reach the result.
    ///
    /// # Safety
    /// The extents of A, B and C were checked to lie in live device memory, and nothing else
    /// accesses C while this runs (the stream runs one op at a time).
    pub unsafe fn run(&self, alpha: f32, beta: f32) {
        let (m, n) = (self.m, self.n);
        if m == 0 || n == 0 {
            return;
        }
        let prod = (alpha != 0.0 && self.k > 0).then(|| {
            // SAFETY: per this function's contract.
            let (ap, bp) = unsafe { (self.pack_a(), self.pack_b()) };
            self.product(&ap, &bp)
        });
        for j in 0..n {
            for i in 0..m {
                let acc = prod.as_ref().map_or(0.0, |p| p[i + j * m]);
                let idx = i + j * self.ldc;
                // SAFETY: idx lies in C's checked extent (i < m <= ldc, j < n).
                let v = blend(alpha, acc, beta, || unsafe { self.c_ty.load(self.c, idx) });
                // SAFETY: as above; C is exclusively this op's while it runs.
                unsafe { self.c_ty.store(self.c, idx, v) };
            }
        }
    }
}
