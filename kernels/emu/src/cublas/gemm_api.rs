//! The exported GEMMs: cublasSgemm_v2, cublasGemmEx and cublasHgemm. Each checks its arguments
//! as cuBLAS documents (INVALID_VALUE for negative sizes, leading dimensions below the stored
//! rows, an operation GEMM does not take; NOT_SUPPORTED for a type combination outside
//! cublasGemmEx's table), checks that every operand's extent lies in device memory (a real GPU
//! would fault later; here the call is refused with the reason), then queues the work on the
//! handle's stream. Nothing is read or written before the stream runs, except host-mode
//! alpha and beta, which cuBLAS also reads at call time.

use super::gemm_compute::Gemm;
use super::{finish, handle, invalid, not_supported, BlasHandle, Refusal};
use crate::counters::{self, Lib};
use crate::elem::Elem;
use crate::{memory, stream};
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasHandle_t, cublasOperation_t, cublasPointerMode_t,
    cublasStatus_t, cudaDataType,
};
use half::f16;
use std::ffi::{c_int, c_void};

/// alpha or beta: a value read at call time (host pointer mode) or a device address read
/// when the work runs (device pointer mode).
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Host(f32),
    Device(usize, Elem),
}

impl Scalar {
    /// # Safety
    /// A device scalar's address was checked when the call was queued and is still live.
    unsafe fn value(self) -> f32 {
        match self {
            Scalar::Host(v) => v,
            // SAFETY: per this function's contract.
            Scalar::Device(p, ty) => unsafe { ty.load(p, 0) },
        }
    }
}

/// # Safety
/// `p` is null or points at one element of `ty` (host memory in host pointer mode).
unsafe fn scalar(h: &BlasHandle, p: *const c_void, ty: Elem, what: &str) -> Result<Scalar, Refusal> {
    if p.is_null() {
        return Err(invalid(format!("{what} is a null pointer")));
    }
    match h.pointer_mode {
        // SAFETY: non-null, and readable per the caller's promise.
        cublasPointerMode_t::CUBLAS_POINTER_MODE_HOST => Ok(Scalar::Host(unsafe { ty.load(p as usize, 0) })),
        cublasPointerMode_t::CUBLAS_POINTER_MODE_DEVICE => {
            memory::check_device(p as usize, ty.size(), what).map_err(|e| invalid(e.to_string()))?;
            Ok(Scalar::Device(p as usize, ty))
        }
    }
}

/// Whether `op` transposes; GEMM on real types treats OP_C as OP_T and refuses the rest.
fn transposes(op: cublasOperation_t, what: &str) -> Result<bool, Refusal> {
    match op {
        cublasOperation_t::CUBLAS_OP_N => Ok(false),
        cublasOperation_t::CUBLAS_OP_T | cublasOperation_t::CUBLAS_OP_C => Ok(true),
        other => Err(invalid(format!("{what} = {other:?} is not an operation GEMM takes"))),
    }
}

fn size(v: c_int, what: &str) -> Result<usize, Refusal> {
    usize::try_from(v).map_err(|_| invalid(format!("{what} = {v} is negative")))
}

/// A GEMM call's arguments as the C caller passed them.
struct RawGemm {
    api: &'static str,
    transa: cublasOperation_t,
    transb: cublasOperation_t,
    m: c_int,
    n: c_int,
    k: c_int,
    /// The type of alpha and beta.
    scalar_ty: Elem,
    alpha: *const c_void,
    a: *const c_void,
    a_ty: Elem,
    lda: c_int,
    b: *const c_void,
    b_ty: Elem,
    ldb: c_int,
    beta: *const c_void,
    c: *mut c_void,
    c_ty: Elem,
    ldc: c_int,
}

/// Elements a stored rows x cols matrix with leading dimension `ld` spans (0 if empty).
fn extent(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (cols - 1) * ld + rows
    }
}

