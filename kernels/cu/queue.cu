// The MoCo negative queue's fused pointer-advance enqueue (compiled, not yet run on a GPU).
//
// Each rank owns a shard of the queue: `rows` keys of `dim` fp16 values, the dataset index of
// each row (int32, -1 for the random initial keys), and a write pointer kept in DEVICE memory.
// One launch writes this step's b keys at rows [ptr, ptr + b) and advances the pointer to
// (ptr + b) % rows, with no host round trip: the pointer never leaves the GPU, so the host
// cannot desynchronise it (moco#97) and the step needs no synchronisation.
//
// Writes never wrap inside one batch, which holds because rows % b == 0 and ptr is always a
// multiple of b. Config validation checks divisibility before training starts; the kernel
// re-checks and, instead of writing out of bounds or corrupting the queue (the failure the
// seeds describe), writes nothing and sets *error:
//   1  b <= 0 or rows % b != 0
//   2  *ptr is out of range or not a multiple of b (a corrupted pointer)
//   3  launched with more than one block (the pointer update below needs a single block)
#include "common.cuh"

#define QUEUE_ERR_DIVISIBILITY 1
#define QUEUE_ERR_POINTER 2
#define QUEUE_ERR_LAUNCH 3

// Launch with ONE block (block-stride loop). Every thread must read the old pointer before it
// is advanced; within one block a __syncthreads orders that, whereas across blocks there is
// no ordering without a grid-wide barrier. One block moves the ~100-200 KB of a step's keys in
// microseconds, far below anything else in the step.
extern "C" __global__ void queue_enqueue_f16(int rows, int dim, int b, const __half* keys,
                                             const int* key_idx, __half* queue, int* queue_idx,
                                             int* ptr, int* error) {
    if (gridDim.x != 1) {
        if (blockIdx.x == 0 && threadIdx.x == 0) *error = QUEUE_ERR_LAUNCH;
        return;
    }
    __shared__ int start;
    if (threadIdx.x == 0) {
        const int p = *ptr;
        if (b <= 0 || rows % b != 0) {
            *error = QUEUE_ERR_DIVISIBILITY;
            start = -1;
        } else if (p < 0 || p >= rows || p % b != 0) {
            *error = QUEUE_ERR_POINTER;
            start = -1;
        } else {
            start = p;
        }
    }
    __syncthreads();
    if (start < 0) return;

    // Rows [start, start + b) are contiguous in the [rows, dim] layout: one flat copy.
    const int n = b * dim;
    __half* dst = queue + start * dim;
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = keys[i];
    for (int i = threadIdx.x; i < b; i += blockDim.x) queue_idx[start + i] = key_idx[i];

    // Everyone has read `start` (from shared memory, long ago) and no thread reads *ptr again,
    // so thread 0 may advance it now; the launch boundary publishes it to the next kernel.
    if (threadIdx.x == 0) *ptr = (start + b) % rows;
}
