// The MoCo negative queue's fused pointer-advance enqueue (run on the emulated CUDA device
// only; not yet run on a GPU).
//
// Each rank owns a shard of the queue: `rows` keys of `dim` values (fp16 or fp32: the queue's
// precision is a config decision, so there is one entry point per precision), the dataset
// index of each row (-1 for the random initial keys), and a write pointer kept in DEVICE
// memory. One launch writes this step's b keys at rows [ptr, ptr + b) and advances the pointer
// to (ptr + b) % rows, with no host round trip: the pointer never leaves the GPU, so the host
// cannot desynchronise it (moco#97) and the step needs no synchronisation.
//
// The indices, the pointer and the error flag are fp32 values, like every other buffer of the
// `Backend` trait (the error flag is a slot of the step's metrics buffer, read once per step):
// fp32 holds every integer below 2^24 exactly, and the worker refuses dataset indices and
// shard sizes beyond that.
//
// The rows an enqueue overwrites (and the pointer it found) are copied to `saved_*` on the way,
// in the same launch, so a step the loss scaler skips can put them back (the worker's skip
// guard) without the host ever knowing the pointer during the step.
//
// Writes never wrap inside one batch, which holds because rows % b == 0 and ptr is always a
// multiple of b. Config validation checks divisibility before training starts; the kernel
// re-checks and, instead of writing out of bounds or corrupting the queue (the failure the
// seeds describe), writes nothing and sets *error:
//   1  b <= 0 or rows % b != 0
//   2  *ptr is not an integer in [0, rows) that is a multiple of b (a corrupted pointer)
//   3  launched with more than one block (the pointer update below needs a single block)
#include "common.cuh"

#define QUEUE_ERR_DIVISIBILITY 1.0f
#define QUEUE_ERR_POINTER 2.0f
#define QUEUE_ERR_LAUNCH 3.0f

// Launch with ONE block (block-stride loop). Every thread must read the old pointer before it
// is advanced; within one block a __syncthreads orders that, whereas across blocks there is
// no ordering without a grid-wide barrier. One block moves the ~100-200 KB of a step's keys in
// microseconds, far below anything else in the step.
template <typename T>
__device__ __forceinline__ void queue_enqueue(int rows, int dim, int b, const T* keys,
                                              const float* key_idx, T* queue, float* queue_idx,
                                              float* ptr, float* error, T* saved_keys,
                                              float* saved_idx, float* saved_ptr) {
    if (gridDim.x != 1) {
        if (blockIdx.x == 0 && threadIdx.x == 0) *error = QUEUE_ERR_LAUNCH;
        return;
    }
    __shared__ int start;
    if (threadIdx.x == 0) {
        const float pf = *ptr;
        *saved_ptr = pf;
        // The comparisons are false for NaN, so a NaN pointer is refused too; the float
        // range check comes before the conversion to int, which is undefined out of range.
        const bool in_range = pf >= 0.0f && pf < (float)rows && pf == floorf(pf);
        if (b <= 0 || rows % b != 0) {
            *error = QUEUE_ERR_DIVISIBILITY;
            start = -1;
        } else if (!in_range || ((int)pf) % b != 0) {
            *error = QUEUE_ERR_POINTER;
            start = -1;
        } else {
            start = (int)pf;
        }
    }
    __syncthreads();
    if (start < 0) return;

    // Rows [start, start + b) are contiguous in the [rows, dim] layout: one flat copy.
    const int n = b * dim;
    T* dst = queue + start * dim;
    // Each element is saved and overwritten by the same thread, so no barrier is needed.
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        saved_keys[i] = dst[i];
        dst[i] = keys[i];
    }
    for (int i = threadIdx.x; i < b; i += blockDim.x) {
        saved_idx[i] = queue_idx[start + i];
        queue_idx[start + i] = key_idx[i];
    }

    // Everyone has read `start` (from shared memory, long ago) and no thread reads *ptr again,
    // so thread 0 may advance it now; the launch boundary publishes it to the next kernel.
    if (threadIdx.x == 0) *ptr = (float)((start + b) % rows);
}

extern "C" __global__ void queue_enqueue_f16(int rows, int dim, int b, const __half* keys,
                                             const float* key_idx, __half* queue, float* queue_idx,
                                             float* ptr, float* error, __half* saved_keys,
                                             float* saved_idx, float* saved_ptr) {
    queue_enqueue(rows, dim, b, keys, key_idx, queue, queue_idx, ptr, error, saved_keys, saved_idx,
                  saved_ptr);
}

extern "C" __global__ void queue_enqueue_f32(int rows, int dim, int b, const float* keys,
                                             const float* key_idx, float* queue, float* queue_idx,
                                             float* ptr, float* error, float* saved_keys,
                                             float* saved_idx, float* saved_ptr) {
    queue_enqueue(rows, dim, b, keys, key_idx, queue, queue_idx, ptr, error, saved_keys, saved_idx,
                  saved_ptr);
}
