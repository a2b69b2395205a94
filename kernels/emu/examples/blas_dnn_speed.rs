//! Rough timings of the stand-in convolutions and GEMMs on this host, through the exported
//! C functions (`cargo run --release -p moco-emu --example blas_dnn_speed`).

use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasHandle_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t as BwdDataAlgo, cudnnConvolutionBwdFilterAlgo_t as BwdFilterAlgo,
    cudnnConvolutionDescriptor_t, cudnnConvolutionFwdAlgo_t as FwdAlgo, cudnnConvolutionMode_t,
    cudnnDataType_t, cudnnFilterDescriptor_t, cudnnHandle_t, cudnnStatus_t, cudnnTensorDescriptor_t,
    cudnnTensorFormat_t,
};
use moco_emu::cublas::gemm_api::cublasGemmEx;
use moco_emu::cublas::{cublasCreate_v2, cublasSetStream_v2};
use moco_emu::cudnn::algos::*;
use moco_emu::cudnn::conv_api::*;
use moco_emu::cudnn::descriptors::*;
use moco_emu::cudnn::{cudnnCreate, cudnnSetStream};
use moco_emu::{memory, stream};
use std::ffi::c_void;
use std::time::Instant;

const OK: cudnnStatus_t = cudnnStatus_t::CUDNN_STATUS_SUCCESS;

fn buf(bytes: usize) -> *mut c_void {
    // Zero-filled fresh pages: the timings do not depend on the values.
    memory::alloc_device(bytes).expect("device memory") as *mut c_void
}