fn check_operand(ptr: usize, elems: usize, ty: Elem, what: &str) -> Result<(), Refusal> {
    if elems == 0 {
        return Ok(());
    }
    memory::check_device(ptr, elems * ty.size(), what).map_err(|e| invalid(e.to_string()))
}

/// Checks the call and queues it on the handle's stream.
///
/// # Safety
/// Host-mode alpha and beta must be readable as `scalar_ty`.
unsafe fn queue(h: cublasHandle_t, r: RawGemm) -> Result<(), Refusal> {
    let hs = handle(h)?;
    let trans_a = transposes(r.transa, "transa")?;
    let trans_b = transposes(r.transb, "transb")?;
    let (m, n, k) = (size(r.m, "m")?, size(r.n, "n")?, size(r.k, "k")?);
    // Stored shapes: A is m x k (k x m when transposed), B is k x n (n x k).
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    let lda = size(r.lda, "lda")?;
    let ldb = size(r.ldb, "ldb")?;
    let ldc = size(r.ldc, "ldc")?;
    for (ld, rows, what) in [(lda, a_rows, "lda"), (ldb, b_rows, "ldb"), (ldc, m, "ldc")] {
        if ld < rows.max(1) {
            return Err(invalid(format!(
                "{what} = {ld} is less than max(1, {rows}), the rows of the stored matrix"
            )));
        }
    }
    // SAFETY: the caller promises host-mode scalars are readable.
    let alpha = unsafe { scalar(&hs, r.alpha, r.scalar_ty, "alpha")? };
    // SAFETY: as above.
    let beta = unsafe { scalar(&hs, r.beta, r.scalar_ty, "beta")? };
    // A and B are not read when alpha is known to be zero, so they need not be valid then.
    let reads_ab = !matches!(alpha, Scalar::Host(v) if v == 0.0);
    if reads_ab {
        check_operand(r.a as usize, extent(a_rows, a_cols, lda), r.a_ty, "A")?;
        check_operand(r.b as usize, extent(b_rows, b_cols, ldb), r.b_ty, "B")?;
    }
    check_operand(r.c as usize, extent(m, n, ldc), r.c_ty, "C")?;
    counters::call(Lib::Cublas, r.api);
    let g = Gemm {
        trans_a,
        trans_b,
        m,
        n,
        k,
        a: r.a as usize,
        a_ty: r.a_ty,
        lda,
        b: r.b as usize,
        b_ty: r.b_ty,
        ldb,
        c: r.c as usize,
        c_ty: r.c_ty,
        ldc,
    };
    stream::enqueue(
        hs.stream,
        r.api,
        Box::new(move || {
            // SAFETY: every address was checked when the call was queued; the caller keeps
            // the memory alive until the stream has run (as with a real GPU).
            unsafe { g.run(alpha.value(), beta.value()) };
            Ok(())
        }),
    )
    .map(|_| ())
    .map_err(|e| Refusal { status: cublasStatus_t::CUBLAS_STATUS_EXECUTION_FAILED, msg: e.to_string() })
}

#[no_mangle]
pub unsafe extern "C" fn cublasSgemm_v2(
    handle: cublasHandle_t,
    transa: cublasOperation_t,
    transb: cublasOperation_t,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: c_int,
) -> cublasStatus_t {
    let f = Elem::F32;
    let r = RawGemm {
        api: "cublasSgemm",
        transa,
        transb,
        m,
        n,
        k,
        scalar_ty: f,
        alpha: alpha.cast(),
        a: a.cast(),
        a_ty: f,
        lda,
        b: b.cast(),
        b_ty: f,
        ldb,
        beta: beta.cast(),
        c: c.cast(),
        c_ty: f,
        ldc,
    };
    // SAFETY: alpha and beta are f32, as SGEMM declares.
    finish("cublasSgemm", unsafe { queue(handle, r) })
}

