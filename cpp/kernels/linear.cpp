// Dense (fully connected) layer forward and backward: y = x w^T + b.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/linear.cpp.
//
// The three products run on the broadcast micro-kernel, vectorised along the output's columns:
//   y[n][o]  = sum_i x[n][i] * wT[i][o]     rows of x broadcast; w transposed once per call
//              (for fewer than kDotRows rows, dot products of x's and w's rows instead: the
//              transposition costs more than it saves there; measured crossover ~32-48 rows)
//   dx[n][i] = sum_o dy[n][o] * w[o][i]     rows of dy broadcast against w's rows as they are
//   dw[o][i] = sum_n dy[n][o] * x[n][i]     columns of dy broadcast (stride OUT) against x's rows
// Parallel strategy: each output matrix is cut into one block of rows per thread; every output
// element is one fixed-order sum, so the result does not depend on the thread count.
#include <algorithm>

#include "maqueta/linear.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

// Threads for an M x N output of K-term sums: one per 64k multiply-adds, at most one per row.
int parts_for(int64_t M, int64_t N, int64_t K) {
    const double products = (double)M * (double)N * (double)K;   // double: no overflow
    const int64_t by_work = (int64_t)std::min<double>(4096.0, std::max(1.0, products / 65536.0));
    return (int)std::max<int64_t>(1, std::min<int64_t>({(int64_t)num_threads(), M, by_work}));
}

}  // namespace

constexpr int64_t kDotRows = 48;
constexpr int64_t kTransposeTile = 16;

template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, int64_t N, int64_t IN, int64_t OUT,
                    const OutputActivation& act, const IsaKernels& kern) {
    const bool relu = act.relu();   // in the same pass; a leaky ReLU or ELU passes over each part's output after
    if (N < kDotRows) {
        const int parts = std::max(1, std::min<int>(parts_for(OUT, N, IN), (int)((OUT + 5) / 6)));
#pragma omp parallel for schedule(static) num_threads(parts)
        for (int part = 0; part < parts; ++part) {   // split the columns: N may be 1
            const int64_t c0 = part * OUT / parts, c1 = (part + 1) * OUT / parts;
            kern.dot(DotArgs<T>{.M = N, .N = c1 - c0, .Q = IN, .a = x, .aoff = nullptr, .lda = IN, .b = w + c0 * IN,
                                .boff = nullptr, .ldb = IN, .c = y + c0, .ldc = OUT, .accumulate = false});
            for (int64_t n = 0; n < N; ++n)
                for (int64_t o = c0; o < c1; ++o) {
                    const T v = y[n * OUT + o] + (b ? b[o] : T(0));
                    y[n * OUT + o] = relu ? std::max(v, T(0)) : v;
                }
            if (act.elementwise())
                for (int64_t n = 0; n < N; ++n) apply_output_activation(y + n * OUT + c0, c1 - c0, act, kern);
        }
        return;
    }
    const int L = kern.lanes<T>();
    const int64_t OUTP = (OUT + L - 1) / L * L;   // w^T rows padded to whole vectors
    Layout shared;
    const Slot at_wt = shared.add<T>(IN * OUTP), at_rows = shared.add<const T*>(N);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, 0, shared)));
    T* wt = carve<T>(ws, at_wt);
    const T** rows = carve<const T*>(ws, at_rows);
    for (int64_t n = 0; n < N; ++n) rows[n] = x + n * IN;
    const int parts = parts_for(N, OUT, IN);
#pragma omp parallel num_threads(parts)
    {
        // w^T in blocks of kTransposeTile inputs: a block reads one short run of each row of w
        // and writes its rows of wt in order (reading w by columns misses the cache on every value
        // once a row is a few kB)
#pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < IN; i0 += kTransposeTile) {
            const int64_t i1 = std::min(IN, i0 + kTransposeTile);
            kern.transpose(TransposeArgs<T>{.rows = OUT, .cols = i1 - i0, .src = w + i0, .lds = IN,
                                            .dst = wt + i0 * OUTP, .ldd = OUTP});
            for (int64_t i = i0; i < i1; ++i) std::fill(wt + i * OUTP + OUT, wt + (i + 1) * OUTP, T(0));
        }
#pragma omp for schedule(static)
        for (int part = 0; part < parts; ++part) {
            const int64_t r0 = part * N / parts, r1 = (part + 1) * N / parts;
            kern.bcast(BcastArgs<T>{.M = r1 - r0, .N = OUT, .K = IN, .arows = rows + r0, .aoff = nullptr,
                                    .astride = 1, .b = wt, .ldb = OUTP, .b_readable = OUTP, .c = y + r0 * OUT,
                                    .ldc = OUT, .cstride = 1, .bias = b, .relu = relu});
            apply_output_activation(y + r0 * OUT, (r1 - r0) * OUT, act, kern);
        }
    }
}

template <typename T>
void linear_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int64_t N, int64_t IN, int64_t OUT,
                     bool relu_input, const IsaKernels& kern) {
    Layout shared;
    const Slot at_dyrows = shared.add<const T*>(N), at_dycols = shared.add<const T*>(OUT);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, 0, shared)));
    const T** dy_rows = carve<const T*>(ws, at_dyrows);
    const T** dy_cols = carve<const T*>(ws, at_dycols);
    for (int64_t n = 0; n < N; ++n) dy_rows[n] = dy + n * OUT;
    for (int64_t o = 0; o < OUT; ++o) dy_cols[o] = dy + o;

    // dw[o][i] = sum_n dy[n][o] x[n][i]
    {
        const int parts = parts_for(OUT, IN, N);
#pragma omp parallel for schedule(static) num_threads(parts)
        for (int part = 0; part < parts; ++part) {
            const int64_t r0 = part * OUT / parts, r1 = (part + 1) * OUT / parts;
            kern.bcast(BcastArgs<T>{.M = r1 - r0, .N = IN, .K = N, .arows = dy_cols + r0, .aoff = nullptr,
                                    .astride = OUT, .b = x, .ldb = IN, .b_readable = IN, .c = dw + r0 * IN, .ldc = IN,
                                    .cstride = 1});
        }
    }
    // dx[n][i] = sum_o dy[n][o] w[o][i], zero where x <= 0 after a ReLU
    if (dx) {
        const int parts = parts_for(N, IN, OUT);
#pragma omp parallel for schedule(static) num_threads(parts)
        for (int part = 0; part < parts; ++part) {
            const int64_t r0 = part * N / parts, r1 = (part + 1) * N / parts;
            kern.bcast(BcastArgs<T>{.M = r1 - r0, .N = IN, .K = OUT, .arows = dy_rows + r0, .aoff = nullptr,
                                    .astride = 1, .b = w, .ldb = IN, .b_readable = IN, .c = dx + r0 * IN, .ldc = IN,
                                    .cstride = 1});
            if (relu_input)
                for (int64_t e = r0 * IN; e < r1 * IN; ++e) dx[e] = x[e] > T(0) ? dx[e] : T(0);
        }
    }
    if (db) {   // n outer, o inner: vectorises, and each db[o] still sums in order of n
        std::fill(db, db + OUT, T(0));
        for (int64_t n = 0; n < N; ++n)
            for (int64_t o = 0; o < OUT; ++o) db[o] += dy[n * OUT + o];
    }
}

#define MAQUETA_INSTANTIATE(T)                                                                                \
    template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,               \
                                    const OutputActivation&, const IsaKernels&);                               \
    template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, bool, \
                                     const IsaKernels&);
MAQUETA_INSTANTIATE(float)
MAQUETA_INSTANTIATE(double)

}  // namespace maqueta
