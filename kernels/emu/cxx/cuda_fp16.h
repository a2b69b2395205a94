// Host stand-in for CUDA's <cuda_fp16.h>: the `__half` type and the half intrinsics the
// kernels use, with the device's rounding (round to nearest even on every float -> half
// conversion). Written with integer bit manipulation rather than `_Float16`, because g++ lowers
// `_Float16` conversions on baseline x86-64 to libgcc calls (__truncsfhf2) that the Rust link
// line does not promise to provide.
#pragma once
#ifndef MOCO_EMU_CUDA_FP16_H
#define MOCO_EMU_CUDA_FP16_H

#include <cstdint>
#include <cstring>

namespace moco_emu {

inline std::uint32_t f32_bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float bits_f32(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// float -> binary16, round to nearest even (IEEE 754 default), with overflow to inf,
// gradual underflow to subnormals and NaN kept NaN (quiet, top payload bits kept).
inline std::uint16_t f32_to_f16(float f) {
    const std::uint32_t x = f32_bits(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    std::uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {  // inf or NaN
        return static_cast<std::uint16_t>(sign | (ax > 0x7f800000u ? 0x7e00u | ((ax >> 13) & 0x3ffu) : 0x7c00u));
    }
    if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520: inf
    if (ax < 0x38800000u) {
        // Below the smallest normal half (2^-14): adding 0.5 puts the value's multiple of
        // 2^-24 (the half subnormal step) in the low mantissa bits, rounded by the FPU (RNE).
        const float r = bits_f32(ax) + 0.5f;
        return static_cast<std::uint16_t>(sign | (f32_bits(r) - 0x3f000000u));
    }
    // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even.
    const std::uint32_t odd = (ax >> 13) & 1u;
    ax += 0xc8000fffu + odd;
    return static_cast<std::uint16_t>(sign | (ax >> 13));
}

// binary16 -> float (exact).
inline float f16_to_f32(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t e = (h >> 10) & 0x1fu;
    const std::uint32_t m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u));
    if (e == 0) {
        const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
        return bits_f32(sign | f32_bits(v));
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

}  // namespace moco_emu

// Trivially copyable and trivially default-constructible, as on the device, so __shared__
// arrays of it need no constructors and kernel parameters can be copied bytewise.
struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(moco_emu::f32_to_f16(f)) {}
    operator float() const { return moco_emu::f16_to_f32(__x); }
};
typedef __half half;

struct __half_raw {
    unsigned short x;
};

inline float __half2float(__half h) { return moco_emu::f16_to_f32(h.__x); }
inline __half __ushort_as_half(unsigned short x) {
    __half h;
    h.__x = x;
    return h;
}
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __float2half_rn(float f) { return __ushort_as_half(moco_emu::f32_to_f16(f)); }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __half __int2half_rn(int i) { return __float2half_rn(static_cast<float>(i)); }

// Half arithmetic: the float result of two halves rounded once to half. Exact-then-round
// equals float-then-round here because float has more than 2 * 11 + 2 significand bits.
inline __half __hadd(__half a, __half b) { return __float2half_rn(__half2float(a) + __half2float(b)); }
inline __half __hsub(__half a, __half b) { return __float2half_rn(__half2float(a) - __half2float(b)); }
inline __half __hmul(__half a, __half b) { return __float2half_rn(__half2float(a) * __half2float(b)); }
inline __half __hdiv(__half a, __half b) { return __float2half_rn(__half2float(a) / __half2float(b)); }
inline __half __hneg(__half a) { return __ushort_as_half(static_cast<unsigned short>(a.__x ^ 0x8000u)); }
inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
inline bool __hisinf(__half a) { return (a.__x & 0x7fffu) == 0x7c00u; }
inline bool __hlt(__half a, __half b) { return __half2float(a) < __half2float(b); }
inline bool __hgt(__half a, __half b) { return __half2float(a) > __half2float(b); }
inline __half __hmax(__half a, __half b) { return __hgt(b, a) ? b : a; }
inline __half __hmin(__half a, __half b) { return __hlt(b, a) ? b : a; }

#endif
