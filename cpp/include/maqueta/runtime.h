// Threads, per-call workspaces and the choice of micro-kernels for this CPU.
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

// The micro-kernels of one instruction set (see microkernels.h).
struct IsaKernels {
    const char* name;
    int mr;  // rows-tile height: A panels are packed MR rows at a time
    int nr_float, nr_double;  // rows-tile width in elements
    void (*rows_f)(const RowsArgs<float>&);
    void (*rows_d)(const RowsArgs<double>&);
    void (*dot_f)(const DotArgs<float>&);
    void (*dot_d)(const DotArgs<double>&);
    void (*add_rows_f)(const AddRowsArgs<float>&);
    void (*add_rows_d)(const AddRowsArgs<double>&);
    void (*pool2x2_f)(const Pool2x2Args<float>&);
    void (*pool2x2_d)(const Pool2x2Args<double>&);
    void (*adam_f)(const AdamArgs<float>&);
    void (*adam_d)(const AdamArgs<double>&);
    void (*sgd_f)(const SgdArgs<float>&);
    void (*sgd_d)(const SgdArgs<double>&);
    bool (*finite_f)(const FiniteArgs<float>&);
    bool (*finite_d)(const FiniteArgs<double>&);
    void (*bcast_f)(const BcastArgs<float>&);
    void (*bcast_d)(const BcastArgs<double>&);
#define MAQUETA_LANE_MEMBERS(X)                                                              \
    X(lane_conv, LaneConvArgs) X(lane_dw, LaneDwArgs) X(lane_dx, LaneDxArgs)                 \
    X(lane_pool, LanePoolArgs) X(lane_unpool, LaneUnpoolArgs) X(lane_pack, LanePackArgs)
#define MAQUETA_LANE_POINTERS(name, Args)                                                    \
    void (*name##_f)(const Args<float>&);                                                    \
    void (*name##_d)(const Args<double>&);                                                   \
    void name(const Args<float>& a) const { name##_f(a); }                                   \
    void name(const Args<double>& a) const { name##_d(a); }
    MAQUETA_LANE_MEMBERS(MAQUETA_LANE_POINTERS)
#undef MAQUETA_LANE_POINTERS

    void rows(const RowsArgs<float>& a) const { rows_f(a); }
    void rows(const RowsArgs<double>& a) const { rows_d(a); }
    void dot(const DotArgs<float>& a) const { dot_f(a); }
    void dot(const DotArgs<double>& a) const { dot_d(a); }
    void add_rows(const AddRowsArgs<float>& a) const { add_rows_f(a); }
    void add_rows(const AddRowsArgs<double>& a) const { add_rows_d(a); }
    void pool2x2(const Pool2x2Args<float>& a) const { pool2x2_f(a); }
    void pool2x2(const Pool2x2Args<double>& a) const { pool2x2_d(a); }
    void adam(const AdamArgs<float>& a) const { adam_f(a); }
    void adam(const AdamArgs<double>& a) const { adam_d(a); }
    void sgd(const SgdArgs<float>& a) const { sgd_f(a); }
    void sgd(const SgdArgs<double>& a) const { sgd_d(a); }
    bool finite(const FiniteArgs<float>& a) const { return finite_f(a); }
    bool finite(const FiniteArgs<double>& a) const { return finite_d(a); }
    void bcast(const BcastArgs<float>& a) const { bcast_f(a); }
    void bcast(const BcastArgs<double>& a) const { bcast_d(a); }
    template <typename T> int lanes() const { return nr<T>() / 2; }
    template <typename T> int nr() const { return sizeof(T) == 4 ? nr_float : nr_double; }
};

const IsaKernels& isa();                   // the kernels in use
const char* isa_name();
bool set_isa(const char* name);            // testing aid: "avx512", "avx2", "generic"; false if unavailable
const char* const* available_isas(int* count);

// Which convolution algorithm to use; "auto" picks by shape. The others exist so tests reach every path.
enum class ConvAlgo { Auto, Direct, Im2col, Pixel };
ConvAlgo conv_algo();
void set_conv_algo(ConvAlgo a);

}  // namespace maqueta
