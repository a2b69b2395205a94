#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace moco_emu {

#ifdef MOCO_EMU_ASM_FIBERS
extern "C" void moco_emu_ctx_switch(void** save_sp, void* load_sp);
extern "C" void moco_emu_ctx_start();

// The saved frame, from the saved stack pointer up: MXCSR and x87 control word (8 bytes),
// r15, r14, r13, r12, rbx, rbp, return address. A new fiber's frame "returns" into
// moco_emu_ctx_start with r13 = the entry point. MXCSR's control bits (not its sticky status
// flags, bits 0-5) and the x87 control word are loaded only when they differ from the running
// ones: ldmxcsr and fldcw stall the pipeline and dominated the switch when done every time.
asm(R"(
    .text
    .p2align 4
    .globl moco_emu_ctx_switch
    .hidden moco_emu_ctx_switch
    .type moco_emu_ctx_switch, @function
moco_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, %rcx
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    movl (%rsp), %eax
    xorl (%rcx), %eax
    testl $0xffc0, %eax
    jz 1f
    ldmxcsr (%rsp)
1:
    movw 4(%rsp), %ax
    cmpw 4(%rcx), %ax
    je 2f
    fldcw 4(%rsp)
2:
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size moco_emu_ctx_switch, .-moco_emu_ctx_switch

    .p2align 4
    .globl moco_emu_ctx_start
    .hidden moco_emu_ctx_start
    .type moco_emu_ctx_start, @function
moco_emu_ctx_start:
    .cfi_startproc
    .cfi_undefined rip
    callq *%r13
    ud2
    .cfi_endproc
    .size moco_emu_ctx_start, .-moco_emu_ctx_start
)");

void fiber_init(Context* ctx, char* /*lo*/, char* hi, void (*entry)()) {
    auto top = reinterpret_cast<std::uintptr_t>(hi) & ~std::uintptr_t{15};
    // After the final `ret` of the first switch, rsp = top - 16: 16-byte aligned before the
    // `call` in moco_emu_ctx_start, as the ABI requires.
    auto* frame = reinterpret_cast<std::uint64_t*>(top - 80);
    std::uint32_t mxcsr;
    std::uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    frame[0] = mxcsr | (std::uint64_t{fpucw} << 32);
    frame[1] = 0;                                               // r15
    frame[2] = 0;                                               // r14
    frame[3] = reinterpret_cast<std::uint64_t>(entry);          // r13
    frame[4] = 0;                                               // r12
    frame[5] = 0;                                               // rbx
    frame[6] = 0;                                               // rbp
    frame[7] = reinterpret_cast<std::uint64_t>(&moco_emu_ctx_start);  // return address
    ctx->sp = frame;
}

void fiber_switch(Context* from, Context* to) { moco_emu_ctx_switch(&from->sp, to->sp); }

#else

void fiber_init(Context* ctx, char* lo, char* hi, void (*entry)()) {
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = static_cast<std::size_t>(hi - lo);
    ctx->uc.uc_link = nullptr;
    makecontext(&ctx->uc, entry, 0);
}

void fiber_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }

#endif

namespace {
constexpr std::size_t kStack = 64 * 1024;
constexpr std::size_t kMaxStacks = 1024;  // one per CUDA thread of the largest block
// Written only by the (serialised) launches; read by the fault handler, hence atomics.
std::atomic<char*> g_stacks[kMaxStacks];
std::size_t g_page = 0;
}  // namespace

bool fiber_stack(std::size_t i, char** lo, char** hi) {
    if (i >= kMaxStacks) return false;
    if (g_page == 0) g_page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    char* base = g_stacks[i].load(std::memory_order_relaxed);
    if (base == nullptr) {
        void* m = mmap(nullptr, kStack + g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (m == MAP_FAILED) return false;
        if (mprotect(m, g_page, PROT_NONE) != 0) {
            munmap(m, kStack + g_page);
            return false;
        }
        base = static_cast<char*>(m);
        g_stacks[i].store(base, std::memory_order_release);
    }
    *lo = base + g_page;
    *hi = base + g_page + kStack;
    return true;
}

bool fiber_guard_hit(const void* addr) {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    for (std::size_t i = 0; i < kMaxStacks; ++i) {
        const auto base = reinterpret_cast<std::uintptr_t>(g_stacks[i].load(std::memory_order_acquire));
        if (base == 0) break;
        if (a >= base && a < base + g_page) return true;
    }
    return false;
}

}  // namespace moco_emu
