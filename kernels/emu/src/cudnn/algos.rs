//! Algorithm and workspace queries. The emulator has one implementation per direction, offered
//! under the names of the GEMM-style algorithms every cuDNN build supports (listed best first
//! for the heuristic queries); the FFT and Winograd algorithms are NOT_SUPPORTED, as they are
//! in real cuDNN for many shapes. Every supported algorithm needs the same, nonzero workspace
//! (`Problem::workspace_bytes`), and the convolutions refuse less.

use super::descriptors::{conv, filter, tensor};
use super::problem::Problem;
use super::{finish, handle, not_supported, put, Refusal};
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t as BwdDataAlgo,
    cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t as BwdFilterAlgo,
    cudnnConvolutionDescriptor_t, cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t as FwdAlgo,
    cudnnDeterminism_t, cudnnFilterDescriptor_t, cudnnHandle_t, cudnnMathType_t, cudnnStatus_t,
    cudnnTensorDescriptor_t,
};
use std::ffi::c_int;

pub const FWD_ALGOS: [FwdAlgo; 3] = [
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
];
pub const BWD_DATA_ALGOS: [BwdDataAlgo; 2] =
    [BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0];
pub const BWD_FILTER_ALGOS: [BwdFilterAlgo; 3] = [
    BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
    BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
    BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
];

/// The problem described by a call's descriptors (x is the forward input, y its output).
pub(crate) fn problem(
    x: cudnnTensorDescriptor_t,
    w: cudnnFilterDescriptor_t,
    c: cudnnConvolutionDescriptor_t,
    y: cudnnTensorDescriptor_t,
) -> Result<(Problem, cudnnMathType_t), Refusal> {
    let conv = conv(c, "convDesc")?;
    let p = Problem::new(&tensor(x, "xDesc")?, &filter(w, "wDesc")?, &conv, &tensor(y, "yDesc")?)?;
    Ok((p, conv.math))
}

/// Workspace for `algo` if the emulator offers it.
pub(crate) fn workspace_for<A: PartialEq + std::fmt::Debug>(
    p: &Problem,
    algo: A,
    offered: &[A],
) -> Result<usize, Refusal> {
    if offered.contains(&algo) {
        Ok(p.workspace_bytes())
    } else {
        Err(not_supported(format!("algorithm {algo:?} is not emulated (offered: {offered:?})")))
    }
}

/// Fills up to `requested` perf results, best first, and the count returned.
///
/// # Safety
/// `out` is null or has room for `requested` results; `count` is null or writable.
unsafe fn fill<A: Copy, P>(
    requested: c_int,
    count: *mut c_int,
    out: *mut P,
    algos: &[A],
    make: impl Fn(usize, A) -> P,
) -> Result<(), Refusal> {
    if requested < 1 {
        return Err(super::bad_param(format!("requestedAlgoCount = {requested} must be at least 1")));
    }
    if out.is_null() {
        return Err(super::bad_param("perfResults is a null pointer"));
    }
    let n = algos.len().min(requested as usize);
    // SAFETY: `count` is null (refused by put) or writable per the caller's promise.
    unsafe { put(count, n as c_int, "returnedAlgoCount")? };
    for (i, &a) in algos.iter().take(n).enumerate() {
        // SAFETY: i < n <= requested, the room the caller promises.
        unsafe { out.add(i).write(make(i, a)) };
    }
    Ok(())
}

/// A plausible, strictly increasing "time" in ms, so the list reads as sorted best first.
fn time(rank: usize) -> f32 {
    1.0 + rank as f32
}

const OK: cudnnStatus_t = cudnnStatus_t::CUDNN_STATUS_SUCCESS;
/// Every emulated algorithm sums in one fixed order.
const DET: cudnnDeterminism_t = cudnnDeterminism_t::CUDNN_DETERMINISTIC;

