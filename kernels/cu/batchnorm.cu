// Batch norm over NHWC rows: x is [m, c] activations (m = n*h*w; fp16 under AMP, else fp32),
// statistics and parameters fp32. Compiled, not yet run on a GPU.
//
// Statistics and backward sums use a two-level reduction so they are deterministic and need
// no atomics:
//   level 1 (`*_partial`): grid (ceil(c / 32), chunks), block (32, 8). Block (t, k) owns the 32
//     channels of tile t and the rows [k*rows_per_chunk, (k+1)*rows_per_chunk). threadIdx.x is
//     the channel, so a warp reads 32 consecutive channels of one row (contiguous in NHWC);
//     threadIdx.y strides over the rows. Each block writes one partial per channel.
//   level 2 (`*_finalize`): one thread per channel combines the chunks' partials in order.
// The chunk count depends only on (m, c) (chosen by the Rust wrapper), never on the card, so
// every GPU computes the same sums in the same order.
#include "common.cuh"

#define BN_TILE_C 32  // channels per block: blockDim.x
#define BN_ROWS 8     // row lanes per block: blockDim.y

// Welford running state: count, mean, sum of squared deviations (M2).
struct Welford {
    float n;
    float mean;
    float m2;
};

__device__ __forceinline__ void welford_push(Welford& w, float x) {
    w.n += 1.0f;
    const float d = x - w.mean;
    w.mean += d / w.n;
    w.m2 += d * (x - w.mean);
}

// Chan et al.'s parallel merge: exact for any split of the rows, and never subtracts two
// large sums (the catastrophic cancellation of E[x^2] - E[x]^2 that a one-pass sum suffers
// when |mean| >> std).
__device__ __forceinline__ Welford welford_merge(Welford a, Welford b) {
    const float n = a.n + b.n;
    if (n == 0.0f) return a;
    const float d = b.mean - a.mean;
    const float fb = b.n / n;
    Welford r;
    r.n = n;
    r.mean = a.mean + d * fb;
    r.m2 = a.m2 + b.m2 + d * d * a.n * fb;
    return r;
}

// Level 1 of the statistics: per (chunk, channel) Welford mean and M2.
// part_mean / part_m2: [chunks, c].
template <typename T>
__device__ __forceinline__ void bn_stats_partial(int m, int c, int rows_per_chunk, const T* x,
                                                 float* part_mean, float* part_m2) {
    __shared__ Welford lanes[BN_ROWS][BN_TILE_C];
    const int ch = blockIdx.x * BN_TILE_C + threadIdx.x;
    const int chunk = blockIdx.y;
    const int row_begin = chunk * rows_per_chunk;
    const int row_end = min(m, row_begin + rows_per_chunk);

    Welford w = {0.0f, 0.0f, 0.0f};
    if (ch < c) {
        for (int r = row_begin + threadIdx.y; r < row_end; r += BN_ROWS) {
            welford_push(w, ld(x, r * c + ch));
        }
    }
    lanes[threadIdx.y][threadIdx.x] = w;
    __syncthreads();
    // Row lane 0 merges the 8 lanes in a fixed order.
    if (threadIdx.y == 0 && ch < c) {
        Welford acc = lanes[0][threadIdx.x];
        for (int k = 1; k < BN_ROWS; ++k) acc = welford_merge(acc, lanes[k][threadIdx.x]);
        part_mean[chunk * c + ch] = acc.mean;
        part_m2[chunk * c + ch] = acc.m2;
    }
}
extern "C" __global__ void __launch_bounds__(BN_TILE_C * BN_ROWS)
bn_stats_partial_f16(int m, int c, int rows_per_chunk, const __half* x, float* part_mean,
                     float* part_m2) {
    bn_stats_partial(m, c, rows_per_chunk, x, part_mean, part_m2);
}
extern "C" __global__ void __launch_bounds__(BN_TILE_C * BN_ROWS)
bn_stats_partial_f32(int m, int c, int rows_per_chunk, const float* x, float* part_mean,
                     float* part_m2) {
    bn_stats_partial(m, c, rows_per_chunk, x, part_mean, part_m2);
}

// Level 2: merge the chunks of each channel in order; var is the biased variance (M2 / m),
// as the forward normalisation uses. The counts are recomputed from m and rows_per_chunk
// rather than stored.
extern "C" __global__ void bn_stats_finalize(int m, int c, int rows_per_chunk, int chunks,
                                             const float* part_mean, const float* part_m2,
                                             float* mean, float* var) {
    for (int ch = grid_start(); ch < c; ch += grid_stride()) {
        Welford acc = {0.0f, 0.0f, 0.0f};
        for (int k = 0; k < chunks; ++k) {
            const int rows = min(rows_per_chunk, m - k * rows_per_chunk);
            if (rows <= 0) break;
            Welford part = {(float)rows, part_mean[k * c + ch], part_m2[k * c + ch]};
            acc = welford_merge(acc, part);
        }
        mean[ch] = acc.mean;
        var[ch] = acc.n > 0.0f ? acc.m2 / acc.n : 0.0f;
    }
}

