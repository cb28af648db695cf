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

// Each instruction set's entries of the micro-kernel table, and the table itself (table(label)),
// generated from the one list MAQUETA_MICROKERNELS.
#define MAQUETA_DECLARE_MICROKERNEL(op, Args, Ret) \
    Ret op##_f(const Args<float>&);                \
    Ret op##_d(const Args<double>&);
#define MAQUETA_POINT_MICROKERNEL(op, Args, Ret) \
    k.op##_f = op##_f;                           \
    k.op##_d = op##_d;
#define MAQUETA_DECLARE_ISA(ns)                                         \
    namespace ns {                                                      \
    extern const int rows_mr, rows_nr_float, rows_nr_double;            \
    MAQUETA_MICROKERNELS(MAQUETA_DECLARE_MICROKERNEL)                   \
    static IsaKernels table(const char* label) {                        \
        IsaKernels k{.name = label, .mr = rows_mr,                      \
                     .nr_float = rows_nr_float, .nr_double = rows_nr_double}; \
        MAQUETA_MICROKERNELS(MAQUETA_POINT_MICROKERNEL)                 \
        return k;                                                       \
    }                                                                   \
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
        list.add(isa_avx512::table("avx512"));
#endif
#if defined(MAQUETA_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        list.add(isa_avx2::table("avx2"));
#endif
#ifdef MAQUETA_NATIVE_BUILD
    list.add(isa_generic::table("native"));
#else
    list.add(isa_generic::table("generic"));
#endif
    return list;
}

const IsaList& isa_list() {
    static const IsaList list = make_isa_list();
    return list;
}

std::atomic<const IsaKernels*> g_isa{nullptr};
}  // namespace

const IsaKernels& isa() {
    const IsaKernels* k = g_isa.load(std::memory_order_acquire);
    if (!k) {
        k = &isa_list().items[0];
        g_isa.store(k, std::memory_order_release);
    }
    return *k;
}

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

}  // namespace maqueta