#[no_mangle]
pub unsafe extern "C" fn cudnnGetConvolutionForwardAlgorithm_v7(
    h: cudnnHandle_t,
    x: cudnnTensorDescriptor_t,
    w: cudnnFilterDescriptor_t,
    c: cudnnConvolutionDescriptor_t,
    y: cudnnTensorDescriptor_t,
    requested: c_int,
    count: *mut c_int,
    out: *mut cudnnConvolutionFwdAlgoPerf_t,
) -> cudnnStatus_t {
    let r = handle(h).and_then(|_| problem(x, w, c, y)).and_then(|(p, math)| {
        let ws = p.workspace_bytes();
        // SAFETY: the caller promises room for `requested` results and a writable count.
        unsafe {
            fill(requested, count, out, &FWD_ALGOS, |i, algo| cudnnConvolutionFwdAlgoPerf_t {
                algo,
                status: OK,
                time: time(i),
                memory: ws,
                determinism: DET,
                mathType: math,
                reserved: [0; 3],
            })
        }
    });
    finish("cudnnGetConvolutionForwardAlgorithm_v7", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnGetConvolutionForwardWorkspaceSize(
    h: cudnnHandle_t,
    x: cudnnTensorDescriptor_t,
    w: cudnnFilterDescriptor_t,
    c: cudnnConvolutionDescriptor_t,
    y: cudnnTensorDescriptor_t,
    algo: FwdAlgo,
    size: *mut usize,
) -> cudnnStatus_t {
    let r = handle(h)
        .and_then(|_| problem(x, w, c, y))
        .and_then(|(p, _)| workspace_for(&p, algo, &FWD_ALGOS))
        // SAFETY: the caller promises `size` is null or writable.
        .and_then(|ws| unsafe { put(size, ws, "sizeInBytes") });
    finish("cudnnGetConvolutionForwardWorkspaceSize", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnGetConvolutionBackwardDataAlgorithm_v7(
    h: cudnnHandle_t,
    w: cudnnFilterDescriptor_t,
    dy: cudnnTensorDescriptor_t,
    c: cudnnConvolutionDescriptor_t,
    dx: cudnnTensorDescriptor_t,
    requested: c_int,
    count: *mut c_int,
    out: *mut cudnnConvolutionBwdDataAlgoPerf_t,
) -> cudnnStatus_t {
    let r = handle(h).and_then(|_| problem(dx, w, c, dy)).and_then(|(p, math)| {
        let ws = p.workspace_bytes();
        // SAFETY: the caller promises room for `requested` results and a writable count.
        unsafe {
            fill(requested, count, out, &BWD_DATA_ALGOS, |i, algo| cudnnConvolutionBwdDataAlgoPerf_t {
                algo,
                status: OK,
                time: time(i),
                memory: ws,
                determinism: DET,
                mathType: math,
                reserved: [0; 3],
            })
        }
    });
    finish("cudnnGetConvolutionBackwardDataAlgorithm_v7", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnGetConvolutionBackwardDataWorkspaceSize(
    h: cudnnHandle_t,
    w: cudnnFilterDescriptor_t,
    dy: cudnnTensorDescriptor_t,
    c: cudnnConvolutionDescriptor_t,
    dx: cudnnTensorDescriptor_t,
    algo: BwdDataAlgo,
    size: *mut usize,
) -> cudnnStatus_t {
    let r = handle(h)
        .and_then(|_| problem(dx, w, c, dy))
        .and_then(|(p, _)| workspace_for(&p, algo, &BWD_DATA_ALGOS))
        // SAFETY: the caller promises `size` is null or writable.
        .and_then(|ws| unsafe { put(size, ws, "sizeInBytes") });
    finish("cudnnGetConvolutionBackwardDataWorkspaceSize", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    h: cudnnHandle_t,
    x: cudnnTensorDescriptor_t,
    dy: cudnnTensorDescriptor_t,
    c: cudnnConvolutionDescriptor_t,
    dw: cudnnFilterDescriptor_t,
    requested: c_int,
    count: *mut c_int,
    out: *mut cudnnConvolutionBwdFilterAlgoPerf_t,
) -> cudnnStatus_t {
    let r = handle(h).and_then(|_| problem(x, dw, c, dy)).and_then(|(p, math)| {
        let ws = p.workspace_bytes();
        // SAFETY: the caller promises room for `requested` results and a writable count.
        unsafe {
            fill(requested, count, out, &BWD_FILTER_ALGOS, |i, algo| cudnnConvolutionBwdFilterAlgoPerf_t {
                algo,
                status: OK,
                time: time(i),
                memory: ws,
                determinism: DET,
                mathType: math,
                reserved: [0; 3],
            })
        }
    });
    finish("cudnnGetConvolutionBackwardFilterAlgorithm_v7", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnGetConvolutionBackwardFilterWorkspaceSize(
    h: cudnnHandle_t,
    x: cudnnTensorDescriptor_t,
    dy: cudnnTensorDescriptor_t,
    c: cudnnConvolutionDescriptor_t,
    dw: cudnnFilterDescriptor_t,
    algo: BwdFilterAlgo,
    size: *mut usize,
) -> cudnnStatus_t {
    let r = handle(h)
        .and_then(|_| problem(x, dw, c, dy))
        .and_then(|(p, _)| workspace_for(&p, algo, &BWD_FILTER_ALGOS))
        // SAFETY: the caller promises `size` is null or writable.
        .and_then(|ws| unsafe { put(size, ws, "sizeInBytes") });
    finish("cudnnGetConvolutionBackwardFilterWorkspaceSize", r)
}

/// The output dims cudnnConvolutionForward expects for this input and filter.
#[no_mangle]
pub unsafe extern "C" fn cudnnGetConvolution2dForwardOutputDim(
    c: cudnnConvolutionDescriptor_t,
    x: cudnnTensorDescriptor_t,
    w: cudnnFilterDescriptor_t,
    n: *mut c_int,
    k: *mut c_int,
    p: *mut c_int,
    q: *mut c_int,
) -> cudnnStatus_t {
    let r = (|| {
        let (conv, x, w) = (conv(c, "convDesc")?, tensor(x, "inputTensorDesc")?, filter(w, "filterDesc")?);
        let dim = |i: usize, input: usize, f: usize| {
            super::problem::out_dim(input, conv.pad[i], f, conv.dilation[i], conv.stride[i])
                .ok_or_else(|| super::bad_param("the dilated filter is larger than the padded input"))
        };
        let (ph, qw) = (dim(0, x.dims[2], w.dims[2])?, dim(1, x.dims[3], w.dims[3])?);
        // SAFETY: the caller promises each out-pointer is null or writable.
        unsafe {
            put(n, x.dims[0] as c_int, "n")?;
            put(k, w.dims[0] as c_int, "c")?;
            put(p, ph as c_int, "h")?;
            put(q, qw as c_int, "w")
        }
    })();
    finish("cudnnGetConvolution2dForwardOutputDim", r)
}
