// Softmax cross-entropy pieces over fp32 logits [rows, cols] (compiled, not yet run on a GPU).
//
// The MoCo loss is a log-sum-exp over columns split across ranks (the batch-key block and each
// rank's queue shard), so these kernels produce per-row (max, sum-exp) pairs that the caller
// combines across blocks and ranks, and the backward takes the combined lse back.
// Masked cells hold -inf and contribute nothing: exp(-inf) = 0 in the sums, 0 in the gradient.
#include "common.cuh"

// Online (max, sum) pair: sum = sum of exp(l - max) over the elements seen so far.
struct MaxSum {
    float max;
    float sum;
};

// Merge two partial pairs. A pair whose max is -inf has seen only masked cells (sum 0).
__device__ __forceinline__ MaxSum maxsum_merge(MaxSum a, MaxSum b) {
    const float m = fmaxf(a.max, b.max);
    if (m == moco_neg_inf()) return {m, 0.0f};
    return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

// Per row: max over non-masked logits and sum(exp(l - max)). A fully masked row gives
// max = -inf, sum = 0. One block per row; each thread keeps an online pair over its columns
// (one read of the row), then the block merges the pairs in a fixed tree order.
extern "C" __global__ void row_max_sumexp_f32(int rows, int cols, const float* logits,
                                              float* row_max, float* row_sum) {
    __shared__ MaxSum warp_pairs[32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* lr = logits + row * cols;
        MaxSum acc = {moco_neg_inf(), 0.0f};
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float l = lr[j];
            if (l == moco_neg_inf()) continue;
            if (l > acc.max) {
                acc.sum = acc.sum * expf(acc.max - l) + 1.0f;
                acc.max = l;
            } else {
                // Also reached by NaN logits: the sum becomes NaN, which the loss scaler sees.
                acc.sum += expf(l - acc.max);
            }
        }
        for (int offset = 16; offset > 0; offset >>= 1) {
            MaxSum other;
            other.max = __shfl_xor_sync(MOCO_FULL_MASK, acc.max, offset);
            other.sum = __shfl_xor_sync(MOCO_FULL_MASK, acc.sum, offset);
            acc = maxsum_merge(acc, other);
        }
        __syncthreads();  // the previous row's readers are done with warp_pairs
        if (lane == 0) warp_pairs[warp] = acc;
        __syncthreads();
        if (threadIdx.x == 0) {
            MaxSum total = warp_pairs[0];
            for (int k = 1; k < warps; ++k) total = maxsum_merge(total, warp_pairs[k]);
            row_max[row] = total.max;
            row_sum[row] = total.sum;
        }
    }
}

// logits[r, c] = -inf for each of the n_cells (r, c) pairs in cells ([n_cells, 2] ints).
// The cells live in device memory where the host cannot validate them cheaply, so the kernel
// skips out-of-range pairs rather than write outside logits.
extern "C" __global__ void mask_cells_f32(int rows, int cols, int n_cells, const int* cells,
                                          float* logits) {
    for (int k = grid_start(); k < n_cells; k += grid_stride()) {
        const int r = cells[2 * k];
        const int c = cells[2 * k + 1];
        if (r >= 0 && r < rows && c >= 0 && c < cols) logits[r * cols + c] = moco_neg_inf();
    }
}

// Own-image masking without a host round trip: logits[r, c] = -inf where the query's dataset
// index equals the key's (an older key of the very image the query came from must not count
// as a negative), except on the row's positive column pos_offset + r when pos_offset >= 0
// (the batch block's positives are consecutive columns; the queue block has none: -1), so no
// label list needs to cross to the GPU.
// Negative indices mean "unknown" (e.g. the random initial queue) and never match. The
// indices are integer-valued floats, as every buffer of the Backend trait (exact below 2^24):
// row_idx [rows], col_idx [cols] (the queue shard's index array or the step's keys').
extern "C" __global__ void mask_own_image_f32(int rows, int cols, const float* row_idx,
                                              const float* col_idx, int pos_offset,
                                              float* logits) {
    const int total = rows * cols;
    for (int i = grid_start(); i < total; i += grid_stride()) {
        const int r = i / cols;
        const int c = i - r * cols;
        const float q = row_idx[r];
        if (q >= 0.0f && q == col_idx[c] && !(pos_offset >= 0 && c == pos_offset + r)) {
            logits[i] = moco_neg_inf();
        }
    }
}

