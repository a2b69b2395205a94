// The scheduler of the host twins: runs a launch's blocks one after another, and the CUDA
// threads of a block either as plain calls (kernels that never synchronise) or as fibers
// switched at every barrier, shuffle and vote (see kernels/emu/src/kernels.rs for the design).
#include <cstdint>
#include <cstdio>
#include <exception>

#include "fiber.h"
#include "twin.h"

extern "C" {
uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;
}

namespace {

using moco_emu::Context;

struct KernelError : std::exception {
    const char* msg;
    explicit KernelError(const char* m) : msg(m) {}
    const char* what() const noexcept override { return msg; }
};

struct Thread {
    Context ctx;
    uint3 idx;
    bool done;
};

// A barrier over the live (not yet exited) threads it spans. `gen` counts releases: a waiter
// sleeps until it changes, so a released thread can re-arrive at once without confusion.
struct Barrier {
    std::uint32_t live = 0;
    std::uint32_t arrived = 0;
    std::uint32_t gen = 0;
};

struct Warp {
    Barrier bar;
    // Exchange slots, double-buffered by barrier generation: a lane writes slot[gen & 1],
    // waits for the warp, reads its source; it cannot write that buffer again before every
    // lane has passed the next barrier, i.e. has read it.
    std::uint64_t slot[2][32];
    std::uint32_t tag[2][32];  // gen + 1 of the write, so a lane that exited is not counted
};

struct State {
    const moco_emu::Twin* twin = nullptr;
    void* const* params = nullptr;
    std::uint32_t nthreads = 0;
    Thread threads[1024];
    Warp warps[32];
    Barrier block;
    Context sched;
    std::uint32_t cur = 0;
    bool in_fiber = false;  // false: plain-call mode, where synchronisation is an error
    bool touched = false;   // a synchronising intrinsic ran in this block
    bool progress = false;  // a thread arrived somewhere or exited during this pass
    const char* error = nullptr;
    volatile bool running = false;  // read by the fault handler
} S;

void fail(const char* msg) {
    if (S.error == nullptr) S.error = msg;
}

// Back to the scheduler; returns when the scheduler resumes this thread.
inline void yield() { moco_emu::fiber_switch(&S.threads[S.cur].ctx, &S.sched); }

void release(Barrier& b) {
    b.arrived = 0;
    ++b.gen;
}

void arrive_and_wait(Barrier& b) {
    S.progress = true;
    const std::uint32_t g = b.gen;
    if (++b.arrived >= b.live) {
        release(b);
        return;
    }
    while (b.gen == g) yield();
}

void check_sync_allowed() {
    S.touched = true;
    if (!S.in_fiber) {
        throw KernelError(
            "divergent barrier: thread 0 of this block finished without reaching any barrier, shuffle "
            "or vote, but another thread of the block reached one (on a GPU that thread would wait "
            "forever or read undefined values)");
    }
}

Warp& my_warp() {
    const uint3 t = threadIdx;
    const std::uint32_t lin = t.x + blockDim.x * (t.y + blockDim.y * t.z);
    return S.warps[lin >> 5];
}

void thread_exit(std::uint32_t i) {
    S.progress = true;
    S.threads[i].done = true;
    const uint3 t = S.threads[i].idx;
    Warp& w = S.warps[(t.x + blockDim.x * (t.y + blockDim.y * t.z)) >> 5];
    // Barriers count live threads only: one that others wait at may now be complete.
    for (Barrier* b : {&S.block, &w.bar}) {
        --b->live;
        if (b->arrived > 0 && b->arrived >= b->live) release(*b);
    }
}

void fiber_main() {
    const std::uint32_t me = S.cur;
    try {
        S.twin->call(S.params);
    } catch (const std::exception& e) {
        fail(e.what());
    } catch (...) {
        fail("unknown C++ exception in a kernel");
    }
    thread_exit(me);
    moco_emu::fiber_switch(&S.threads[me].ctx, &S.sched);
    __builtin_trap();  // a finished fiber is never resumed
}

void start_fiber(std::uint32_t i) {
    char *lo, *hi;
    if (!moco_emu::fiber_stack(i, &lo, &hi)) throw KernelError("could not map a fiber stack (mmap failed)");
    S.threads[i].done = false;
    const unsigned bx = blockDim.x, by = blockDim.y;
    S.threads[i].idx = uint3{i % bx, (i / bx) % by, i / (bx * by)};
    moco_emu::fiber_init(&S.threads[i].ctx, lo, hi, &fiber_main);
}

void resume(std::uint32_t i) {
    S.cur = i;
    threadIdx = S.threads[i].idx;
    S.in_fiber = true;
    moco_emu::fiber_switch(&S.sched, &S.threads[i].ctx);
    S.in_fiber = false;
}

// Runs the current block (blockIdx set). Returns false with S.error set on failure.
bool run_block() {
    const std::uint32_t n = S.nthreads;
    // Generations keep counting across blocks and launches, so a vote tag written in an
    // earlier block can never match the current generation.
    S.block.live = n;
    S.block.arrived = 0;
    for (std::uint32_t w = 0; w * 32 < n; ++w) {
        S.warps[w].bar.live = n - w * 32 < 32 ? n - w * 32 : 32;
        S.warps[w].bar.arrived = 0;
    }
    S.touched = false;

    // Thread 0 first, as a fiber: if it synchronises, the block needs fibers.
    start_fiber(0);
    resume(0);
    if (S.error) return false;
    if (!S.touched) {
        if (n > 1) S.twin->loop(S.params, 1);  // throws KernelError on a divergent barrier
        return true;
    }
    for (std::uint32_t i = 1; i < n; ++i) start_fiber(i);
    // Round-robin passes until every thread is done. A pass in which no thread arrived at a
    // barrier or exited cannot be followed by one that does: the threads wait at barriers
    // that can never complete.
    for (;;) {
        bool alive = false;
        S.progress = false;
        for (std::uint32_t i = 0; i < n; ++i) {
            if (S.threads[i].done) continue;
            alive = true;
            resume(i);
            if (S.error) return false;
        }
        if (!alive) return true;
        if (!S.progress) {
            fail("deadlock: the block's live threads wait at barriers that cannot complete (threads "
                 "of one warp at different shuffles/votes, or some at __syncthreads and others at a "
                 "warp intrinsic)");
            return false;
        }
    }
}

}  // namespace

