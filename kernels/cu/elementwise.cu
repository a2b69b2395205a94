// Elementwise ops on flat buffers (compiled, not yet run on a GPU): ReLU forward/backward,
// the residual add (+ ReLU fused, the end of every bottleneck), and the few fp32 vector ops
// the step needs on gradient buffers. All are memory-bound; one grid-stride loop each.
// The activation kernels exist for fp16 (AMP) and fp32 activations (see common.cuh).
#include "common.cuh"

// x = max(x, 0) in place.
template <typename T>
__device__ __forceinline__ void relu_inplace(int n, T* x) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st(x, i, fmaxf(ld(x, i), 0.0f));
    }
}
extern "C" __global__ void relu_inplace_f16(int n, __half* x) { relu_inplace(n, x); }
extern "C" __global__ void relu_inplace_f32(int n, float* x) { relu_inplace(n, x); }

// dx = dy where y > 0, else 0. y is the ReLU OUTPUT (what the forward keeps), so y > 0 is
// exactly "the input was positive"; at 0 the gradient is 0, as PyTorch's.
template <typename T>
__device__ __forceinline__ void relu_bwd(int n, const T* y, const T* dy, T* dx) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st(dx, i, ld(y, i) > 0.0f ? ld(dy, i) : 0.0f);
    }
}
extern "C" __global__ void relu_bwd_f16(int n, const __half* y, const __half* dy, __half* dx) {
    relu_bwd(n, y, dy, dx);
}
extern "C" __global__ void relu_bwd_f32(int n, const float* y, const float* dy, float* dx) {
    relu_bwd(n, y, dy, dx);
}

// y += x (fp32 add, one rounding).
template <typename T>
__device__ __forceinline__ void add_inplace(int n, const T* x, T* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st(y, i, ld(y, i) + ld(x, i));
    }
}
extern "C" __global__ void add_inplace_f16(int n, const __half* x, __half* y) { add_inplace(n, x, y); }
extern "C" __global__ void add_inplace_f32(int n, const float* x, float* y) { add_inplace(n, x, y); }

// y = max(y + x, 0): the bottleneck's residual add and final ReLU in one pass, so the sum is
// rounded once and the activation is read and written once instead of twice.
template <typename T>
__device__ __forceinline__ void add_relu_inplace(int n, const T* x, T* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st(y, i, fmaxf(ld(y, i) + ld(x, i), 0.0f));
    }
}
extern "C" __global__ void add_relu_inplace_f16(int n, const __half* x, __half* y) {
    add_relu_inplace(n, x, y);
}
extern "C" __global__ void add_relu_inplace_f32(int n, const float* x, float* y) {
    add_relu_inplace(n, x, y);
}

// y = alpha * x + beta * y on fp32 buffers.
extern "C" __global__ void axpby_f32(int n, float alpha, const float* x, float beta, float* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        y[i] = alpha * x[i] + beta * y[i];
    }
}

// y += alpha * x with x fp16 and y fp32: accumulates a freshly computed fp16 gradient (cuDNN /
// cuBLAS output) into the fp32 gradient buffer, so micro-batches and views sum in fp32
// rather than in fp16.
extern "C" __global__ void axpy_f16_to_f32(int n, float alpha, const __half* x, float* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        y[i] += alpha * ld_h(x, i);
    }
}

// x *= alpha in place.
extern "C" __global__ void scale_f32(int n, float alpha, float* x) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        x[i] *= alpha;
    }
}

extern "C" __global__ void fill_f32(int n, float value, float* x) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        x[i] = value;
    }
}

extern "C" __global__ void fill_f16(int n, float value, __half* x) {
    const __half v = __float2half_rn(value);
    for (int i = grid_start(); i < n; i += grid_stride()) {
        x[i] = v;
    }
}