/// Milliseconds per call of `f` (queued, then the stream run), best of 3.
fn time(s: u64, mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            stream::run_all(s).expect("stream ran");
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// (n, c, hw, k, rs, pad, stride, half)
type Shape = (i32, i32, i32, i32, i32, i32, i32, bool);

fn conv(h: cudnnHandle_t, s: u64, (n, c, hw, k, rs, pad, st, half): Shape) {
    let ty = if half { cudnnDataType_t::CUDNN_DATA_HALF } else { cudnnDataType_t::CUDNN_DATA_FLOAT };
    let fmt = cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
    let o = (hw + 2 * pad - rs) / st + 1;
    let mut x: cudnnTensorDescriptor_t = std::ptr::null_mut();
    let mut y: cudnnTensorDescriptor_t = std::ptr::null_mut();
    let mut w: cudnnFilterDescriptor_t = std::ptr::null_mut();
    let mut cd: cudnnConvolutionDescriptor_t = std::ptr::null_mut();
    let es = if half { 2 } else { 4 };
    // SAFETY: live out-pointers; the buffers are sized from the same dims as the descriptors.
    unsafe {
        assert_eq!(cudnnCreateTensorDescriptor(&mut x), OK);
        assert_eq!(cudnnCreateTensorDescriptor(&mut y), OK);
        assert_eq!(cudnnCreateFilterDescriptor(&mut w), OK);
        assert_eq!(cudnnCreateConvolutionDescriptor(&mut cd), OK);
        assert_eq!(cudnnSetTensor4dDescriptor(x, fmt, ty, n, c, hw, hw), OK);
        assert_eq!(cudnnSetTensor4dDescriptor(y, fmt, ty, n, k, o, o), OK);
        assert_eq!(cudnnSetFilter4dDescriptor(w, ty, fmt, k, c, rs, rs), OK);
        let mode = cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        let f32t = cudnnDataType_t::CUDNN_DATA_FLOAT;
        assert_eq!(cudnnSetConvolution2dDescriptor(cd, pad, pad, st, st, 1, 1, mode, f32t), OK);
        let bytes = |v: [i32; 4]| v.iter().map(|&d| d as usize).product::<usize>() * es;
        let (xb, yb, wb) = (buf(bytes([n, c, hw, hw])), buf(bytes([n, k, o, o])), buf(bytes([k, c, rs, rs])));
        let fa = FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
        let da = BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
        let wa = BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
        let mut ws = 0;
        assert_eq!(cudnnGetConvolutionForwardWorkspaceSize(h, x, w, cd, y, fa, &mut ws), OK);
        let wsb = buf(ws);
        let (one, zero) = (1.0f32, 0.0f32);
        let (a, b) = ((&one as *const f32).cast::<c_void>(), (&zero as *const f32).cast::<c_void>());
        let tf = time(s, || {
            assert_eq!(cudnnConvolutionForward(h, a, x, xb, w, wb, cd, fa, wsb, ws, b, y, yb), OK)
        });
        let td = time(s, || {
            assert_eq!(cudnnConvolutionBackwardData(h, a, w, wb, y, yb, cd, da, wsb, ws, b, x, xb), OK)
        });
        let tw = time(s, || {
            assert_eq!(cudnnConvolutionBackwardFilter(h, a, x, xb, y, yb, cd, wa, wsb, ws, b, w, wb), OK)
        });
        let gflop = 2.0 * (n * k * o * o) as f64 * (c * rs * rs) as f64 / 1e9;
        println!(
            "conv N={n} C={c} H=W={hw} K={k} {rs}x{rs} pad {pad} stride {st} {}: fwd {tf:.2} ms, bwd data {td:.2} ms, \
             bwd filter {tw:.2} ms ({gflop:.3} GFLOP each; fwd {:.1} GFLOP/s)",
            if half { "fp16" } else { "fp32" },
            gflop / tf * 1e3
        );
    }
}

fn gemm(h: cublasHandle_t, s: u64, m: i32, n: i32, k: i32) {
    let (a, b, c) = (
        buf(m as usize * k as usize * 2),
        buf(k as usize * n as usize * 2),
        buf(m as usize * n as usize * 4),
    );
    let (one, zero) = (1.0f32, 0.0f32);
    let t = cublasOperation_t::CUBLAS_OP_T;
    let nn = cublasOperation_t::CUBLAS_OP_N;
    let (f16, f32t) = (cudaDataType_t::CUDA_R_16F, cudaDataType_t::CUDA_R_32F);
    // SAFETY: A is k x m (transposed), B k x n, C m x n, all allocated to those sizes.
    let ms = time(s, || unsafe {
        cublasGemmEx(
            h,
            t,
            nn,
            m,
            n,
            k,
            (&one as *const f32).cast(),
            a,
            f16,
            k,
            b,
            f16,
            k,
            (&zero as *const f32).cast(),
            c,
            f32t,
            m,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        );
    });
    let gflop = 2.0 * m as f64 * n as f64 * k as f64 / 1e9;
    println!("gemm_ex f16->f32 (T,N) m={m} n={n} k={k}: {ms:.2} ms ({:.1} GFLOP/s)", gflop / ms * 1e3);
}

fn main() {
    let s = stream::create_stream();
    let mut dh: cudnnHandle_t = std::ptr::null_mut();
    let mut bh: cublasHandle_t = std::ptr::null_mut();
    // SAFETY: live out-pointers; the handles are bound to a live stream.
    unsafe {
        assert_eq!(cudnnCreate(&mut dh), OK);
        assert_eq!(cudnnSetStream(dh, s as usize as _), OK);
        cublasCreate_v2(&mut bh);
        cublasSetStream_v2(bh, s as usize as _);
    }
    println!("rayon threads: {}", rayon::current_num_threads());
    for shape in [
        (8, 64, 16, 64, 3, 1, 1, false),
        (8, 64, 16, 64, 3, 1, 1, true),
        (8, 256, 16, 64, 1, 0, 1, true),
        (8, 3, 64, 64, 7, 3, 2, true),
        (8, 128, 16, 128, 3, 1, 2, true),
    ] {
        conv(dh, s, shape);
    }
    gemm(bh, s, 2048, 64, 512);
    gemm(bh, s, 4096, 64, 128);
}
