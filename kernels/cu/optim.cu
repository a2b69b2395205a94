// Optimiser pieces on flat fp32 master buffers (compiled, not yet run on a GPU): EMA of the
// momentum encoder, gradient unscale with the inf/NaN flag, SGD / LARS / AdamW steps, and the
// per-tensor sums of squares LARS needs.
//
// Every kernel that changes master weights can also write their fp16 copy (what cuDNN and
// cuBLAS read) in the same pass, so the weights are read once and there is no separate cast
// launch. The copy pointer may be null: then only the fp32 master is written (the `Backend`
// op set, which refreshes the copy with a separate `copy`, and fp32 training).
//
// The steps take `skip`, a device float (may be null): when it is non-zero the step does nothing.
// Pointing it at the (all-reduced) inf/NaN flag lets a step with overflowed gradients be
// skipped without the host reading the flag first, so the step needs no host synchronisation.
#include "common.cuh"

// Flags are fp32 (0 or 1), as PyTorch's found_inf is: they share buffers and collectives with
// the step's other scalars (the loss terms), and one read brings all of them to the host.
__device__ __forceinline__ bool skipped(const float* skip) { return skip != nullptr && *skip != 0.0f; }

// theta_k = m * theta_k + (1 - m) * theta_q, and theta_k16 = fp16(theta_k) (theta_k16 may be null).
extern "C" __global__ void ema_f32(int n, float m, const float* theta_q, float* theta_k,
                                   __half* theta_k16) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        const float v = m * theta_k[i] + (1.0f - m) * theta_q[i];
        theta_k[i] = v;
        if (theta_k16) st_h(theta_k16, i, v);
    }
}

// g *= inv_scale; sets *found_inf = 1.0f if any element is inf or NaN before or after scaling.
// The host zeroes found_inf before the first unscale of a step; every bucket's unscale then
// ORs into the same flag, which is all-reduced (max) across ranks for one verdict.
extern "C" __global__ void unscale_check_f32(int n, float inv_scale, float* g, float* found_inf) {
    bool bad = false;
    for (int i = grid_start(); i < n; i += grid_stride()) {
        const float before = g[i];
        const float after = before * inv_scale;
        bad |= !isfinite(before) || !isfinite(after);
        g[i] = after;
    }
    // One store per warp that saw a bad value, not one per element; every writer stores the same
    // 1.0f, so the race between warps is benign (PyTorch's unscale kernel does the same).
    if (__any_sync(MOCO_FULL_MASK, bad) && (threadIdx.x & 31) == 0) *found_inf = 1.0f;
}

// PyTorch SGD: d = g + wd * p; mu = momentum * mu + d; p -= lr * mu.
extern "C" __global__ void sgd_step_f32(int n, float lr, float momentum, float wd,
                                        const float* skip, float* p, const float* g, float* mu,
                                        __half* p16) {
    if (skipped(skip)) return;
    for (int i = grid_start(); i < n; i += grid_stride()) {
        const float d = g[i] + wd * p[i];
        const float u = momentum * mu[i] + d;
        const float w = p[i] - lr * u;
        mu[i] = u;
        p[i] = w;
        if (p16) st_h(p16, i, w);
    }
}

// ---- per-tensor segments ----
// A flat buffer holds many tensors; seg_start[n_seg + 1] cuts it: tensor s is elements
// [seg_start[s], seg_start[s + 1]). Tensors range from 64 to 8.4 M elements, so each gets
// blocks in proportion to its size: tensor s owns blocks [block_start[s], block_start[s + 1])
// of a 1-D grid, each block `chunk` elements of it. Both tables are built and validated on the
// host once (kernels/src/cuda/optim.rs, `Segments`); one launch then covers every tensor, and
// the split depends only on the tensor sizes, never on the card.

