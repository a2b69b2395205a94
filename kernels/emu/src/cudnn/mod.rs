//! The stand-in `libcudnn` (cuDNN 9 ABI, as cudarc's cudnn-09021 bindings declare it): the
//! handle and version queries here; descriptors in `descriptors`; the checked description of
//! one convolution in `problem`; algorithm and workspace queries in `algos`; the three
//! convolutions in `conv_api` (checks, queuing) and `conv_compute` (the arithmetic).
//!
//! What cudarc's safe `Cudnn`, `ConvDescriptor`, `FilterDescriptor`, `TensorDescriptor`,
//! `ConvForward`, `ConvBackwardData` and `ConvBackwardFilter` reach: cudnnCreate,
//! cudnnSetStream, cudnnDestroy, the Create/Set/Destroy functions of tensor, filter and
//! convolution descriptors (4d, 4dEx, Nd), cudnnSetConvolutionMathType and GroupCount, the
//! three Get*Algorithm_v7 and Get*WorkspaceSize queries, and the three convolutions.
//!
//! Semantics follow NVIDIA's cuDNN documentation, written independently of the project's CPU
//! reference. Not emulated: true-half convolutions (fp16 compute type; refused as
//! NOT_SUPPORTED), TF32 rounding that DEFAULT/TENSOR_OP math may apply to fp32 data on
//! sm_80+ (products here are always true fp32), and the non-determinism of the atomics-based
//! backward algorithms (every algorithm here sums in one fixed order).

pub mod algos;
pub mod conv_api;
pub mod conv_compute;
pub mod descriptors;
pub mod problem;

use crate::handles::Registry;
use cudarc::cudnn::sys::{cudaStream_t, cudnnHandle_t, cudnnStatus_t};
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::Mutex;

/// What a cuDNN handle holds.
#[derive(Debug, Clone, Copy)]
pub struct CudnnHandle {
    /// The stream its work is queued on (`crate::stream` id).
    pub stream: u64,
    /// The raw stream handle, returned by cudnnGetStream.
    pub raw_stream: usize,
}

pub(crate) static HANDLES: Registry<CudnnHandle> = Registry::new();

/// A call the real library would refuse: its status and, for the log, why.
#[derive(Debug)]
pub struct Refusal {
    pub status: cudnnStatus_t,
    pub msg: String,
}

pub(crate) fn bad_param(msg: impl Into<String>) -> Refusal {
    Refusal { status: cudnnStatus_t::CUDNN_STATUS_BAD_PARAM, msg: msg.into() }
}

pub(crate) fn not_supported(msg: impl Into<String>) -> Refusal {
    Refusal { status: cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED, msg: msg.into() }
}

/// Prints a refusal as the other stand-ins do and returns the status for the C caller.
pub(crate) fn finish(api: &str, r: Result<(), Refusal>) -> cudnnStatus_t {
    match r {
        Ok(()) => cudnnStatus_t::CUDNN_STATUS_SUCCESS,
        Err(e) => {
            eprintln!("moco-emu: {api}: {}", e.msg);
            e.status
        }
    }
}

pub(crate) fn handle(h: cudnnHandle_t) -> Result<CudnnHandle, Refusal> {
    HANDLES.get(h as usize).ok_or_else(|| bad_param(format!("unknown cuDNN handle {:#x}", h as usize)))
}

/// Writes through an out-pointer, refusing null.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
pub(crate) unsafe fn put<T>(out: *mut T, v: T, what: &str) -> Result<(), Refusal> {
    if out.is_null() {
        return Err(Refusal {
            status: cudnnStatus_t::CUDNN_STATUS_BAD_PARAM_NULL_POINTER,
            msg: format!("{what} is a null pointer"),
        });
    }
    // SAFETY: non-null, and writable per the caller's promise.
    unsafe { out.write(v) };
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn cudnnCreate(out: *mut cudnnHandle_t) -> cudnnStatus_t {
    if out.is_null() {
        return finish("cudnnCreate", Err(bad_param("handle is a null pointer")));
    }
    let id = HANDLES.insert(CudnnHandle { stream: crate::stream::DEFAULT_STREAM, raw_stream: 0 });
    // SAFETY: non-null, and writable per the caller's promise.
    finish("cudnnCreate", unsafe { put(out, id as cudnnHandle_t, "handle") })
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroy(h: cudnnHandle_t) -> cudnnStatus_t {
    // Queued work holds copies of what it needs, so it is not disturbed by this.
    let r = HANDLES.remove(h as usize).map(|_| ());
    finish("cudnnDestroy", r.ok_or_else(|| bad_param(format!("unknown cuDNN handle {:#x}", h as usize))))
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetStream(h: cudnnHandle_t, s: cudaStream_t) -> cudnnStatus_t {
    let r = handle(h).map(|_| {
        HANDLES.update(h as usize, |c| {
            c.stream = crate::stream::stream_id(s as usize);
            c.raw_stream = s as usize;
        });
    });
    finish("cudnnSetStream", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnGetStream(h: cudnnHandle_t, out: *mut cudaStream_t) -> cudnnStatus_t {
    // SAFETY: the caller promises `out` is null or writable.
    finish(
        "cudnnGetStream",
        handle(h).and_then(|c| unsafe { put(out, c.raw_stream as cudaStream_t, "streamId") }),
    )
}

/// The cuDNN version this stand-in answers to: 9.21.0, the bindings cudarc uses
/// (CUDNN_VERSION = major * 10000 + minor * 100 + patch).
pub const VERSION: usize = 92100;

#[no_mangle]
pub extern "C" fn cudnnGetVersion() -> usize {
    VERSION
}

/// The CUDA runtime version the stand-in claims to be built against (13.0).
#[no_mangle]
pub extern "C" fn cudnnGetCudartVersion() -> usize {
    13000
}

/// The sub-library version checks: one library, so always consistent.
#[no_mangle]
pub extern "C" fn cudnnOpsVersionCheck() -> cudnnStatus_t {
    cudnnStatus_t::CUDNN_STATUS_SUCCESS
}

#[no_mangle]
pub extern "C" fn cudnnCnnVersionCheck() -> cudnnStatus_t {
    cudnnStatus_t::CUDNN_STATUS_SUCCESS
}

#[no_mangle]
pub extern "C" fn cudnnAdvVersionCheck() -> cudnnStatus_t {
    cudnnStatus_t::CUDNN_STATUS_SUCCESS
}

/// The status's name, as a NUL-terminated string that lives as long as the process.
#[no_mangle]
pub extern "C" fn cudnnGetErrorString(status: cudnnStatus_t) -> *const c_char {
    static NAMES: Mutex<Option<HashMap<cudnnStatus_t, &'static std::ffi::CStr>>> = Mutex::new(None);
    let mut g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let names = g.get_or_insert_with(HashMap::new);
    let name = names.entry(status).or_insert_with(|| {
        let s = CString::new(format!("{status:?}")).expect("a Debug name has no NUL");
        // One small string per distinct status, kept for the process's life as cuDNN's are.
        Box::leak(s.into_boxed_c_str())
    });
    name.as_ptr()
}
