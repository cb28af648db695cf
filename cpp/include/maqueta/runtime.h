// Threads, per-call workspaces and the choice of micro-kernels for this CPU: what every kernel
// file shares.
//
// Kernel conventions (one header per op family: conv2d.h, maxpool2d.h, linear.h, optim.h, loss.h,
// lanes.h). Kernels are free functions <op>_forward / <op>_backward on raw contiguous buffers,
// for float and double. Arguments go outputs, inputs, weights, dims, then the IsaKernels the call
// runs on: the binding reads the instruction set once per call and passes it down, so it cannot
// change in the middle of one. Every kernel overwrites its outputs; the caller owns accumulation
// and buffers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "maqueta/microkernels.h"

#ifdef MAQUETA_OPENMP
#include <omp.h>
#endif

namespace maqueta {

// Thread count used by every parallel loop. Kept here rather than in OpenMP's per-thread ICV so that
// kernels called from any Python thread use the same count.
int num_threads();
void set_num_threads(int n);
int max_threads();                 // the most threads set_num_threads accepts: 4 per available processor
int startable_threads(int n);      // how many of n threads (the caller's included) the system lets start now
bool openmp_enabled();

inline int thread_index() {
#ifdef MAQUETA_OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Threads actually running the current parallel region. It can be fewer than asked for
// (OMP_DYNAMIC, OMP_THREAD_LIMIT), so work split by hand inside a region must use this.
inline int team_threads() {
#ifdef MAQUETA_OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// Threads to ask for `work` independent pieces of work: one per piece at most, never more than
// num_threads(), at least one (OpenMP runtimes can abort when thread creation fails).
inline int team_size(int64_t work) {
    const int64_t n = num_threads();
    return (int)(work < 1 ? 1 : work < n ? work : n);
}

// [begin, end) of `count` items for thread t of a team of n, in contiguous ranges.
struct Range {
    int64_t begin, end;
};
inline Range range_of(int64_t count, int n, int t) {
    const int64_t per = (count + n - 1) / n;
    const int64_t b = count < t * per ? count : t * per;
    return Range{b, count < b + per ? count : b + per};
}

// Scratch memory owned by the calling thread and reused from call to call, so that a training step
// allocates nothing after the first. Grab it once per kernel call, before the parallel region
// (allocation may throw there, never inside it), and carve per-thread slices out of it.
class Workspace {
public:
    // Returns at least `bytes` bytes aligned to 64; previous contents are undefined. Under
    // AddressSanitizer the whole block comes back poisoned: carve() opens the parts in use.
    static void* get(std::size_t bytes);
};

// Where a buffer lies in a Workspace block.
struct Slot {
    std::size_t offset, bytes;
};

// Offsets of the buffers a kernel carves out of one Workspace block: one shared layout, and one
// per-thread layout repeated for each thread of the team. In sanitizer builds each buffer is
// followed by a poisoned red zone, so AddressSanitizer sees an overrun into the next buffer.
class Layout {
public:
    // Sizes are checked: a product that would overflow throws std::bad_alloc (MemoryError in
    // Python) here, before any parallel region, rather than wrapping to a small buffer.
    template <typename U>
    Slot add(int64_t count) {
        std::size_t bytes = 0, padded = 0;
        if (count < 0 || __builtin_mul_overflow((std::size_t)count, sizeof(U), &bytes) ||
            __builtin_add_overflow(bytes, std::size_t(63) + kRedZone, &padded))
            throw std::bad_alloc();
        padded &= ~std::size_t(63);
        const Slot s{size_, bytes};
        if (__builtin_add_overflow(size_, padded, &size_) || size_ > kMaxBytes) throw std::bad_alloc();
        return s;
    }
    std::size_t size() const { return size_; }
    // shared + teams * per-thread, checked the same way
    static std::size_t total(const Layout& shared, int teams, const Layout& mine) {
        std::size_t all = 0;
        if (__builtin_mul_overflow(mine.size_, (std::size_t)teams, &all) ||
            __builtin_add_overflow(all, shared.size_, &all) || all > kMaxBytes)
            throw std::bad_alloc();
        return all;
    }
private:
#ifdef MAQUETA_SANITIZE
    static constexpr std::size_t kRedZone = 64;
#else
    static constexpr std::size_t kRedZone = 0;
#endif
    static constexpr std::size_t kMaxBytes = std::size_t(1) << 50;   // far beyond any machine
    std::size_t size_ = 0;
};

void unpoison(const void* p, std::size_t bytes);  // no-op unless built with AddressSanitizer

template <typename U>
inline U* carve(unsigned char* base, Slot s) {
    unpoison(base + s.offset, s.bytes);
    return reinterpret_cast<U*>(base + s.offset);
}

// The micro-kernels of one instruction set (see microkernels.h): for each entry of the list
// MAQUETA_MICROKERNELS, a pointer per dtype and an overload that calls it.
struct IsaKernels {
    const char* name;
    int mr;  // rows-tile height: A panels are packed MR rows at a time
    int nr_float, nr_double;  // rows-tile width in elements
#define MAQUETA_ISA_POINTERS(op, Args, Ret)                                  \
    Ret (*op##_f)(const Args<float>&) = nullptr;                            \
    Ret (*op##_d)(const Args<double>&) = nullptr;                           \
    Ret op(const Args<float>& a) const { return op##_f(a); }                \
    Ret op(const Args<double>& a) const { return op##_d(a); }
    MAQUETA_MICROKERNELS(MAQUETA_ISA_POINTERS)
#undef MAQUETA_ISA_POINTERS

    template <typename T> int lanes() const { return nr<T>() / 2; }
    template <typename T> int nr() const { return sizeof(T) == 4 ? nr_float : nr_double; }
};

// The instruction sets this CPU and build offer, best first. The process uses the best unless a
// test chose another (set_isa); a binding reads isa() once per call and hands it to the kernel.
const IsaKernels& isa();
bool set_isa(const char* name);            // testing aid: "avx512", "avx2", "generic"; false if unavailable
const char* const* available_isas(int* count);

}  // namespace maqueta
