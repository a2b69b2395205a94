// L2 normalisation over the rows of [n, d] activations (queries and keys, d = 256; fp16 or
// fp32), forward and backward. Compiled, not yet run on a GPU.
//
// One block per row (grid-stride over rows by block), so the row's reduction is a block
// reduction in fp32 with a fixed order. n is the batch (tens to hundreds of rows), d is small:
// a 256-thread block reads the row once for the sum and once for the scaling (L1-resident).
#include "common.cuh"

// y = x / max(|x|, 1e-12) (F.normalize); norm[row] keeps max(|x|, 1e-12) for the backward.
template <typename T>
__device__ __forceinline__ void l2norm_fwd(int n, int d, const T* x, T* y, float* norm) {
    for (int row = blockIdx.x; row < n; row += gridDim.x) {
        const T* xr = x + row * d;
        float ss = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            const float v = ld(xr, j);
            ss += v * v;
        }
        ss = block_sum(ss);
        const float nrm = fmaxf(sqrtf(ss), 1e-12f);
        const float inv = 1.0f / nrm;
        for (int j = threadIdx.x; j < d; j += blockDim.x) st(y + row * d, j, ld(xr, j) * inv);
        if (threadIdx.x == 0) norm[row] = nrm;
    }
}
extern "C" __global__ void l2norm_fwd_f16(int n, int d, const __half* x, __half* y, float* norm) {
    l2norm_fwd(n, d, x, y, norm);
}
extern "C" __global__ void l2norm_fwd_f32(int n, int d, const float* x, float* y, float* norm) {
    l2norm_fwd(n, d, x, y, norm);
}

// dx = (dy - y * <y, dy>) / norm, the Jacobian of x / |x| applied to dy, written with the
// forward's output y so x need not be kept.
template <typename T>
__device__ __forceinline__ void l2norm_bwd(int n, int d, const T* y, const float* norm,
                                           const T* dy, T* dx) {
    for (int row = blockIdx.x; row < n; row += gridDim.x) {
        const T* yr = y + row * d;
        const T* dyr = dy + row * d;
        float dot = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) dot += ld(yr, j) * ld(dyr, j);
        dot = block_sum(dot);
        const float inv = 1.0f / norm[row];
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            st(dx + row * d, j, (ld(dyr, j) - ld(yr, j) * dot) * inv);
        }
    }
}
extern "C" __global__ void l2norm_bwd_f16(int n, int d, const __half* y, const float* norm,
                                          const __half* dy, __half* dx) {
    l2norm_bwd(n, d, y, norm, dy, dx);
}
extern "C" __global__ void l2norm_bwd_f32(int n, int d, const float* y, const float* norm,
                                          const float* dy, float* dx) {
    l2norm_bwd(n, d, y, norm, dy, dx);
}
