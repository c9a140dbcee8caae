// The SIMT runtime: runs one kernel launch with every CUDA thread as a fiber, blocks one
// after another, and checks every meeting point (see simt.h). Built once as libsimt.so; each
// kernel module links it. Errors never throw across fibers: the failing fiber records a message
// and switches back to the scheduler, which abandons the launch and returns the message.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "simt.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#else
#define SIMT_ASAN 0
#endif

#define SIMT_API extern "C" __attribute__((visibility("default")))

namespace simt {

enum State { RUNNABLE, WAIT_BAR, WAIT_WARP, EXITED };
enum Order { FORWARD = 0, REVERSE = 1, RANDOM = 2 };

struct Fiber {
    uint3 idx;
    int linear, lane, warp;
    State state;
    int site, line, kind, arg, width;
    const char* file;
    unsigned mask;
    uint64_t value, result;
    void* sp;  // saved stack pointer (x86-64 switch)
#if !defined(__x86_64__)
    ucontext_t ctx;
#endif
    char* stack;
};

Grid g_grid;
Fiber* g_cur = nullptr;

namespace {

#if defined(__x86_64__)
// swapcontext makes a sigprocmask system call per switch (and getcontext one per fiber), which
// dominated the tier's run time; fibers need only the callee-saved registers, MXCSR and the x87
// control word (System V ABI), so on x86-64 switch those directly.
extern "C" void simt_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl simt_switch
    .hidden simt_switch
    .type simt_switch, @function
simt_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size simt_switch, .-simt_switch
)");
#endif

const size_t kStack = SIMT_ASAN ? (256u << 10) : (64u << 10);
#if defined(__x86_64__)
void* g_sched_sp = nullptr;
#else
ucontext_t g_sched;
#endif
std::vector<Fiber> g_fibers;
std::vector<char*> g_stacks;
int g_nthreads = 0;
uint64_t g_block_epoch = 0;
std::vector<std::pair<void*, uint64_t>> g_shared_seen;  // static shared variable -> block epoch
bool g_failed = false;
bool g_stacks_dirty = false;  // a launch failed: fibers were abandoned mid-call
std::string g_error;
const char* g_kernel = "";
void (*g_entry)(void**) = nullptr;
void** g_args = nullptr;
#if SIMT_ASAN
void* g_sched_fake_stack = nullptr;
const void* g_sched_stack_bottom = nullptr;
size_t g_sched_stack_size = 0;
#endif

std::string where(const Fiber* f) {
    char buf[256];
    snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u) [warp %d lane %d]",
             g_kernel, g_grid.block_idx.x, g_grid.block_idx.y, g_grid.block_idx.z, f->idx.x,
             f->idx.y, f->idx.z, f->warp, f->lane);
    return buf;
}

std::string site_name(const Fiber* f) {
    static const char* names[] = {"?", "__shfl_sync", "__shfl_xor_sync", "__shfl_up_sync",
                                  "__shfl_down_sync", "__ballot_sync", "__any_sync",
                                  "__all_sync", "__syncwarp"};
    char buf[512];
    const char* what = f->state == WAIT_BAR ? "__syncthreads" : names[f->kind];
    if (f->state == WAIT_BAR)
        snprintf(buf, sizeof buf, "%s at %s:%d", what, f->file, f->line);
    else
        snprintf(buf, sizeof buf, "%s(mask 0x%08x) at %s:%d", what, f->mask, f->file, f->line);
    return buf;
}

// Switch from the running fiber to the scheduler and back.
void to_scheduler() {
    Fiber* self = g_cur;
#if SIMT_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, g_sched_stack_bottom, g_sched_stack_size);
#endif
#if defined(__x86_64__)
    simt_switch(&self->sp, g_sched_sp);
#else
    swapcontext(&self->ctx, &g_sched);
#endif
#if SIMT_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    g_cur = self;
}

void fiber_main() {
#if SIMT_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
    g_entry(g_args);
    g_cur->state = EXITED;
    to_scheduler();
    abort();  // an exited fiber is never resumed
}

