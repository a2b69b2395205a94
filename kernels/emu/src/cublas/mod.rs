//! The stand-in `libcublas`: handles (stream, math mode, pointer mode) here, the GEMMs in
//! `gemm_api` (argument checks, queuing) and `gemm_compute` (the arithmetic).
//!
//! What cudarc reaches for the project (`CudaBlas::new`, `Gemm<f16>`, `Gemm<f32>`, the raw
//! `gemm_ex` and the handle's drop): cublasCreate_v2, cublasSetStream_v2, cublasGemmEx,
//! cublasSgemm_v2 and cublasDestroy_v2. The small queries next to them (stream, math and
//! pointer mode, version, workspace) are here too because they cost a few lines each.
//!
//! Semantics are NVIDIA's cuBLAS documentation, written independently of the project's CPU
//! reference. Not emulated: TF32 rounding under CUBLAS_TF32_TENSOR_OP_MATH (products are
//! always true fp32), and reduced-precision fp16 accumulation (always f32).

pub mod gemm_api;
pub mod gemm_compute;

use crate::handles::Registry;
use cudarc::cublas::sys::{cublasHandle_t, cublasMath_t, cublasPointerMode_t, cublasStatus_t, cudaStream_t};
use std::ffi::{c_int, c_void};

/// What a cuBLAS handle holds.
#[derive(Debug, Clone, Copy)]
pub struct BlasHandle {
    /// The stream its work is queued on (`crate::stream` id).
    pub stream: u64,
    /// The raw stream handle, returned by cublasGetStream.
    pub raw_stream: usize,
    pub math: cublasMath_t,
    pub pointer_mode: cublasPointerMode_t,
}

pub(crate) static HANDLES: Registry<BlasHandle> = Registry::new();

/// A call the real library would refuse: its status and, for the log, why.
#[derive(Debug)]
pub struct Refusal {
    pub status: cublasStatus_t,
    pub msg: String,
}

pub(crate) fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal { status: cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE, msg: msg.into() }
}

pub(crate) fn not_supported(msg: impl Into<String>) -> Refusal {
    Refusal { status: cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED, msg: msg.into() }
}

/// Prints a refusal as the other stand-ins do and returns the status for the C caller.
pub(crate) fn finish(api: &str, r: Result<(), Refusal>) -> cublasStatus_t {
    match r {
        Ok(()) => cublasStatus_t::CUBLAS_STATUS_SUCCESS,
        Err(e) => {
            eprintln!("moco-emu: {api}: {}", e.msg);
            e.status
        }
    }
}

/// The handle's state, or NOT_INITIALIZED (what cuBLAS returns for a handle it does not know).
pub(crate) fn handle(h: cublasHandle_t) -> Result<BlasHandle, Refusal> {
    HANDLES.get(h as usize).ok_or_else(|| unknown(h))
}

fn unknown(h: cublasHandle_t) -> Refusal {
    Refusal {
        status: cublasStatus_t::CUBLAS_STATUS_NOT_INITIALIZED,
        msg: format!("unknown cuBLAS handle {:#x}", h as usize),
    }
}

fn update(h: cublasHandle_t, f: impl FnOnce(&mut BlasHandle)) -> Result<(), Refusal> {
    handle(h)?;
    HANDLES.update(h as usize, f);
    Ok(())
}

/// Writes through an out-pointer, refusing null with INVALID_VALUE.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
pub(crate) unsafe fn put<T>(out: *mut T, v: T, what: &str) -> Result<(), Refusal> {
    if out.is_null() {
        return Err(invalid(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null, and writable per the caller's promise.
    unsafe { out.write(v) };
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn cublasCreate_v2(out: *mut cublasHandle_t) -> cublasStatus_t {
    let h = BlasHandle {
        stream: crate::stream::DEFAULT_STREAM,
        raw_stream: 0,
        math: cublasMath_t::CUBLAS_DEFAULT_MATH,
        pointer_mode: cublasPointerMode_t::CUBLAS_POINTER_MODE_HOST,
    };
    if out.is_null() {
        return finish("cublasCreate", Err(invalid("handle is a null pointer")));
    }
    let id = HANDLES.insert(h);
    // SAFETY: `out` is non-null and the caller promises it is writable.
    finish("cublasCreate", unsafe { put(out, id as cublasHandle_t, "handle") })
}

#[no_mangle]
pub unsafe extern "C" fn cublasDestroy_v2(h: cublasHandle_t) -> cublasStatus_t {
    // Queued work keeps its own copy of what it needs, so destroying the handle does not
    // disturb it (cuBLAS synchronizes here; running the stream is not needed for that).
    finish("cublasDestroy", HANDLES.remove(h as usize).map(|_| ()).ok_or_else(|| unknown(h)))
}

#[no_mangle]
pub unsafe extern "C" fn cublasSetStream_v2(h: cublasHandle_t, s: cudaStream_t) -> cublasStatus_t {
    let id = crate::stream::stream_id(s as usize);
    finish(
        "cublasSetStream",
        update(h, |b| {
            b.stream = id;
            b.raw_stream = s as usize;
        }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cublasGetStream_v2(h: cublasHandle_t, out: *mut cudaStream_t) -> cublasStatus_t {
    finish(
        "cublasGetStream",
        // SAFETY: the caller promises `out` is null or writable.
        handle(h).and_then(|b| unsafe { put(out, b.raw_stream as cudaStream_t, "streamId") }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cublasSetMathMode(h: cublasHandle_t, mode: cublasMath_t) -> cublasStatus_t {
    finish("cublasSetMathMode", update(h, |b| b.math = mode))
}

#[no_mangle]
pub unsafe extern "C" fn cublasGetMathMode(h: cublasHandle_t, out: *mut cublasMath_t) -> cublasStatus_t {
    // SAFETY: the caller promises `out` is null or writable.
    finish("cublasGetMathMode", handle(h).and_then(|b| unsafe { put(out, b.math, "mode") }))
}

#[no_mangle]
pub unsafe extern "C" fn cublasSetPointerMode_v2(
    h: cublasHandle_t,
    mode: cublasPointerMode_t,
) -> cublasStatus_t {
    finish("cublasSetPointerMode", update(h, |b| b.pointer_mode = mode))
}

#[no_mangle]
pub unsafe extern "C" fn cublasGetPointerMode_v2(
    h: cublasHandle_t,
    out: *mut cublasPointerMode_t,
) -> cublasStatus_t {
    // SAFETY: the caller promises `out` is null or writable.
    finish("cublasGetPointerMode", handle(h).and_then(|b| unsafe { put(out, b.pointer_mode, "mode") }))
}

/// The cuBLAS version this stand-in answers to (13.0.0, matching the cuda-13000 bindings).
pub const VERSION: c_int = 130000;

#[no_mangle]
pub unsafe extern "C" fn cublasGetVersion_v2(h: cublasHandle_t, out: *mut c_int) -> cublasStatus_t {
    // SAFETY: the caller promises `out` is null or writable.
    finish("cublasGetVersion", handle(h).and_then(|_| unsafe { put(out, VERSION, "version") }))
}

#[no_mangle]
pub unsafe extern "C" fn cublasSetWorkspace_v2(
    h: cublasHandle_t,
    ws: *mut c_void,
    bytes: usize,
) -> cublasStatus_t {
    // The emulated GEMMs need no workspace; the range is still checked so a bad one is caught.
    finish(
        "cublasSetWorkspace",
        handle(h).and_then(|_| {
            if bytes == 0 {
                return Ok(());
            }
            crate::memory::check_device(ws as usize, bytes, "workspace").map_err(|e| invalid(e.to_string()))
        }),
    )
}
