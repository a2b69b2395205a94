//! The exported convolutions. Each call checks, at call time, what cuDNN checks (descriptors
//! consistent, algorithm supported, workspace at least what the workspace query reported) and
//! what a GPU would only reveal by faulting later (every operand inside device memory, the
//! workspace too), prints why it refuses, and otherwise queues the work on the handle's stream.
//! alpha and beta are host pointers read at call time (fp32 for fp16 and fp32 data).

use super::algos::{problem, workspace_for, BWD_DATA_ALGOS, BWD_FILTER_ALGOS, FWD_ALGOS};
use super::conv_compute;
use super::problem::{extent, Problem};
use super::{bad_param, finish, handle, Refusal};
use crate::counters::{self, Lib};
use crate::{memory, stream};
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t as BwdDataAlgo, cudnnConvolutionBwdFilterAlgo_t as BwdFilterAlgo,
    cudnnConvolutionDescriptor_t, cudnnConvolutionFwdAlgo_t as FwdAlgo, cudnnFilterDescriptor_t,
    cudnnHandle_t, cudnnStatus_t, cudnnTensorDescriptor_t,
};
use std::ffi::c_void;

/// Reads a host scaling factor.
///
/// # Safety
/// `p` is null or points at a readable f32.
unsafe fn scale(p: *const c_void, what: &str) -> Result<f32, Refusal> {
    if p.is_null() {
        return Err(bad_param(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null, and readable per the caller's promise.
    Ok(unsafe { std::ptr::read_unaligned(p.cast::<f32>()) })
}

/// Checks that `elems` elements of the problem's type at `ptr` lie in device memory and that
/// `ptr` is aligned for that type.
fn operand(pr: &Problem, ptr: *const c_void, elems: usize, what: &str) -> Result<usize, Refusal> {
    let (p, size) = (ptr as usize, pr.ty.size());
    if p % size != 0 {
        return Err(bad_param(format!("{what} at {p:#x} is not aligned to its {size}-byte elements")));
    }
    memory::check_device(p, elems * size, what).map_err(|e| bad_param(e.to_string()))?;
    Ok(p)
}

/// The workspace must hold what the workspace query reported for this algorithm, in device
/// memory: cuDNN's GEMM algorithms write there, so less is a real bug on a GPU.
fn workspace(need: usize, ptr: *mut c_void, bytes: usize) -> Result<(), Refusal> {
    if bytes < need {
        return Err(bad_param(format!(
            "workSpaceSizeInBytes = {bytes} is less than the {need} bytes the workspace query reported \
             for this algorithm"
        )));
    }
    if bytes > 0 {
        memory::check_device(ptr as usize, bytes, "workSpace").map_err(|e| bad_param(e.to_string()))?;
    }
    Ok(())
}

/// Counts the call and queues `work` on the handle's stream.
fn queue(stream: u64, api: &'static str, work: impl FnOnce() + Send + 'static) -> Result<(), Refusal> {
    counters::call(Lib::Cudnn, api);
    stream::enqueue(
        stream,
        api,
        Box::new(move || {
            work();
            Ok(())
        }),
    )
    .map(|_| ())
    .map_err(|e| Refusal { status: cudnnStatus_t::CUDNN_STATUS_EXECUTION_FAILED, msg: e.to_string() })
}

#[no_mangle]
pub unsafe extern "C" fn cudnnConvolutionForward(
    h: cudnnHandle_t,
    alpha: *const c_void,
    x_desc: cudnnTensorDescriptor_t,
    x: *const c_void,
    w_desc: cudnnFilterDescriptor_t,
    w: *const c_void,
    conv_desc: cudnnConvolutionDescriptor_t,
    algo: FwdAlgo,
    ws: *mut c_void,
    ws_bytes: usize,
    beta: *const c_void,
    y_desc: cudnnTensorDescriptor_t,
    y: *mut c_void,
) -> cudnnStatus_t {
    const API: &str = "cudnnConvolutionForward";
    let r = (|| {
        let hs = handle(h)?;
        let (pr, _) = problem(x_desc, w_desc, conv_desc, y_desc)?;
        workspace(workspace_for(&pr, algo, &FWD_ALGOS)?, ws, ws_bytes)?;
        // SAFETY: the caller promises alpha and beta point at f32 scaling factors.
        let (a, b) = unsafe { (scale(alpha, "alpha")?, scale(beta, "beta")?) };
        let xa = operand(&pr, x, extent(pr.x_dims(), pr.x_strides), "x")?;
        let wa = operand(&pr, w, pr.w_len(), "w")?;
        let ya = operand(&pr, y, extent(pr.y_dims(), pr.y_strides), "y")?;
        // SAFETY: x, w and y were checked above; the caller keeps them alive until the
        // stream has run, and the stream runs one op at a time.
        queue(hs.stream, API, move || unsafe { conv_compute::forward(&pr, xa, wa, ya, a, b) })
    })();
    finish(API, r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnConvolutionBackwardData(
    h: cudnnHandle_t,
    alpha: *const c_void,
    w_desc: cudnnFilterDescriptor_t,
    w: *const c_void,
    dy_desc: cudnnTensorDescriptor_t,
    dy: *const c_void,
    conv_desc: cudnnConvolutionDescriptor_t,
    algo: BwdDataAlgo,
    ws: *mut c_void,
    ws_bytes: usize,
    beta: *const c_void,
    dx_desc: cudnnTensorDescriptor_t,
    dx: *mut c_void,
) -> cudnnStatus_t {
    const API: &str = "cudnnConvolutionBackwardData";
    let r = (|| {
        let hs = handle(h)?;
        let (pr, _) = problem(dx_desc, w_desc, conv_desc, dy_desc)?;
        workspace(workspace_for(&pr, algo, &BWD_DATA_ALGOS)?, ws, ws_bytes)?;
        // SAFETY: the caller promises alpha and beta point at f32 scaling factors.
        let (a, b) = unsafe { (scale(alpha, "alpha")?, scale(beta, "beta")?) };
        let wa = operand(&pr, w, pr.w_len(), "w")?;
        let dya = operand(&pr, dy, extent(pr.y_dims(), pr.y_strides), "dy")?;
        let dxa = operand(&pr, dx, extent(pr.x_dims(), pr.x_strides), "dx")?;
        // SAFETY: as in cudnnConvolutionForward.
        queue(hs.stream, API, move || unsafe { conv_compute::backward_data(&pr, wa, dya, dxa, a, b) })
    })();
    finish(API, r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnConvolutionBackwardFilter(
    h: cudnnHandle_t,
    alpha: *const c_void,
    x_desc: cudnnTensorDescriptor_t,
    x: *const c_void,
    dy_desc: cudnnTensorDescriptor_t,
    dy: *const c_void,
    conv_desc: cudnnConvolutionDescriptor_t,
    algo: BwdFilterAlgo,
    ws: *mut c_void,
    ws_bytes: usize,
    beta: *const c_void,
    dw_desc: cudnnFilterDescriptor_t,
    dw: *mut c_void,
) -> cudnnStatus_t {
    const API: &str = "cudnnConvolutionBackwardFilter";
    let r = (|| {
        let hs = handle(h)?;
        let (pr, _) = problem(x_desc, dw_desc, conv_desc, dy_desc)?;
        workspace(workspace_for(&pr, algo, &BWD_FILTER_ALGOS)?, ws, ws_bytes)?;
        // SAFETY: the caller promises alpha and beta point at f32 scaling factors.
        let (a, b) = unsafe { (scale(alpha, "alpha")?, scale(beta, "beta")?) };
        let xa = operand(&pr, x, extent(pr.x_dims(), pr.x_strides), "x")?;
        let dya = operand(&pr, dy, extent(pr.y_dims(), pr.y_strides), "dy")?;
        let dwa = operand(&pr, dw, pr.w_len(), "dw")?;
        // SAFETY: as in cudnnConvolutionForward.
        queue(hs.stream, API, move || unsafe { conv_compute::backward_filter(&pr, xa, dya, dwa, a, b) })
    })();
    finish(API, r)
}