// The segment that owns block b: the largest s with block_start[s] <= b (empty tensors own no
// block, so ties resolve to the non-empty one after them). Every thread of the block finds the
// same s from the same cached loads; no shared memory or barrier is needed.
__device__ __forceinline__ int segment_of_block(int n_seg, const int* block_start, int b) {
    int lo = 0;
    int hi = n_seg - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (block_start[mid] <= b) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// The element range [begin, end) of block b within its segment seg.
__device__ __forceinline__ void block_range(const int* seg_start, const int* block_start,
                                            int chunk, int seg, int b, int* begin, int* end) {
    const int seg_end = seg_start[seg + 1];
    *begin = seg_start[seg] + (b - block_start[seg]) * chunk;
    *end = min(seg_end, *begin + chunk);
}

// Level 1 of the per-tensor sums of squares of (y + alpha * x) (x may be null: sum of y^2).
// With x = p, y = g, alpha = wd this is |g + wd p|^2, LARS's update norm; with x null and
// y = p it is |p|^2. One partial per block, in double so the sum of millions of squares keeps
// full fp32 precision. Grid: block_start[n_seg] blocks.
extern "C" __global__ void sumsq_segments_partial_f32(int n_seg, const int* seg_start,
                                                      const int* block_start, int chunk,
                                                      float alpha, const float* x,
                                                      const float* y, double* partial) {
    const int b = blockIdx.x;
    const int seg = segment_of_block(n_seg, block_start, b);
    int begin, end;
    block_range(seg_start, block_start, chunk, seg, b, &begin, &end);
    double acc = 0.0;
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float v = x ? y[i] + alpha * x[i] : y[i];
        acc += (double)v * (double)v;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[b] = acc;
}

// Level 2: sumsq[s] = the sum of segment s's block partials, in block order (0 for an empty
// tensor).
extern "C" __global__ void sumsq_segments_finalize(int n_seg, const int* block_start,
                                                   const double* partial, double* sumsq) {
    for (int s = grid_start(); s < n_seg; s += grid_stride()) {
        double acc = 0.0;
        for (int b = block_start[s]; b < block_start[s + 1]; ++b) acc += partial[b];
        sumsq[s] = acc;
    }
}

// LARS trust ratio per tensor from the squared norms: trust = eta |p| / |g + wd p| when the
// tensor adapts and both norms are positive, else 1 (MoCo v3's rule; 1-D tensors such as BN
// gammas/betas have adapt = 0: no weight decay and no adaptation).
extern "C" __global__ void lars_trust(int n_seg, float eta, const int* adapt,
                                      const double* p_sumsq, const double* d_sumsq,
                                      float* trust) {
    for (int s = grid_start(); s < n_seg; s += grid_stride()) {
        const double pn = sqrt(p_sumsq[s]);
        const double dn = sqrt(d_sumsq[s]);
        trust[s] = (adapt[s] != 0 && pn > 0.0 && dn > 0.0) ? (float)(eta * pn / dn) : 1.0f;
    }
}

// LARS step: d = adapt ? (g + wd p) * trust[seg] : g; mu = momentum mu + d; p -= lr mu.
// trust comes from lars_trust, on the device: no host round trip. Grid: block_start[n_seg].
extern "C" __global__ void lars_step_f32(int n_seg, const int* seg_start, const int* block_start,
                                        int chunk, const int* adapt, const float* trust,
                                        float lr, float momentum, float wd, const float* skip,
                                        float* p, const float* g, float* mu, __half* p16) {
    if (skipped(skip)) return;
    const int b = blockIdx.x;
    const int seg = segment_of_block(n_seg, block_start, b);
    int begin, end;
    block_range(seg_start, block_start, chunk, seg, b, &begin, &end);
    const bool adapts = adapt[seg] != 0;
    const float t = trust[seg];
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float d = adapts ? (g[i] + wd * p[i]) * t : g[i];
        const float u = momentum * mu[i] + d;
        const float w = p[i] - lr * u;
        mu[i] = u;
        p[i] = w;
        if (p16) st_h(p16, i, w);
    }
}

// PyTorch AdamW: p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= lr / bias_c1 * m / (sqrt(v) / sqrt(bias_c2) + eps), with bias_cK = 1 - betaK^step
// computed on the host in double (1-based step).
extern "C" __global__ void adamw_step_f32(int n, float lr, float beta1, float beta2, float eps,
                                          float wd, float bias_c1, float bias_c2,
                                          const float* skip, float* p, const float* g, float* m,
                                          float* v, __half* p16) {
    if (skipped(skip)) return;
    const float step_size = lr / bias_c1;
    const float inv_sqrt_bc2 = rsqrtf(bias_c2);
    for (int i = grid_start(); i < n; i += grid_stride()) {
        const float gi = g[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        const float denom = sqrtf(vi) * inv_sqrt_bc2 + eps;
        const float w = p[i] * (1.0f - lr * wd) - step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
        p[i] = w;
        if (p16) st_h(p16, i, w);
    }
}

// The LARS step of ONE tensor with its trust ratio computed on the host (the `Backend`
// op set's lars_step): d = (g + wd p) * trust; mu = momentum mu + d; p -= lr mu. Excluded 1-D
// tensors pass trust = 1 and wd = 0. p16 may be null; a non-zero skip makes it a no-op.
extern "C" __global__ void lars_step_scalar_f32(int n, float lr, float momentum, float wd,
                                                float trust, const float* skip, float* p,
                                                const float* g, float* mu, __half* p16) {
    if (skipped(skip)) return;
    for (int i = grid_start(); i < n; i += grid_stride()) {
        const float d = (g[i] + wd * p[i]) * trust;
        const float u = momentum * mu[i] + d;
        const float w = p[i] - lr * u;
        mu[i] = u;
        p[i] = w;
        if (p16) st_h(p16, i, w);
    }
}

// Sum of squares of (y + alpha * x) over one flat range (x may be null: of y), in double:
// block b sums elements [b * chunk, min(n, (b + 1) * chunk)) into partial[b], and the host adds
// the partials in block order. The chunk depends only on n (chosen by the Rust wrapper), so the
// result is the same on every card and every run.
extern "C" __global__ void sumsq_partial_f32(int n, int chunk, float alpha, const float* x,
                                             const float* y, double* partial) {
    const int b = blockIdx.x;
    const int begin = b * chunk;
    const int end = min(n, begin + chunk);
    double acc = 0.0;
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float v = x ? y[i] + alpha * x[i] : y[i];
        acc += (double)v * (double)v;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[b] = acc;
}