// y = (x - mean) * rsqrt(var + eps) * gamma + beta, then max(y, 0) if relu != 0.
// gamma / beta may be null: affine-free BN (gamma 1, beta 0), e.g. the projector's last BN.
template <typename T>
__device__ __forceinline__ void bn_apply(int m, int c, const T* x, const float* mean,
                                         const float* var, float eps, const float* gamma,
                                         const float* beta, int relu, T* y) {
    const int total = m * c;
    for (int i = grid_start(); i < total; i += grid_stride()) {
        const int ch = i % c;
        const float scale = rsqrtf(var[ch] + eps) * (gamma ? gamma[ch] : 1.0f);
        float v = (ld(x, i) - mean[ch]) * scale + (beta ? beta[ch] : 0.0f);
        if (relu) v = fmaxf(v, 0.0f);
        st(y, i, v);
    }
}
extern "C" __global__ void bn_apply_f16(int m, int c, const __half* x, const float* mean,
                                        const float* var, float eps, const float* gamma,
                                        const float* beta, int relu, __half* y) {
    bn_apply(m, c, x, mean, var, eps, gamma, beta, relu, y);
}
extern "C" __global__ void bn_apply_f32(int m, int c, const float* x, const float* mean,
                                        const float* var, float eps, const float* gamma,
                                        const float* beta, int relu, float* y) {
    bn_apply(m, c, x, mean, var, eps, gamma, beta, relu, y);
}

// Level 1 of the backward sums: per (chunk, channel) sum(dy) and sum(dy * (x - mean)).
// The invstd factor of xhat is applied once in the finalize, not per element.
template <typename T>
__device__ __forceinline__ void bn_bwd_reduce_partial(int m, int c, int rows_per_chunk,
                                                      const T* x, const T* dy,
                                                      const float* mean, float* part_sum_dy,
                                                      float* part_sum_dy_xc) {
    __shared__ float lane_dy[BN_ROWS][BN_TILE_C];
    __shared__ float lane_dy_xc[BN_ROWS][BN_TILE_C];
    const int ch = blockIdx.x * BN_TILE_C + threadIdx.x;
    const int chunk = blockIdx.y;
    const int row_begin = chunk * rows_per_chunk;
    const int row_end = min(m, row_begin + rows_per_chunk);

    float s_dy = 0.0f;
    float s_dy_xc = 0.0f;
    if (ch < c) {
        const float mu = mean[ch];
        for (int r = row_begin + threadIdx.y; r < row_end; r += BN_ROWS) {
            const float g = ld(dy, r * c + ch);
            s_dy += g;
            s_dy_xc += g * (ld(x, r * c + ch) - mu);
        }
    }
    lane_dy[threadIdx.y][threadIdx.x] = s_dy;
    lane_dy_xc[threadIdx.y][threadIdx.x] = s_dy_xc;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        float a = 0.0f;
        float b = 0.0f;
        for (int k = 0; k < BN_ROWS; ++k) {
            a += lane_dy[k][threadIdx.x];
            b += lane_dy_xc[k][threadIdx.x];
        }
        part_sum_dy[chunk * c + ch] = a;
        part_sum_dy_xc[chunk * c + ch] = b;
    }
}
extern "C" __global__ void __launch_bounds__(BN_TILE_C * BN_ROWS)
bn_bwd_reduce_partial_f16(int m, int c, int rows_per_chunk, const __half* x, const __half* dy,
                          const float* mean, float* part_sum_dy, float* part_sum_dy_xc) {
    bn_bwd_reduce_partial(m, c, rows_per_chunk, x, dy, mean, part_sum_dy, part_sum_dy_xc);
}
extern "C" __global__ void __launch_bounds__(BN_TILE_C * BN_ROWS)
bn_bwd_reduce_partial_f32(int m, int c, int rows_per_chunk, const float* x, const float* dy,
                          const float* mean, float* part_sum_dy, float* part_sum_dy_xc) {
    bn_bwd_reduce_partial(m, c, rows_per_chunk, x, dy, mean, part_sum_dy, part_sum_dy_xc);
}

// Level 2: sum_dy = sum(dy) (= dbeta), sum_dy_xhat = invstd * sum(dy * (x - mean)) (= dgamma).
// Overwrites both outputs (under SyncBN the caller all-reduces them before bn_bwd_apply).
extern "C" __global__ void bn_bwd_reduce_finalize(int c, int chunks, const float* part_sum_dy,
                                                  const float* part_sum_dy_xc, const float* var,
                                                  float eps, float* sum_dy, float* sum_dy_xhat) {
    for (int ch = grid_start(); ch < c; ch += grid_stride()) {
        float a = 0.0f;
        float b = 0.0f;
        for (int k = 0; k < chunks; ++k) {
            a += part_sum_dy[k * c + ch];
            b += part_sum_dy_xc[k * c + ch];
        }
        sum_dy[ch] = a;
        sum_dy_xhat[ch] = b * rsqrtf(var[ch] + eps);
    }
}

