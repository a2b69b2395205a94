// Minimal stackful coroutines ("fibers") for the CUDA threads of a block that synchronise.
// x86_64: a hand-written switch of the callee-saved registers, the stack pointer, MXCSR and
// the x87 control word (what the SysV ABI says a callee must preserve). Elsewhere: ucontext.
#pragma once

#include <cstddef>

#if defined(__x86_64__) && !defined(MOCO_EMU_FORCE_UCONTEXT)
#define MOCO_EMU_ASM_FIBERS 1
#else
#include <ucontext.h>
#endif

namespace moco_emu {

struct Context {
#ifdef MOCO_EMU_ASM_FIBERS
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
};

// Prepares `ctx` to run `entry()` on the stack [lo, hi) at the first switch to it. `entry`
// must never return (it switches away for good when done).
void fiber_init(Context* ctx, char* lo, char* hi, void (*entry)());

// Saves the running context into `from` and resumes `to`.
void fiber_switch(Context* from, Context* to);

// Stacks for fibers: 64 KiB each, mmap'd once with a PROT_NONE guard page at the low end
// (an overflowing CUDA thread faults instead of writing over its neighbour) and reused by
// every later launch. Returns the stack's [lo, hi) for fiber i, or false if mmap failed.
bool fiber_stack(std::size_t i, char** lo, char** hi);

// Whether `addr` lies in the guard page of a fiber stack (for the fault report).
bool fiber_guard_hit(const void* addr);

}  // namespace moco_emu
