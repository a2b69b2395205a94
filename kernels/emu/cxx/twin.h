// The host twin of one `extern "C" __global__` entry, built from the entry's function pointer
// alone: the parameter sizes and pointer-ness, and the unpacking of cuLaunchKernel-style
// parameter arrays, come from the real C++ signature (no parsing of parameter lists).
// Read by kernels/emu/src/kernels.rs (`#[repr(C)] struct Twin` there mirrors this one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <tuple>
#include <utility>

#include "prelude.h"

namespace moco_emu {

struct Twin {
    const char* name;
    std::size_t nparams;
    const std::size_t* sizes;
    const std::uint8_t* pointers;
    // Runs the current CUDA thread (threadIdx etc. already set). params[i] -> value of param i.
    void (*call)(void* const* params);
    // Runs linear threads [first, blockDim.x*y*z) of the current block one after another as
    // plain calls, with the parameters unpacked once (the fast path: no synchronisation).
    void (*loop)(void* const* params, std::uint32_t first);
};

template <class F>
struct Sig;

template <class... A>
struct Sig<void (*)(A...)> {
    static constexpr std::size_t n = sizeof...(A);
    // One spare element so a kernel without parameters still gets a valid array.
    static constexpr std::size_t sizes[n + 1] = {sizeof(A)..., 0};
    static constexpr std::uint8_t pointers[n + 1] = {std::uint8_t(std::is_pointer_v<A>)..., 0};
    static_assert((std::is_trivially_copyable_v<A> && ...), "kernel parameters must be trivially copyable");

    template <auto F, std::size_t... I>
    static void call_seq(void* const* p, std::index_sequence<I...>) {
        F(*static_cast<A*>(p[I])...);
    }
    template <auto F>
    static void call(void* const* p) {
        call_seq<F>(p, std::index_sequence_for<A...>{});
    }

    template <auto F, std::size_t... I>
    static void loop_seq(void* const* p, std::uint32_t first, std::index_sequence<I...>) {
        // Copies of the values, so the loop keeps them in registers across calls.
        [[maybe_unused]] const std::tuple<A...> args{*static_cast<A*>(p[I])...};
        const unsigned bx = blockDim.x, by = blockDim.y, bz = blockDim.z;
        const std::uint32_t total = bx * by * bz;
        unsigned x = first % bx, y = (first / bx) % by, z = first / (bx * by);
        for (std::uint32_t lin = first; lin < total; ++lin) {
            threadIdx = uint3{x, y, z};
            F(std::get<I>(args)...);
            if (++x == bx) {
                x = 0;
                if (++y == by) {
                    y = 0;
                    ++z;
                }
            }
        }
    }
    template <auto F>
    static void loop(void* const* p, std::uint32_t first) {
        loop_seq<F>(p, first, std::index_sequence_for<A...>{});
    }
};

template <auto F>
constexpr Twin twin(const char* name) {
    using S = Sig<decltype(F)>;
    return Twin{name, S::n, S::sizes, S::pointers, &S::template call<F>, &S::template loop<F>};
}

}  // namespace moco_emu