extern "C" {

void moco_emu_syncthreads() {
    check_sync_allowed();
    arrive_and_wait(S.block);
}

void moco_emu_syncwarp() {
    check_sync_allowed();
    arrive_and_wait(my_warp().bar);
}

std::uint64_t moco_emu_shfl(std::uint64_t bits, unsigned src) {
    check_sync_allowed();
    Warp& w = my_warp();
    const std::uint32_t buf = w.bar.gen & 1u;
    w.slot[buf][moco_emu::lane_id()] = bits;
    arrive_and_wait(w.bar);
    return w.slot[buf][src & 31u];
}

std::uint64_t moco_emu_vote(int pred) {
    check_sync_allowed();
    Warp& w = my_warp();
    const std::uint32_t gen = w.bar.gen;
    const std::uint32_t buf = gen & 1u;
    const unsigned lane = moco_emu::lane_id();
    w.slot[buf][lane] = pred != 0;
    w.tag[buf][lane] = gen + 1;
    arrive_and_wait(w.bar);
    std::uint32_t ballot = 0, voted = 0;
    for (unsigned l = 0; l < 32; ++l) {
        if (w.tag[buf][l] != gen + 1) continue;
        voted |= 1u << l;
        if (w.slot[buf][l]) ballot |= 1u << l;
    }
    return (std::uint64_t{voted} << 32) | ballot;
}

void moco_emu_trap() { throw KernelError("the kernel called __trap()"); }

// Runs a whole grid. Returns 0, or 1 with a message in err. Calls must not overlap (the Rust
// side holds a lock).
int moco_emu_run(const moco_emu::Twin* twin, const unsigned grid[3], const unsigned block[3], void* const* params,
                 char* err, std::size_t err_len) {
    S.twin = twin;
    S.params = params;
    S.nthreads = block[0] * block[1] * block[2];
    S.error = nullptr;
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    bool ok = true;
    S.running = true;
    try {
        for (unsigned z = 0; ok && z < grid[2]; ++z) {
            for (unsigned y = 0; ok && y < grid[1]; ++y) {
                for (unsigned x = 0; ok && x < grid[0]; ++x) {
                    blockIdx = uint3{x, y, z};
                    ok = run_block();
                }
            }
        }
    } catch (const std::exception& e) {
        fail(e.what());
        ok = false;
    } catch (...) {
        fail("unknown C++ exception in a kernel");
        ok = false;
    }
    S.running = false;
    if (ok) return 0;
    std::snprintf(err, err_len, "%s (block (%u,%u,%u), thread (%u,%u,%u))", S.error ? S.error : "unknown error",
                  blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    return 1;
}

// For the fault handler (async-signal-safe: plain loads). Returns 1 and writes blockIdx then
// threadIdx of the running CUDA thread while a kernel runs, else 0.
int moco_emu_kernel_position(unsigned out[6]) {
    if (!S.running) return 0;
    out[0] = blockIdx.x;
    out[1] = blockIdx.y;
    out[2] = blockIdx.z;
    out[3] = threadIdx.x;
    out[4] = threadIdx.y;
    out[5] = threadIdx.z;
    return 1;
}

int moco_emu_fiber_guard_hit(const void* addr) { return moco_emu::fiber_guard_hit(addr) ? 1 : 0; }
}
