// Precision casts between fp32 and fp16 buffers (compiled, not yet run on a GPU): input
// batches to fp16, master weights to their fp16 copy at start-up and after a checkpoint load,
// fp16 results back to fp32 for the host and the CPU-parity tests, and fp16 rounding in place.
#include "common.cuh"

// y = fp16(x), round to nearest even; values beyond the fp16 range become +-inf.
extern "C" __global__ void cast_f32_to_f16(int n, const float* x, __half* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        st_h(y, i, x[i]);
    }
}

// y = fp32(x), exact.
extern "C" __global__ void cast_f16_to_f32(int n, const __half* x, float* y) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        y[i] = ld_h(x, i);
    }
}

// x = fp32(fp16(x)) in place: what `round_act` does to an fp32 buffer under AMP, so values kept
// in fp32 carry exactly the precision of an fp16 activation (as the CPU backend emulates).
extern "C" __global__ void round_to_f16_f32(int n, float* x) {
    for (int i = grid_start(); i < n; i += grid_stride()) {
        x[i] = __half2float(__float2half_rn(x[i]));
    }
}
