// Pooling on NHWC activations, fp16 or fp32 (compiled, not yet run on a GPU): the stem's 3x3/2 pad 1 max pool and
// the global average pool before the projector, forward and backward.
//
// One thread per output element with the channel fastest, so a warp touches 32 consecutive
// channels (contiguous in NHWC) at every step.
#include "common.cuh"

#define POOL_K 3
#define POOL_STRIDE 2
#define POOL_PAD 1

// Row-major scan of window (oy, ox) for channel ch of image img: the index (into x) of the
// FIRST maximal element, with the CPU reference's tie rule (ky outer, kx inner, strict `>`).
// Padding never wins: out-of-range taps are skipped, and the running best starts at the first
// in-range tap (every window has one since PAD < K), so even an all -inf window has an argmax.
template <typename T>
__device__ __forceinline__ int window_argmax(const T* x, int h, int w, int c, int img,
                                             int oy, int ox, int ch) {
    int best_i = -1;
    float best = 0.0f;
    for (int ky = 0; ky < POOL_K; ++ky) {
        const int iy = oy * POOL_STRIDE - POOL_PAD + ky;
        if (iy < 0 || iy >= h) continue;
        for (int kx = 0; kx < POOL_K; ++kx) {
            const int ix = ox * POOL_STRIDE - POOL_PAD + kx;
            if (ix < 0 || ix >= w) continue;
            const int i = ((img * h + iy) * w + ix) * c + ch;
            const float v = ld(x, i);
            if (best_i < 0 || v > best) {
                best = v;
                best_i = i;
            }
        }
    }
    return best_i;
}

// y[n, oy, ox, ch] = max of the 3x3 window. x [n, h, w, c], y [n, oh, ow, c].
template <typename T>
__device__ __forceinline__ void maxpool_fwd(int n, int h, int w, int c, int oh, int ow,
                                            const T* x, T* y) {
    const int total = n * oh * ow * c;
    for (int o = grid_start(); o < total; o += grid_stride()) {
        const int ch = o % c;
        const int ox = (o / c) % ow;
        const int oy = (o / (c * ow)) % oh;
        const int img = o / (c * ow * oh);
        y[o] = x[window_argmax(x, h, w, c, img, oy, ox, ch)];
    }
}
extern "C" __global__ void maxpool3x3s2_fwd_f16(int n, int h, int w, int c, int oh, int ow,
                                                const __half* x, __half* y) {
    maxpool_fwd(n, h, w, c, oh, ow, x, y);
}
extern "C" __global__ void maxpool3x3s2_fwd_f32(int n, int h, int w, int c, int oh, int ow,
                                                const float* x, float* y) {
    maxpool_fwd(n, h, w, c, oh, ow, x, y);
}

// dx[i] = sum of dy over the windows whose first maximum is i; dx is overwritten.
// Gather form: one thread per INPUT element recomputes the argmax of each of the (at most
// 2x2) windows that contain it. No atomics, so the result is deterministic and every dx is
// written exactly once (zeros included), at the cost of re-reading x (L1/L2-resident).
template <typename T>
__device__ __forceinline__ void maxpool_bwd(int n, int h, int w, int c, int oh, int ow,
                                            const T* x, const T* dy, T* dx) {
    const int total = n * h * w * c;
    for (int i = grid_start(); i < total; i += grid_stride()) {
        const int ch = i % c;
        const int ix = (i / c) % w;
        const int iy = (i / (c * w)) % h;
        const int img = i / (c * w * h);
        // Windows containing iy: oy*2 - 1 <= iy <= oy*2 + 1, i.e. oy in [ceil((iy-1)/2), (iy+1)/2].
        const int oy_lo = max(0, (iy - POOL_K + POOL_PAD + POOL_STRIDE) / POOL_STRIDE);
        const int oy_hi = min(oh - 1, (iy + POOL_PAD) / POOL_STRIDE);
        const int ox_lo = max(0, (ix - POOL_K + POOL_PAD + POOL_STRIDE) / POOL_STRIDE);
        const int ox_hi = min(ow - 1, (ix + POOL_PAD) / POOL_STRIDE);
        float acc = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; ++oy) {
            for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                if (window_argmax(x, h, w, c, img, oy, ox, ch) == i) {
                    acc += ld(dy, ((img * oh + oy) * ow + ox) * c + ch);
                }
            }
        }
        st(dx, i, acc);
    }
}
extern "C" __global__ void maxpool3x3s2_bwd_f16(int n, int h, int w, int c, int oh, int ow,
                                                const __half* x, const __half* dy, __half* dx) {
    maxpool_bwd(n, h, w, c, oh, ow, x, dy, dx);
}
extern "C" __global__ void maxpool3x3s2_bwd_f32(int n, int h, int w, int c, int oh, int ow,
                                                const float* x, const float* dy, float* dx) {
    maxpool_bwd(n, h, w, c, oh, ow, x, dy, dx);
}

// y[img, ch] = mean over the hw positions of x[img, hw, ch]. One thread per (img, ch); the
// hw loop runs in order in fp32 (hw is 49 for ResNet-50 at 224).
template <typename T>
__device__ __forceinline__ void avgpool_fwd(int n, int hw, int c, const T* x, T* y) {
    const int total = n * c;
    const float inv_hw = 1.0f / (float)hw;
    for (int o = grid_start(); o < total; o += grid_stride()) {
        const int ch = o % c;
        const int img = o / c;
        float acc = 0.0f;
        for (int p = 0; p < hw; ++p) acc += ld(x, (img * hw + p) * c + ch);
        st(y, o, acc * inv_hw);
    }
}
extern "C" __global__ void avgpool_fwd_f16(int n, int hw, int c, const __half* x, __half* y) {
    avgpool_fwd(n, hw, c, x, y);
}
extern "C" __global__ void avgpool_fwd_f32(int n, int hw, int c, const float* x, float* y) {
    avgpool_fwd(n, hw, c, x, y);
}

// dx[img, p, ch] = dy[img, ch] / hw for every position p; dx is overwritten.
template <typename T>
__device__ __forceinline__ void avgpool_bwd(int n, int hw, int c, const T* dy, T* dx) {
    const int total = n * hw * c;
    const float inv_hw = 1.0f / (float)hw;
    for (int i = grid_start(); i < total; i += grid_stride()) {
        const int ch = i % c;
        const int img = i / (hw * c);
        st(dx, i, ld(dy, img * c + ch) * inv_hw);
    }
}
extern "C" __global__ void avgpool_bwd_f16(int n, int hw, int c, const __half* dy, __half* dx) {
    avgpool_bwd(n, hw, c, dy, dx);
}
extern "C" __global__ void avgpool_bwd_f32(int n, int hw, int c, const float* dy, float* dx) {
    avgpool_bwd(n, hw, c, dy, dx);
}