void run_fiber(Fiber* f) {
    g_cur = f;
#if SIMT_ASAN
    __sanitizer_start_switch_fiber(&g_sched_fake_stack, f->stack, kStack);
#endif
#if defined(__x86_64__)
    simt_switch(&g_sched_sp, f->sp);
#else
    swapcontext(&g_sched, &f->ctx);
#endif
#if SIMT_ASAN
    __sanitizer_finish_switch_fiber(g_sched_fake_stack, nullptr, nullptr);
#endif
    g_cur = nullptr;
}

void sched_error(const std::string& msg) {
    if (!g_failed) {
        g_failed = true;
        g_error = msg;
    }
}

int lanes_in_warp(int warp) {
    const int rest = g_nthreads - warp * 32;
    return rest < 32 ? rest : 32;
}

// Value lane `f` receives from a completed warp collective; sets g_failed on a bad source lane.
uint64_t collective_result(const Fiber* f, const Fiber* warp0) {
    const int w = f->width, seg = f->lane & ~(w - 1);
    int src;
    switch (f->kind) {
        case SHFL: src = seg + (f->arg & (w - 1)); break;
        case SHFL_XOR: src = f->lane ^ f->arg; if (src >= seg + w) src = f->lane; break;
        case SHFL_UP: src = f->lane - f->arg; if (src < seg) src = f->lane; break;
        case SHFL_DOWN: src = f->lane + f->arg; if (src >= seg + w) src = f->lane; break;
        default: {
            unsigned bits = 0;
            for (int j = 0; j < 32; ++j)
                if ((f->mask >> j) & 1u) bits |= (warp0[j].value ? 1u : 0u) << j;
            if (f->kind == BALLOT) return bits;
            if (f->kind == ANY) return bits != 0;
            if (f->kind == ALL) return bits == f->mask;
            return 0;
        }
    }
    if (src < 0 || src >= 32 || !((f->mask >> src) & 1u)) {
        sched_error(where(f) + ": " + site_name(f) + " reads lane " + std::to_string(src) +
                    ", which is not in the mask");
        return 0;
    }
    return warp0[src].value;
}

// Release every warp collective whose lanes have all arrived; report lanes that meet at
// different collectives or have left. Returns whether any fiber became runnable.
bool resolve_warps() {
    bool progress = false;
    for (int w = 0; w * 32 < g_nthreads && !g_failed; ++w) {
        Fiber* warp0 = &g_fibers[(size_t)w * 32];
        const int n = lanes_in_warp(w);
        for (int l = 0; l < n && !g_failed; ++l) {
            Fiber* f = &warp0[l];
            if (f->state != WAIT_WARP) continue;
            bool complete = true;
            for (int j = 0; j < n; ++j) {
                if (!((f->mask >> j) & 1u)) continue;
                Fiber* o = &warp0[j];
                if (o->state == RUNNABLE) {
                    complete = false;
                } else if (o->state == EXITED) {
                    sched_error(where(f) + ": " + site_name(f) + " names lane " +
                                std::to_string(j) + ", which has exited");
                } else if (o->state == WAIT_BAR || o->site != f->site || o->mask != f->mask ||
                           o->kind != f->kind) {
                    sched_error(where(f) + ": lanes of one warp meet at different points: lane " +
                                std::to_string(l) + " at " + site_name(f) + ", lane " +
                                std::to_string(j) + " at " + site_name(o));
                }
                if (g_failed) return false;
            }
            if (!complete) continue;
            std::vector<uint64_t> results(32);
            for (int j = 0; j < n; ++j)
                if ((f->mask >> j) & 1u) results[j] = collective_result(&warp0[j], warp0);
            if (g_failed) return false;
            for (int j = 0; j < n; ++j)
                if ((f->mask >> j) & 1u) {
                    warp0[j].result = results[j];
                    warp0[j].state = RUNNABLE;
                }
            progress = true;
        }
    }
    return progress;
}

