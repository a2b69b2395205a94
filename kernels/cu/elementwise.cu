// Elementwise ops on flat buffers (compiled, not yet run on a GPU): ReLU forward/backward,
// the residual add (+ ReLU fused, the end of every bottleneck), and the few fp32 vector ops
// the step needs on gradient buffers. All are memory-bound; one grid-stride loop each.
#include "common.cuh"

// x = max(x, 0) in place.
extern "C" __global__ void relu_inplace_f16(int n, __half* x) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st_h(x, i, fmaxf(ld_h(x, i), 0.0f));
    }
}

// dx = dy where y > 0, else 0. y is the ReLU OUTPUT (what the forward keeps), so y > 0 is
// exactly "the input was positive"; at 0 the gradient is 0, as PyTorch's.
extern "C" __global__ void relu_bwd_f16(int n, const __half* y, const __half* dy, __half* dx) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st_h(dx, i, ld_h(y, i) > 0.0f ? ld_h(dy, i) : 0.0f);
    }
}

// y += x (fp32 add, one rounding).
extern "C" __global__ void add_inplace_f16(int n, const __half* x, __half* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st_h(y, i, ld_h(y, i) + ld_h(x, i));
    }
}

// y = max(y + x, 0): the bottleneck's residual add and final ReLU in one pass, so the sum is
// rounded to fp16 once and the activation is read and written once instead of twice.
extern "C" __global__ void add_relu_inplace_f16(int n, const __half* x, __half* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st_h(y, i, fmaxf(ld_h(y, i) + ld_h(x, i), 0.0f));
    }
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