// dlogits = scale * (exp(l - lse[row]) - onehot(label[row])), written in the activation
// precision (fp16 under AMP) because it feeds the GEMMs of the logits' backward. label -1 = the
// row's positive is not in this block of columns. A masked (-inf) logit gets exactly 0, even on
// the label column. scale carries the loss scale and the loss's 2T / N factor.
template <typename T>
__device__ __forceinline__ void softmax_xent_bwd(int rows, int cols, const float* logits,
                                                 const float* lse, const int* labels,
                                                 float scale, T* dlogits) {
    const int total = rows * cols;
    for (int i = grid_start(); i < total; i += grid_stride()) {
        const int r = i / cols;
        const int c = i - r * cols;
        const float l = logits[i];
        float g = 0.0f;
        if (l != moco_neg_inf()) {
            g = expf(l - lse[r]) - (c == labels[r] ? 1.0f : 0.0f);
        }
        st(dlogits, i, scale * g);
    }
}
extern "C" __global__ void softmax_xent_bwd_f16(int rows, int cols, const float* logits,
                                                const float* lse, const int* labels, float scale,
                                                __half* dlogits) {
    softmax_xent_bwd(rows, cols, logits, lse, labels, scale, dlogits);
}
extern "C" __global__ void softmax_xent_bwd_f32(int rows, int cols, const float* logits,
                                                const float* lse, const int* labels, float scale,
                                                float* dlogits) {
    softmax_xent_bwd(rows, cols, logits, lse, labels, scale, dlogits);
}

// out[r] = logits[r, labels[r]] for rows with a label in [0, cols), else 0 (the positive's
// logit, for the loss value).
extern "C" __global__ void gather_cols_f32(int rows, int cols, const float* logits,
                                           const int* labels, float* out) {
    for (int r = grid_start(); r < rows; r += grid_stride()) {
        const int label = labels[r];
        out[r] = (label >= 0 && label < cols) ? logits[r * cols + label] : 0.0f;
    }
}

// The distributed log-sum-exp: lse[r] over `parts` blocks of columns from each block's per-row
// (max, sum-exp) pair. max and sum are [parts][rows]. A part whose
// max is -inf saw only masked cells and contributes nothing; a row with no part left gives
// -inf. The sum runs in double and in part order (the batch-key block, then the queue shards in
// rank order), as the CPU reference does, so every rank combines the same way.
extern "C" __global__ void lse_combine_f32(int rows, int parts, const float* max, const float* sum,
                                           float* lse) {
    for (int r = grid_start(); r < rows; r += grid_stride()) {
        float mx = moco_neg_inf();
        for (int p = 0; p < parts; ++p) {
            const float m = max[p * rows + r];
            if (m != moco_neg_inf()) mx = fmaxf(mx, m);
        }
        if (mx == moco_neg_inf()) {
            lse[r] = mx;
            continue;
        }
        double s = 0.0;
        for (int p = 0; p < parts; ++p) {
            const float m = max[p * rows + r];
            if (m == moco_neg_inf()) continue;
            s += (double)sum[p * rows + r] * exp((double)(m - mx));
        }
        lse[r] = mx + (float)log(s);
    }
}

// out[0] = ((sum over rows of (lse[r] - pos[r]), in double, in row order) / rows) * factor: one
// term's mean cross-entropy (factor = the loss's 2T), kept on the device until the step's
// metrics are read. One thread does the sum, so its order is the CPU reference's; rows is a
// local batch (a few hundred at most).
extern "C" __global__ void xent_loss_f32(int rows, const float* lse, const float* pos, float factor,
                                         float* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double acc = 0.0;
    for (int r = 0; r < rows; ++r) acc += (double)(lse[r] - pos[r]);
    out[0] = (float)(acc / (double)rows) * factor;
}