// Every fiber is blocked or done: release a block barrier that all live threads reached at the
// same call site, or report why the block cannot go on.
bool resolve_barrier() {
    const Fiber* first = nullptr;
    const Fiber* exited = nullptr;
    for (const Fiber& f : g_fibers) {
        if (f.state == EXITED) {
            if (!exited) exited = &f;
            continue;
        }
        if (f.state != WAIT_BAR) {
            sched_error(where(&f) + ": deadlock: waits at " + site_name(&f) +
                        " for lanes that never arrive");
            return false;
        }
        if (!first) first = &f;
        if (f.site != first->site) {
            sched_error(where(&f) + ": divergent __syncthreads: this thread waits at " +
                        site_name(&f) + ", thread " + std::to_string(first->linear) + " at " +
                        site_name(first));
            return false;
        }
    }
    if (!first) return false;  // all exited
    if (exited) {
        sched_error(where(first) + ": waits at " + site_name(first) + " but thread " +
                    std::to_string(exited->linear) +
                    " of the block has exited (barriers must be reached by every thread)");
        return false;
    }
    for (Fiber& f : g_fibers) f.state = RUNNABLE;
    return true;
}

void run_block(int order, std::mt19937_64& rng) {
    for (int t = 0; t < g_nthreads; ++t) {
        Fiber& f = g_fibers[t];
        f.linear = t;
        f.idx = uint3{t % g_grid.block_dim.x, (t / g_grid.block_dim.x) % g_grid.block_dim.y,
                      t / (g_grid.block_dim.x * g_grid.block_dim.y)};
        f.lane = t & 31;
        f.warp = t >> 5;
        f.state = RUNNABLE;
        f.stack = g_stacks[t];
#if defined(__x86_64__)
        // A frame simt_switch can return from into fiber_main, as if fiber_main had been called:
        // saved MXCSR/x87 control word, six zeroed registers, then the "return address".
        uint64_t* top = (uint64_t*)(((uintptr_t)(f.stack + kStack)) & ~(uintptr_t)15);
        top[-1] = 0;                          // fiber_main's own return address: never used
        top[-2] = (uint64_t)(uintptr_t)&fiber_main;
        for (int r = 3; r <= 8; ++r) top[-r] = 0;
        top[-9] = 0x1f80ull | (0x037full << 32);  // default MXCSR, x87 control word
        f.sp = &top[-9];
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
#endif
    }
    std::vector<int> runnable;
    runnable.reserve(g_nthreads);
    while (!g_failed) {
        runnable.clear();
        for (int t = 0; t < g_nthreads; ++t)
            if (g_fibers[t].state == RUNNABLE) runnable.push_back(t);
        if (runnable.empty()) {
            if (resolve_warps()) continue;
            if (g_failed || !resolve_barrier()) return;
            continue;
        }
        if (order == REVERSE) std::reverse(runnable.begin(), runnable.end());
        if (order == RANDOM) std::shuffle(runnable.begin(), runnable.end(), rng);
        for (int t : runnable) {
            run_fiber(&g_fibers[t]);
            if (g_failed) return;
        }
        resolve_warps();
    }
}

}  // namespace

const uint3& current_thread_idx() { return g_cur->idx; }

void fresh_shared(void* p, size_t n) {
    for (auto& seen : g_shared_seen) {
        if (seen.first == p) {
            if (seen.second != g_block_epoch) {
                memset(p, 0xff, n);
                seen.second = g_block_epoch;
            }
            return;
        }
    }
    memset(p, 0xff, n);
    g_shared_seen.emplace_back(p, g_block_epoch);
}

void fail(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sched_error(where(g_cur) + ": " + buf);
    to_scheduler();
    abort();
}

uint64_t collective(int site, const char* file, int line, int kind, unsigned mask, uint64_t value,
                    int arg, int width) {
    Fiber* f = g_cur;
    f->site = site;
    f->file = file;
    f->line = line;
    f->kind = kind;
    f->mask = mask;
    f->value = value;
    f->arg = arg;
    f->width = width;
    f->state = WAIT_WARP;
    const int n = lanes_in_warp(f->warp);
    const unsigned exists = n == 32 ? 0xffffffffu : ((1u << n) - 1u);
    if (!((mask >> f->lane) & 1u))
        fail("%s: the calling lane is not in the mask", site_name(f).c_str());
    if (mask & ~exists)
        fail("%s names lanes that do not exist (the warp has %d lanes)", site_name(f).c_str(), n);
    if (kind <= SHFL_DOWN && (width < 1 || width > 32 || (width & (width - 1))))
        fail("%s: width %d is not a power of two <= 32", site_name(f).c_str(), width);
    Fiber* warp0 = &g_fibers[(size_t)f->warp * 32];
    for (int j = 0; j < n; ++j)
        if (((mask >> j) & 1u) && warp0[j].state == EXITED)
            fail("%s names lane %d, which has exited", site_name(f).c_str(), j);
    to_scheduler();
    return f->result;
}

