// Helpers shared by every kernel family (compiled, not yet run on a GPU).
//
// NVRTC receives this file as an in-memory header (see kernels/src/cuda/nvrtc.rs), so the .cu
// files can `#include "common.cuh"` without an include path to this folder; nvcc and ptxas
// users pass `-I kernels/cu`.
//
// Conventions of every kernel in kernels/cu:
// - Activations are NHWC, fp16 (`__half`) under AMP and fp32 otherwise: kernels that touch
//   activations are templates over the element type T with two `extern "C"` entry points,
//   NAME_f16 and NAME_f32. Values are read into fp32 registers, computed in fp32 and rounded
//   once on store. Statistics, logits, master weights and gradients are fp32.
// - Sizes are `int`. The Rust wrappers check that every buffer has fewer than 2^30 elements
//   and that a grid has fewer than 2^24 threads, so a grid-stride index `i + stride` stays
//   below 2^31 and never overflows; 32-bit indices keep `%` and `/` cheap (64-bit integer
//   division is many times slower on the GPU).
// - Block sizes are multiples of 32 and at most 1024 (the block reductions below rely on it).
// - Reductions run in a fixed order, so results are bitwise repeatable run to run.
#pragma once
#include <cuda_fp16.h>

#define MOCO_FULL_MASK 0xffffffffu

// +inf / -inf without <math.h> macros (NVRTC has no standard library headers).
__device__ __forceinline__ float moco_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float moco_neg_inf() { return __int_as_float(0xff800000); }

// Grid-stride loop bounds over a 1-D grid.
__device__ __forceinline__ int grid_start() { return blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int grid_stride() { return blockDim.x * gridDim.x; }

__device__ __forceinline__ float ld_h(const __half* p, int i) { return __half2float(p[i]); }
__device__ __forceinline__ void st_h(__half* p, int i, float v) { p[i] = __float2half_rn(v); }

// Loads and stores in either activation precision, so one template body serves the fp16
// (AMP) and fp32 instantiation of a kernel: values are always computed in fp32 registers and
// rounded once on store.
__device__ __forceinline__ float ld(const __half* p, int i) { return __half2float(p[i]); }
__device__ __forceinline__ float ld(const float* p, int i) { return p[i]; }
__device__ __forceinline__ void st(__half* p, int i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void st(float* p, int i, float v) { p[i] = v; }

// Sum over the 32 lanes of a warp; every lane gets the result.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(MOCO_FULL_MASK, v, offset);
    }
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(MOCO_FULL_MASK, v, offset));
    }
    return v;
}

// Sum over a 1-D block; every thread gets the result. All threads of the block must call it
// (it synchronises). Safe to call repeatedly in a loop: the first __syncthreads keeps a new
// call from overwriting `partial` while a previous call's broadcast is still being read.
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T partial[32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? partial[lane] : T(0);
        v = warp_sum(v);
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    return partial[0];
}

// Max over a 1-D block (same contract as block_sum).
__device__ float block_max(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? partial[lane] : moco_neg_inf();
        v = warp_max(v);
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    return partial[0];
}
