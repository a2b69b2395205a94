// Included first by every generated twin translation unit (see build.rs): turns the CUDA
// dialect of kernels/cu into host C++ that runs one CUDA thread per call, scheduled by
// runtime.cpp. Everything a kernel may touch between two synchronisation points is plain
// memory; the synchronisation intrinsics are opaque calls into runtime.cpp, so the compiler
// reloads threadIdx and shared memory after each of them (another CUDA thread ran meanwhile).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <math.h>
#include <type_traits>

// Must come before the kernels' own `#include <cuda_fp16.h>`, which then hits the include
// guard (the kernels are included inside a namespace, where a second copy would not do).
#include "cuda_fp16.h"

#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// Blocks run one after another on one OS thread, so one static per declaration is exactly
// one block's shared memory (its contents are undefined at block start, as on the device).
#define __shared__ static
#define __constant__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3() = default;
    constexpr dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The running CUDA thread's coordinates, written by the scheduler (runtime.cpp) before it
// runs or resumes a thread.
extern "C" {
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

// Opaque on purpose (defined in runtime.cpp): each may switch to other CUDA threads.
void moco_emu_syncthreads();
void moco_emu_syncwarp();
// Publishes this lane's 8 bytes and returns those of lane `src` of the same warp.
std::uint64_t moco_emu_shfl(std::uint64_t bits, unsigned src);
// Ballot of the warp's live lanes: low 32 bits the predicate ballot, high 32 the lanes that
// voted.
std::uint64_t moco_emu_vote(int pred);
[[noreturn]] void moco_emu_trap();
}

constexpr int warpSize = 32;

inline void __syncthreads() { moco_emu_syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { moco_emu_syncwarp(); }
inline void __threadfence() {}
inline void __threadfence_block() {}
[[noreturn]] inline void __trap() { moco_emu_trap(); }

namespace moco_emu {
// A warp is 32 consecutive linear thread ids of the block (x fastest).
inline unsigned lane_id() {
    return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u;
}
template <typename T>
inline T shfl_from(T v, unsigned src) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type over 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = moco_emu_shfl(bits, src);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
}  // namespace moco_emu

// Shuffles, with the documented width rules: a source outside the caller's width-lane segment
// (to a later segment for xor, past its end for down, before its start for up) yields the
// caller's own value. The mask is not checked: every kernel here passes the full mask.
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
    const unsigned lane = moco_emu::lane_id();
    unsigned src = lane ^ static_cast<unsigned>(lane_mask);
    if (src >= (lane & ~static_cast<unsigned>(width - 1)) + static_cast<unsigned>(width)) src = lane;
    return moco_emu::shfl_from(v, src);
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const unsigned lane = moco_emu::lane_id();
    const unsigned in_seg = lane & static_cast<unsigned>(width - 1);
    return moco_emu::shfl_from(v, in_seg + delta < static_cast<unsigned>(width) ? lane + delta : lane);
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    const unsigned lane = moco_emu::lane_id();
    const unsigned in_seg = lane & static_cast<unsigned>(width - 1);
    return moco_emu::shfl_from(v, in_seg >= delta ? lane - delta : lane);
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
    const unsigned lane = moco_emu::lane_id();
    const unsigned w = static_cast<unsigned>(width);
    return moco_emu::shfl_from(v, (lane & ~(w - 1)) + (static_cast<unsigned>(src_lane) & (w - 1)));
}

inline unsigned __ballot_sync(unsigned mask, int pred) {
    return static_cast<unsigned>(moco_emu_vote(pred)) & mask;
}
inline int __any_sync(unsigned mask, int pred) {
    return (static_cast<unsigned>(moco_emu_vote(pred)) & mask) != 0;
}
inline int __all_sync(unsigned mask, int pred) {
    const std::uint64_t v = moco_emu_vote(pred);
    const unsigned voted = static_cast<unsigned>(v >> 32) & mask;
    return (static_cast<unsigned>(v) & voted) == voted;
}
inline unsigned __activemask() { return static_cast<unsigned>(moco_emu_vote(1) >> 32); }

// Atomics: CUDA threads run one at a time on one OS thread and never switch inside these,
// so a plain read-modify-write is exact.
template <typename T>
inline T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
inline T atomicSub(T* p, T v) {
    const T old = *p;
    *p = old - v;
    return old;
}
template <typename T>
inline T atomicExch(T* p, T v) {
    const T old = *p;
    *p = v;
    return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
    const T old = *p;
    *p = old < v ? v : old;
    return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
    const T old = *p;
    *p = v < old ? v : old;
    return old;
}
template <typename T>
inline T atomicOr(T* p, T v) {
    const T old = *p;
    *p = old | v;
    return old;
}
template <typename T>
inline T atomicAnd(T* p, T v) {
    const T old = *p;
    *p = old & v;
    return old;
}
template <typename T>
inline T atomicXor(T* p, T v) {
    const T old = *p;
    *p = old ^ v;
    return old;
}
template <typename T>
inline T atomicCAS(T* p, T compare, T v) {
    const T old = *p;
    if (old == compare) *p = v;
    return old;
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
    const unsigned old = *p;
    *p = old >= limit ? 0u : old + 1u;
    return old;
}

// Integer and float min/max as CUDA's device library declares them.
inline int min(int a, int b) { return b < a ? b : a; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return b < a ? b : a; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return b < a ? b : a; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Float intrinsics: the device's fast approximations are replaced by the correctly rounded
// host functions (results may differ from a GPU in the last bits).
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Round-to-nearest operations that a GPU compiler never fuses; the host build is compiled
// without contraction across these calls' results either way.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline float __uint_as_float(unsigned u) { return __int_as_float(static_cast<int>(u)); }
inline unsigned __float_as_uint(float f) { return static_cast<unsigned>(__float_as_int(f)); }
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, 8);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long i;
    std::memcpy(&i, &d, 8);
    return i;
}
template <typename T>
inline T __ldg(const T* p) {
    return *p;
}