// dx = gamma * invstd * (dy - sum_dy / count - xhat * sum_dy_xhat / count). `count` is the
// number of rows the statistics covered (all ranks' rows under SyncBN), not necessarily m.
// gamma may be null (affine-free BN).
template <typename T>
__device__ __forceinline__ void bn_bwd_apply(int m, int c, int count, const T* x, const T* dy,
                                             const float* mean, const float* var, float eps,
                                             const float* gamma, const float* sum_dy,
                                             const float* sum_dy_xhat, T* dx) {
    const int total = m * c;
    const float inv_count = 1.0f / (float)count;
    for (int i = grid_start(); i < total; i += grid_stride()) {
        const int ch = i % c;
        const float invstd = rsqrtf(var[ch] + eps);
        const float xhat = (ld(x, i) - mean[ch]) * invstd;
        const float g = gamma ? gamma[ch] : 1.0f;
        const float v = g * invstd *
                        (ld(dy, i) - sum_dy[ch] * inv_count - xhat * sum_dy_xhat[ch] * inv_count);
        st(dx, i, v);
    }
}
extern "C" __global__ void bn_bwd_apply_f16(int m, int c, int count, const __half* x,
                                            const __half* dy, const float* mean,
                                            const float* var, float eps, const float* gamma,
                                            const float* sum_dy, const float* sum_dy_xhat,
                                            __half* dx) {
    bn_bwd_apply(m, c, count, x, dy, mean, var, eps, gamma, sum_dy, sum_dy_xhat, dx);
}
extern "C" __global__ void bn_bwd_apply_f32(int m, int c, int count, const float* x,
                                            const float* dy, const float* mean, const float* var,
                                            float eps, const float* gamma, const float* sum_dy,
                                            const float* sum_dy_xhat, float* dx) {
    bn_bwd_apply(m, c, count, x, dy, mean, var, eps, gamma, sum_dy, sum_dy_xhat, dx);
}

// running = (1 - momentum) * running + momentum * batch statistic, the variance made unbiased
// (var * count / (count - 1)) as PyTorch does. running is [2c]: means, then variances.
extern "C" __global__ void bn_running_update(int c, const float* mean, const float* var,
                                             int count, float momentum, float* running) {
    const float unbias = count > 1 ? (float)count / (float)(count - 1) : 1.0f;
    for (int ch = grid_start(); ch < c; ch += grid_stride()) {
        running[ch] = (1.0f - momentum) * running[ch] + momentum * mean[ch];
        running[c + ch] = (1.0f - momentum) * running[c + ch] + momentum * var[ch] * unbias;
    }
}

// SplitBatchNorm's running-statistics input (shuffle BN on the key side): y[ch] = the average
// over the g groups of x[k, ch], x = [g, c], accumulated in group order as x / g, exactly as the
// CPU reference does, so the groups' statistics never leave the device.
extern "C" __global__ void bn_group_mean(int groups, int c, const float* x, float* y) {
    const float g = (float)groups;
    for (int ch = grid_start(); ch < c; ch += grid_stride()) {
        float acc = 0.0f;
        for (int k = 0; k < groups; ++k) acc += x[k * c + ch] / g;
        y[ch] = acc;
    }
}

// SyncBN without a host round trip: packed [2c] = [mean, var + mean^2], summed over ranks by the
// device collective, then unpacked into the global moments. The _rn intrinsics keep the
// compiler from fusing a multiply-add, so the values are the CPU reference's bit for bit.
extern "C" __global__ void bn_moments_pack(int c, const float* mean, const float* var, float* packed) {
    for (int ch = grid_start(); ch < c; ch += grid_stride()) {
        const float m = mean[ch];
        packed[ch] = m;
        packed[c + ch] = __fadd_rn(var[ch], __fmul_rn(m, m));
    }
}

// mean = s / world, var = max(s2 / world - mean^2, 0); fmaxf turns a NaN difference into 0 as
// the reference's f32::max does.
extern "C" __global__ void bn_moments_unpack(int c, int world, const float* packed, float* mean,
                                             float* var) {
    const float w = (float)world;
    for (int ch = grid_start(); ch < c; ch += grid_stride()) {
        const float m = __fdiv_rn(packed[ch], w);
        mean[ch] = m;
        var[ch] = fmaxf(__fsub_rn(__fdiv_rn(packed[c + ch], w), __fmul_rn(m, m)), 0.0f);
    }
}
