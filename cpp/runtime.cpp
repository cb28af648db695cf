// Threads, workspaces and the run-time choice of micro-kernels.
#include "maqueta/runtime.h"

#include <atomic>
#include <cstring>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define MAQUETA_ASAN 1
#endif

namespace maqueta {

#define MAQUETA_DECLARE_ISA(ns)                                  \
    namespace ns {                                               \
    extern const int rows_mr, rows_nr_float, rows_nr_double;     \
    void rows_f(const RowsArgs<float>&);                         \
    void rows_d(const RowsArgs<double>&);                        \
    void dot_f(const DotArgs<float>&);                           \
    void dot_d(const DotArgs<double>&);                          \
    void add_rows_f(const AddRowsArgs<float>&);                  \
    void add_rows_d(const AddRowsArgs<double>&);                 \
    void pool2x2_f(const Pool2x2Args<float>&);                   \
    void pool2x2_d(const Pool2x2Args<double>&);                  \
    void adam_f(const AdamArgs<float>&);                         \
    void adam_d(const AdamArgs<double>&);                        \
    void sgd_f(const SgdArgs<float>&);                           \
    void sgd_d(const SgdArgs<double>&);                          \
    bool finite_f(const FiniteArgs<float>&);                     \
    bool finite_d(const FiniteArgs<double>&);                    \
    void bcast_f(const BcastArgs<float>&);                       \
    void bcast_d(const BcastArgs<double>&);                      \
    void lane_conv_f(const LaneConvArgs<float>&);                \
    void lane_conv_d(const LaneConvArgs<double>&);               \
    void lane_dw_f(const LaneDwArgs<float>&);                    \
    void lane_dw_d(const LaneDwArgs<double>&);                   \
    void lane_dx_f(const LaneDxArgs<float>&);                    \
    void lane_dx_d(const LaneDxArgs<double>&);                   \
    void lane_pool_f(const LanePoolArgs<float>&);                \
    void lane_pool_d(const LanePoolArgs<double>&);               \
    void lane_unpool_f(const LaneUnpoolArgs<float>&);            \
    void lane_unpool_d(const LaneUnpoolArgs<double>&);           \
    void lane_pack_f(const LanePackArgs<float>&);                \
    void lane_pack_d(const LanePackArgs<double>&);               \
    }
MAQUETA_DECLARE_ISA(isa_generic)
#ifdef MAQUETA_HAVE_AVX2
MAQUETA_DECLARE_ISA(isa_avx2)
#endif
#ifdef MAQUETA_HAVE_AVX512
MAQUETA_DECLARE_ISA(isa_avx512)
#endif

// ---------------------------------------------------------------------------------------------
// Threads
static int default_threads() {
#ifdef MAQUETA_OPENMP
    // At import time this is OMP_NUM_THREADS when set, else the processors this process may use.
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}

static std::atomic<int> g_threads{default_threads()};

int num_threads() { return g_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) {
#ifdef MAQUETA_OPENMP
    g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed);
#else
    (void)n;  // a build without OpenMP always runs on one thread
#endif
}
bool openmp_enabled() {
#ifdef MAQUETA_OPENMP
    return true;
#else
    return false;
#endif
}

// ---------------------------------------------------------------------------------------------
// Workspace: one growing block per calling thread.
namespace {
struct Block {
    void* ptr = nullptr;
    std::size_t size = 0;
    ~Block() { release(); }
    void release() {
#ifdef MAQUETA_ASAN
        if (ptr) __asan_unpoison_memory_region(ptr, size);
#endif
        if (ptr) ::operator delete(ptr, std::align_val_t(64));
        ptr = nullptr;
        size = 0;
    }
};
thread_local Block t_block;
}  // namespace

void* Workspace::get(std::size_t bytes) {
    if (bytes == 0) bytes = 64;
    if (bytes > t_block.size) {
        if (bytes > (std::size_t(1) << 50)) throw std::bad_alloc();
        std::size_t want = (bytes + 4095) & ~std::size_t(4095);
        t_block.release();
        t_block.ptr = ::operator new(want, std::align_val_t(64));  // may throw std::bad_alloc
        t_block.size = want;
    }
#ifdef MAQUETA_ASAN
    __asan_poison_memory_region(t_block.ptr, t_block.size);
#endif
    return t_block.ptr;
}

void unpoison(const void* p, std::size_t bytes) {
#ifdef MAQUETA_ASAN
    __asan_unpoison_memory_region(p, bytes);
#else
    (void)p;
    (void)bytes;
#endif
}

// ---------------------------------------------------------------------------------------------
// Instruction sets
#define MAQUETA_ISA_ENTRY(label, ns) \
    IsaKernels{label, ns::rows_mr, ns::rows_nr_float, ns::rows_nr_double, ns::rows_f, ns::rows_d, \
               ns::dot_f, ns::dot_d, ns::add_rows_f, ns::add_rows_d, ns::pool2x2_f, ns::pool2x2_d, \
               ns::adam_f, ns::adam_d, ns::sgd_f, ns::sgd_d, ns::finite_f, ns::finite_d, ns::bcast_f, ns::bcast_d, \
               ns::lane_conv_f, ns::lane_conv_d, ns::lane_dw_f, ns::lane_dw_d, ns::lane_dx_f, ns::lane_dx_d, \
               ns::lane_pool_f, ns::lane_pool_d, ns::lane_unpool_f, ns::lane_unpool_d, ns::lane_pack_f, ns::lane_pack_d}

namespace {
struct IsaList {
    IsaKernels items[3];
    const char* names[3];
    int count = 0;
    void add(const IsaKernels& k) {
        items[count] = k;
        names[count] = k.name;
        ++count;
    }
};

IsaList make_isa_list() {
    IsaList list{};
    // Best first.
#if defined(MAQUETA_HAVE_AVX512) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        list.add(MAQUETA_ISA_ENTRY("avx512", isa_avx512));
#endif
#if defined(MAQUETA_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        list.add(MAQUETA_ISA_ENTRY("avx2", isa_avx2));
#endif
#ifdef MAQUETA_NATIVE_BUILD
    list.add(MAQUETA_ISA_ENTRY("native", isa_generic));
#else
    list.add(MAQUETA_ISA_ENTRY("generic", isa_generic));
#endif
    return list;
}

const IsaList& isa_list() {
    static const IsaList list = make_isa_list();
    return list;
}

std::atomic<const IsaKernels*> g_isa{nullptr};
std::atomic<int> g_conv_algo{(int)ConvAlgo::Auto};
}  // namespace

const IsaKernels& isa() {
    const IsaKernels* k = g_isa.load(std::memory_order_acquire);
    if (!k) {
        k = &isa_list().items[0];
        g_isa.store(k, std::memory_order_release);
    }
    return *k;
}

const char* isa_name() { return isa().name; }

bool set_isa(const char* name) {
    const IsaList& list = isa_list();
    for (int i = 0; i < list.count; ++i)
        if (std::strcmp(list.items[i].name, name) == 0) {
            g_isa.store(&list.items[i], std::memory_order_release);
            return true;
        }
    return false;
}

const char* const* available_isas(int* count) {
    *count = isa_list().count;
    return isa_list().names;
}

ConvAlgo conv_algo() { return (ConvAlgo)g_conv_algo.load(std::memory_order_relaxed); }
void set_conv_algo(ConvAlgo a) { g_conv_algo.store((int)a, std::memory_order_relaxed); }

}  // namespace maqueta