void syncthreads(int site, const char* file, int line) {
    Fiber* f = g_cur;
    f->site = site;
    f->file = file;
    f->line = line;
    f->kind = 0;
    f->state = WAIT_BAR;
    to_scheduler();
}

}  // namespace simt

using namespace simt;

// One launch. dyn/dyn_cap: the module's dynamic shared-memory array. Returns 0, or 1 with the
// message in err.
SIMT_API int simt_run(const char* kernel, void (*entry)(void**), void** args,
                      const unsigned* grid, const unsigned* block, size_t smem,
                      unsigned char* dyn, size_t dyn_cap,
                      int order, unsigned long long seed, char* err, size_t errlen) {
    g_kernel = kernel;
    g_entry = entry;
    g_args = args;
    g_failed = false;
    g_error.clear();
    g_grid.grid_dim = dim3{grid[0], grid[1], grid[2]};
    g_grid.block_dim = dim3{block[0], block[1], block[2]};
    g_nthreads = (int)(block[0] * block[1] * block[2]);
    if (smem > dyn_cap) {
        snprintf(err, errlen, "kernel %s: %zu bytes of dynamic shared memory; the emulator has %zu",
                 kernel, smem, dyn_cap);
        return 1;
    }
    g_fibers.assign((size_t)g_nthreads, Fiber{});
    while (g_stacks.size() < (size_t)g_nthreads) g_stacks.push_back((char*)malloc(kStack));
#if SIMT_ASAN
    // A failed launch abandons its fibers mid-call: their frames' redzones stay poisoned in the
    // stacks, which the next launch reuses. Clear them (only then: it is 256 KiB per fiber).
    if (g_stacks_dirty) {
        for (char* stack : g_stacks) ASAN_UNPOISON_MEMORY_REGION(stack, kStack);
        g_stacks_dirty = false;
    }
#endif
    const size_t nblocks = (size_t)grid[0] * grid[1] * grid[2];
    std::vector<size_t> blocks(nblocks);
    for (size_t b = 0; b < nblocks; ++b) blocks[b] = b;
    std::mt19937_64 rng(seed);
    if (order == REVERSE) std::reverse(blocks.begin(), blocks.end());
    if (order == RANDOM) std::shuffle(blocks.begin(), blocks.end(), rng);
    for (size_t b : blocks) {
        g_grid.block_idx = uint3{(unsigned)(b % grid[0]), (unsigned)((b / grid[0]) % grid[1]),
                                 (unsigned)(b / ((size_t)grid[0] * grid[1]))};
        // Fresh shared memory for every block: poison (0xFF: NaN in every float type) so that a
        // value read before any thread wrote it shows in the output; past the launch's dynamic
        // size the same bytes act as a guard, checked after the block. Static shared variables
        // are poisoned by fresh_shared when the block first reaches them.
        ++g_block_epoch;
        memset(dyn, 0xff, dyn_cap);
#if SIMT_ASAN
        ASAN_POISON_MEMORY_REGION(dyn + smem, dyn_cap - smem);  // any access past smem reports
#endif
        run_block(order, rng);
#if SIMT_ASAN
        ASAN_UNPOISON_MEMORY_REGION(dyn + smem, dyn_cap - smem);
#endif
        if (!g_failed) {
            for (size_t i = smem; i < dyn_cap; ++i) {
                if (dyn[i] != 0xff) {
                    char buf[256];
                    snprintf(buf, sizeof buf,
                             "kernel %s, block (%u,%u,%u): write to dynamic shared memory at byte "
                             "%zu, past the %zu bytes the launch gave",
                             kernel, g_grid.block_idx.x, g_grid.block_idx.y, g_grid.block_idx.z,
                             i, smem);
                    sched_error(buf);
                    break;
                }
            }
        }
        if (g_failed) break;
    }
    if (g_failed) {
        g_stacks_dirty = true;
        snprintf(err, errlen, "%s", g_error.c_str());
        return 1;
    }
    return 0;
}

SIMT_API int simt_sanitized() { return SIMT_ASAN; }