/// cublasHgemm: fp16 everywhere, alpha and beta fp16. Accumulates in f32 (cuBLAS may
/// accumulate in fp16 here; the result can only be closer to the exact one).
#[no_mangle]
pub unsafe extern "C" fn cublasHgemm(
    handle: cublasHandle_t,
    transa: cublasOperation_t,
    transb: cublasOperation_t,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f16,
    a: *const f16,
    lda: c_int,
    b: *const f16,
    ldb: c_int,
    beta: *const f16,
    c: *mut f16,
    ldc: c_int,
) -> cublasStatus_t {
    let h = Elem::F16;
    let r = RawGemm {
        api: "cublasHgemm",
        transa,
        transb,
        m,
        n,
        k,
        scalar_ty: h,
        alpha: alpha.cast(),
        a: a.cast(),
        a_ty: h,
        lda,
        b: b.cast(),
        b_ty: h,
        ldb,
        beta: beta.cast(),
        c: c.cast(),
        c_ty: h,
        ldc,
    };
    // SAFETY: alpha and beta are fp16, as HGEMM declares.
    finish("cublasHgemm", unsafe { queue(handle, r) })
}

fn elem_of(t: cudaDataType, what: &str) -> Result<Elem, Refusal> {
    match t {
        cudaDataType::CUDA_R_32F => Ok(Elem::F32),
        cudaDataType::CUDA_R_16F => Ok(Elem::F16),
        other => {
            Err(not_supported(format!("{what} = {other:?} is not emulated (only CUDA_R_16F and CUDA_R_32F)")))
        }
    }
}

/// The cublasGemmEx rows the emulator implements: compute type 32F (or 32F_PEDANTIC) with
/// A/B/C = 16F/16F/16F, 16F/16F/32F or 32F/32F/32F; alpha and beta are then f32.
fn ex_types(
    a: cudaDataType,
    b: cudaDataType,
    c: cudaDataType,
    compute: cublasComputeType_t,
) -> Result<(Elem, Elem, Elem), Refusal> {
    use cublasComputeType_t::*;
    if !matches!(compute, CUBLAS_COMPUTE_32F | CUBLAS_COMPUTE_32F_PEDANTIC) {
        return Err(not_supported(format!(
            "computeType {compute:?} is not emulated (only CUBLAS_COMPUTE_32F and _PEDANTIC)"
        )));
    }
    let (ea, eb, ec) = (elem_of(a, "Atype")?, elem_of(b, "Btype")?, elem_of(c, "Ctype")?);
    match (ea, eb, ec) {
        (Elem::F16, Elem::F16, _) | (Elem::F32, Elem::F32, Elem::F32) => Ok((ea, eb, ec)),
        _ => Err(not_supported(format!(
            "Atype/Btype/Ctype = {a:?}/{b:?}/{c:?} is not a combination cublasGemmEx supports with {compute:?}"
        ))),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cublasGemmEx(
    handle: cublasHandle_t,
    transa: cublasOperation_t,
    transb: cublasOperation_t,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_type: cudaDataType,
    lda: c_int,
    b: *const c_void,
    b_type: cudaDataType,
    ldb: c_int,
    beta: *const c_void,
    c: *mut c_void,
    c_type: cudaDataType,
    ldc: c_int,
    compute: cublasComputeType_t,
    _algo: cublasGemmAlgo_t,
) -> cublasStatus_t {
    // The algorithm only chooses among implementations of the same product: ignored.
    let r = ex_types(a_type, b_type, c_type, compute).map(|(a_ty, b_ty, c_ty)| RawGemm {
        api: "cublasGemmEx",
        transa,
        transb,
        m,
        n,
        k,
        scalar_ty: Elem::F32,
        alpha,
        a,
        a_ty,
        lda,
        b,
        b_ty,
        ldb,
        beta,
        c,
        c_ty,
        ldc,
    });
    // SAFETY: with compute type 32F, alpha and beta are f32, as cuBLAS documents.
    finish("cublasGemmEx", r.and_then(|r| unsafe { queue(handle, r) }))
}
