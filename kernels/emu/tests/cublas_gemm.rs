//! The stand-in cuBLAS GEMMs against a naive triple loop written from the cuBLAS definition
//! (column-major, op(X) = X or X^T, C = alpha op(A) op(B) + beta C), called through the
//! exported C functions on emulated device memory and an emulated stream.

mod blas_common;
use blas_common as common;

use common::*;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasHandle_t, cublasOperation_t, cublasPointerMode_t,
    cublasStatus_t, cudaDataType_t,
};
use moco_emu::counters;
use moco_emu::cublas::gemm_api::{cublasGemmEx, cublasSgemm_v2};
use moco_emu::cublas::{cublasCreate_v2, cublasDestroy_v2, cublasSetPointerMode_v2, cublasSetStream_v2};
use std::ffi::c_void;

const N: cublasOperation_t = cublasOperation_t::CUBLAS_OP_N;
const T: cublasOperation_t = cublasOperation_t::CUBLAS_OP_T;
const OK: cublasStatus_t = cublasStatus_t::CUBLAS_STATUS_SUCCESS;

#[derive(Clone, Copy, Debug)]
struct Shape {
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldb: usize,
    ldc: usize,
}

impl Shape {
    /// Leading dimensions larger than the stored rows by `extra`, to catch ld/rows mix-ups.
    fn new(ta: bool, tb: bool, m: usize, n: usize, k: usize, extra: usize) -> Shape {
        let lda = if ta { k } else { m } + extra;
        let ldb = if tb { n } else { k } + extra;
        Shape { ta, tb, m, n, k, lda, ldb, ldc: m + extra }
    }
    fn a_len(&self) -> usize {
        self.lda * if self.ta { self.m } else { self.k }
    }
    fn b_len(&self) -> usize {
        self.ldb * if self.tb { self.k } else { self.n }
    }
    fn c_len(&self) -> usize {
        self.ldc * self.n
    }
}

/// The definition, in f64, plus for each element the bound
/// |alpha| sum_p |op(A)(i,p) op(B)(p,j)| + |beta| |C(i,j)| that rounding errors scale with.
fn reference(s: Shape, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let opa = |i: usize, p: usize| f64::from(if s.ta { a[p + i * s.lda] } else { a[i + p * s.lda] });
    let opb = |p: usize, j: usize| f64::from(if s.tb { b[j + p * s.ldb] } else { b[p + j * s.ldb] });
    let (mut want, mut mag) = (c.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), vec![0.0; c.len()]);
    for j in 0..s.n {
        for i in 0..s.m {
            let (mut sum, mut abs) = (0.0, 0.0);
            for p in 0..s.k {
                sum += opa(i, p) * opb(p, j);
                abs += (opa(i, p) * opb(p, j)).abs();
            }
            let old = f64::from(c[i + j * s.ldc]);
            let beta_term = if beta == 0.0 { 0.0 } else { f64::from(beta) * old };
            want[i + j * s.ldc] = f64::from(alpha) * sum + beta_term;
            mag[i + j * s.ldc] = f64::from(alpha).abs() * abs
                + if beta == 0.0 { 0.0 } else { f64::from(beta).abs() * old.abs() };
        }
    }
    (want, mag)
}

/// Checks every element of C: inside the m x n matrix against the reference within `tol(i)`,
/// and the padding rows between m and ldc untouched.
fn check(s: Shape, got: &[f32], before: &[f32], want: &[f64], tol: impl Fn(usize) -> f64, what: &str) {
    for j in 0..s.n {
        for i in 0..s.ldc {
            let idx = i + j * s.ldc;
            if i < s.m {
                let err = (f64::from(got[idx]) - want[idx]).abs();
                assert!(
                    err <= tol(idx),
                    "{what} {s:?}: C({i},{j}) = {} want {} (err {err:e} > {:e})",
                    got[idx],
                    want[idx],
                    tol(idx)
                );
            } else {
                assert_eq!(
                    got[idx].to_bits(),
                    before[idx].to_bits(),
                    "{what} {s:?}: padding row {i} of column {j} was written"
                );
            }
        }
    }
}

struct Blas {
    h: cublasHandle_t,
    stream: u64,
}

impl Blas {
    fn new() -> Blas {
        let (stream, raw) = new_stream();
        let mut h: cublasHandle_t = std::ptr::null_mut();
        // SAFETY: h is a valid out-pointer; the handle is then bound to a live stream.
        unsafe {
            assert_eq!(cublasCreate_v2(&mut h), OK);
            assert_eq!(cublasSetStream_v2(h, raw as _), OK);
        }
        Blas { h, stream }
    }

    /// # Safety
    /// The buffers hold the extents the shape addresses.
    unsafe fn sgemm(
        &self,
        s: Shape,
        alpha: f32,
        a: &DevBuf,
        b: &DevBuf,
        beta: f32,
        c: &DevBuf,
    ) -> cublasStatus_t {
        // SAFETY: per this function's contract.
        unsafe {
            cublasSgemm_v2(
                self.h,
                if s.ta { T } else { N },
                if s.tb { T } else { N },
                s.m as i32,
                s.n as i32,
                s.k as i32,
                &alpha,
                a.ptr as *const f32,
                s.lda as i32,
                b.ptr as *const f32,
                s.ldb as i32,
                &beta,
                c.ptr as *mut f32,
                s.ldc as i32,
            )
        }
    }

    /// cublasGemmEx with fp16 A and B, C of `c_ty`, fp32 compute.
    ///
    /// # Safety
    /// As `sgemm`.
    unsafe fn gemm_ex_f16(
        &self,
        s: Shape,
        (alpha, beta): (f32, f32),
        a: &DevBuf,
        b: &DevBuf,
        c: &DevBuf,
        c_ty: cudaDataType_t,
    ) -> cublasStatus_t {
        // SAFETY: per this function's contract.
        unsafe {
            cublasGemmEx(
                self.h,
                if s.ta { T } else { N },
                if s.tb { T } else { N },
                s.m as i32,
                s.n as i32,
                s.k as i32,
                (&alpha as *const f32).cast::<c_void>(),
                a.void(),
                cudaDataType_t::CUDA_R_16F,
                s.lda as i32,
                b.void(),
                cudaDataType_t::CUDA_R_16F,
                s.ldb as i32,
                (&beta as *const f32).cast::<c_void>(),
                c.void(),
                c_ty,
                s.ldc as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle came from cublasCreate_v2 and is destroyed once.
        unsafe { assert_eq!(cublasDestroy_v2(self.h), OK) };
    }
}

/// All four transpose combinations, ld > rows, alpha and beta both nontrivial; shapes that
/// cross the 128-row and 8-column blocks of the implementation.
fn shapes() -> Vec<Shape> {
    let mut v = Vec::new();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        v.push(Shape::new(ta, tb, 5, 7, 3, 2));
        v.push(Shape::new(ta, tb, 131, 19, 37, 3));
    }
    v
}

#[test]
fn sgemm_matches_the_definition_for_all_transposes() {
    let blas = Blas::new();
    for (i, s) in shapes().into_iter().enumerate() {
        let (a, b, c) = (
            random(s.a_len(), 1 + i as u64),
            random(s.b_len(), 100 + i as u64),
            random(s.c_len(), 200 + i as u64),
        );
        let (da, db, dc) = (DevBuf::from_f32(&a), DevBuf::from_f32(&b), DevBuf::from_f32(&c));
        let (alpha, beta) = (1.5, -0.75);
        // SAFETY: the buffers hold exactly the extents the shape addresses.
        assert_eq!(unsafe { blas.sgemm(s, alpha, &da, &db, beta, &dc) }, OK);
        run(blas.stream);
        let (want, mag) = reference(s, alpha, &a, &b, beta, &c);
        // f32 accumulation of k products (plus the beta term): the standard bound for a
        // recursive sum is gamma_(k+2) * (sum of magnitudes), gamma_m ~ m u; 2x margin.
        let tol = |idx: usize| 2.0 * (s.k + 2) as f64 * U32 * mag[idx] + 1e-30;
        check(s, &dc.read_f32(), &c, &want, tol, "sgemm");
    }
}

#[test]
fn gemm_ex_fp16_inputs_with_fp32_and_fp16_outputs() {
    let blas = Blas::new();
    for (i, s) in shapes().into_iter().enumerate() {
        // The reference sees the inputs as fp16 holds them.
        let a = round_f16(&random(s.a_len(), 300 + i as u64));
        let b = round_f16(&random(s.b_len(), 400 + i as u64));
        let c32 = random(s.c_len(), 500 + i as u64);
        let (alpha, beta) = (0.5, 2.0);
        let (da, db) = (DevBuf::from_f16(&a), DevBuf::from_f16(&b));

        let dc = DevBuf::from_f32(&c32);
        // SAFETY: the buffers hold exactly the extents the shape addresses.
        assert_eq!(
            unsafe { blas.gemm_ex_f16(s, (alpha, beta), &da, &db, &dc, cudaDataType_t::CUDA_R_32F) },
            OK
        );
        run(blas.stream);
        let (want, mag) = reference(s, alpha, &a, &b, beta, &c32);
        // Products of fp16 values are exact in f32; the f32 sum errs as in sgemm.
        let tol = |idx: usize| 2.0 * (s.k + 2) as f64 * U32 * mag[idx] + 1e-30;
        check(s, &dc.read_f32(), &c32, &want, tol, "gemm_ex f16->f32");

        let c16 = round_f16(&c32);
        let dc = DevBuf::from_f16(&c16);
        // SAFETY: as above.
        assert_eq!(
            unsafe { blas.gemm_ex_f16(s, (alpha, beta), &da, &db, &dc, cudaDataType_t::CUDA_R_16F) },
            OK
        );
        run(blas.stream);
        let (want, mag) = reference(s, alpha, &a, &b, beta, &c16);
        // Plus one fp16 rounding of the result (half an fp16 ulp, relative 2^-11).
        let tol = |idx: usize| 2.0 * (s.k + 2) as f64 * U32 * mag[idx] + U16 * want[idx].abs() + 1e-30;
        check(s, &dc.read_f16(), &c16, &want, tol, "gemm_ex f16->f16");
    }
}

#[test]
fn beta_zero_does_not_read_c_and_alpha_zero_does_not_read_a_or_b() {
    let blas = Blas::new();
    let s = Shape::new(false, true, 6, 4, 5, 1);
    let (a, b) = (random(s.a_len(), 7), random(s.b_len(), 8));
    let (da, db) = (DevBuf::from_f32(&a), DevBuf::from_f32(&b));
    let dc = DevBuf::from_f32(&vec![f32::NAN; s.c_len()]);
    // SAFETY: the buffers hold exactly the extents the shape addresses.
    assert_eq!(unsafe { blas.sgemm(s, 1.0, &da, &db, 0.0, &dc) }, OK);
    run(blas.stream);
    let got = dc.read_f32();
    let (want, mag) = reference(s, 1.0, &a, &b, 0.0, &vec![0.0; s.c_len()]);
    for j in 0..s.n {
        for i in 0..s.m {
            let idx = i + j * s.ldc;
            assert!(
                (f64::from(got[idx]) - want[idx]).abs() <= 2.0 * (s.k + 2) as f64 * U32 * mag[idx],
                "C({i},{j}) = {}",
                got[idx]
            );
        }
    }

    let nan_a = DevBuf::from_f32(&vec![f32::NAN; s.a_len()]);
    let c = random(s.c_len(), 9);
    let dc = DevBuf::from_f32(&c);
    // SAFETY: as above.
    assert_eq!(unsafe { blas.sgemm(s, 0.0, &nan_a, &db, 3.0, &dc) }, OK);
    run(blas.stream);
    let got = dc.read_f32();
    for j in 0..s.n {
        for i in 0..s.m {
            let idx = i + j * s.ldc;
            // 3 * c is one rounding of an exact product: equal to the f32 computation.
            assert_eq!(got[idx], 3.0 * c[idx], "alpha = 0 gives beta C exactly, A unread");
        }
    }
}

#[test]
fn work_runs_only_when_the_stream_runs() {
    let blas = Blas::new();
    let s = Shape::new(false, false, 4, 4, 4, 0);
    let (da, db) = (DevBuf::from_f32(&random(16, 1)), DevBuf::from_f32(&random(16, 2)));
    let dc = DevBuf::from_f32(&[7.0; 16]);
    let calls = || counters::with(|c| c.cublas.get("cublasSgemm").copied().unwrap_or(0));
    let before = calls();
    // SAFETY: the buffers hold exactly the extents the shape addresses.
    assert_eq!(unsafe { blas.sgemm(s, 1.0, &da, &db, 0.0, &dc) }, OK);
    assert_eq!(dc.read_f32(), vec![7.0; 16], "C is untouched until the stream runs");
    // Other tests may count calls at the same time: at least this one was counted.
    assert!(calls() > before, "the call is counted");
    run(blas.stream);
    assert_ne!(dc.read_f32(), vec![7.0; 16]);
}

#[test]
fn device_pointer_mode_reads_alpha_when_the_work_runs() {
    let blas = Blas::new();
    // SAFETY: the handle is live.
    assert_eq!(
        unsafe { cublasSetPointerMode_v2(blas.h, cublasPointerMode_t::CUBLAS_POINTER_MODE_DEVICE) },
        OK
    );
    let (da, db) = (DevBuf::from_f32(&[1.0, 2.0]), DevBuf::from_f32(&[3.0, 4.0]));
    let dc = DevBuf::from_f32(&[0.0; 4]);
    let (alpha, beta) = (DevBuf::from_f32(&[2.0]), DevBuf::from_f32(&[0.0]));
    // SAFETY: device-mode alpha and beta are device addresses of one f32 each.
    let st = unsafe {
        cublasSgemm_v2(
            blas.h,
            N,
            N,
            2,
            2,
            1,
            alpha.ptr as *const f32,
            da.ptr as *const f32,
            2,
            db.ptr as *const f32,
            1,
            beta.ptr as *const f32,
            dc.ptr as *mut f32,
            2,
        )
    };
    assert_eq!(st, OK);
    alpha.write_f32(&[10.0]);
    run(blas.stream);
    // C = 10 * [1 2]^T [3 4] (column-major).
    assert_eq!(dc.read_f32(), vec![30.0, 60.0, 40.0, 80.0]);
}

#[test]
fn invalid_arguments_are_refused_with_cublas_codes() {
    let blas = Blas::new();
    let s = Shape::new(false, false, 4, 3, 2, 0);
    let (da, db, dc) = (
        DevBuf::from_f32(&random(s.a_len(), 1)),
        DevBuf::from_f32(&random(s.b_len(), 2)),
        DevBuf::new(s.c_len() * 4),
    );
    let inv = cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE;
    // SAFETY (all calls below): the buffers hold the extents of `s`; the calls that would
    // address more are refused before anything is queued, which is what is tested.
    unsafe {
        // lda below the rows of the stored A (m = 4 without transpose).
        assert_eq!(blas.sgemm(Shape { lda: 3, ..s }, 1.0, &da, &db, 0.0, &dc), inv);
        // With A transposed the stored rows are k = 2: lda = 2 is fine, but A then spans
        // (m - 1) * 2 + 2 = 8 elements, exactly what da holds.
        assert_eq!(blas.sgemm(Shape { ta: true, lda: 2, ..s }, 1.0, &da, &db, 0.0, &dc), OK);
        assert_eq!(blas.sgemm(Shape { ta: true, lda: 1, ..s }, 1.0, &da, &db, 0.0, &dc), inv);
        assert_eq!(blas.sgemm(Shape { ldc: 3, ..s }, 1.0, &da, &db, 0.0, &dc), inv);
        assert_eq!(blas.sgemm(Shape { m: usize::MAX, ..s }, 1.0, &da, &db, 0.0, &dc), inv, "m = -1");
        // A C that runs past its allocation.
        assert_eq!(blas.sgemm(Shape { ldc: 5, ..s }, 1.0, &da, &db, 0.0, &dc), inv);
        // An unknown handle.
        let other = Blas { h: 0x1234 as cublasHandle_t, stream: blas.stream };
        assert_eq!(other.sgemm(s, 1.0, &da, &db, 0.0, &dc), cublasStatus_t::CUBLAS_STATUS_NOT_INITIALIZED);
        std::mem::forget(other);
        // fp32 A/B with fp16 C is not in cublasGemmEx's table.
        let st = cublasGemmEx(
            blas.h,
            N,
            N,
            4,
            3,
            2,
            (&1.0f32 as *const f32).cast(),
            da.void(),
            cudaDataType_t::CUDA_R_32F,
            4,
            db.void(),
            cudaDataType_t::CUDA_R_32F,
            2,
            (&0.0f32 as *const f32).cast(),
            dc.void(),
            cudaDataType_t::CUDA_R_16F,
            4,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        );
        assert_eq!(st, cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED);
    }
    run(blas.stream);
}
