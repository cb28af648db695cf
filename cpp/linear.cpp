// Dense (fully connected) layer forward and backward: y = x w^T + b.
//
// Parallel strategy: each output matrix is cut into one block per thread along whichever of its
// dimensions has more tiles; every output element is one fixed-order sum, so the result does not
// depend on the thread count.
#include <algorithm>

#include "maqueta/kernels.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

struct Split {
    bool by_rows;   // cut along rows (else along columns)
    int parts;
    int64_t step;   // rows or columns per part, a multiple of the tile
};

// Cut an M x N output, each element a sum of K products, into at most num_threads() blocks of
// whole tiles (tm rows, tn columns), and into one block when it is too small to share.
Split split_output(int64_t M, int64_t N, int64_t K, int64_t tm, int64_t tn) {
    constexpr int64_t kMinProducts = 1 << 16;  // per thread
    const int64_t row_tiles = (M + tm - 1) / tm, col_tiles = (N + tn - 1) / tn;
    const double products = (double)M * (double)N * (double)K;  // double: no overflow
    const int64_t work_parts = (int64_t)std::min<double>(1024.0, std::max(1.0, products / kMinProducts));
    const bool by_rows = row_tiles >= col_tiles;
    const int64_t tiles = by_rows ? row_tiles : col_tiles;
    const int parts = (int)std::max<int64_t>(1, std::min<int64_t>({(int64_t)num_threads(), tiles, work_parts}));
    const int64_t per = (tiles + parts - 1) / parts;
    return Split{by_rows, parts, per * (by_rows ? tm : tn)};
}

template <typename T, typename F>
void pack_panels(T* dst, int64_t M, int64_t K, int MR, F a) {
    for (int64_t i0 = 0; i0 < M; i0 += MR) {
        const int64_t mr = std::min<int64_t>(MR, M - i0);
        T* p = dst + i0 * K;
        for (int64_t k = 0; k < K; ++k)
            for (int64_t i = 0; i < mr; ++i) p[k * mr + i] = a(i0 + i, k);
    }
}

}  // namespace

template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, int64_t N, int64_t IN, int64_t OUT, bool relu) {
    const IsaKernels& kern = isa();
    const Split s = split_output(N, OUT, IN, 4, 6);
#pragma omp parallel for schedule(static) num_threads(s.parts)
    for (int part = 0; part < s.parts; ++part) {
        int64_t r0 = 0, r1 = N, c0 = 0, c1 = OUT;
        if (s.by_rows) { r0 = std::min(N, part * s.step); r1 = std::min(N, r0 + s.step); }
        else           { c0 = std::min(OUT, part * s.step); c1 = std::min(OUT, c0 + s.step); }
        if (r0 >= r1 || c0 >= c1) continue;
        // y[n][o] = <x[n], w[o]>
        kern.dot(DotArgs<T>{r1 - r0, c1 - c0, IN, x + r0 * IN, nullptr, IN, w + c0 * IN, nullptr, IN,
                            y + r0 * OUT + c0, OUT, false});
        for (int64_t n = r0; n < r1; ++n) {
            T* row = y + n * OUT;
            for (int64_t o = c0; o < c1; ++o) {
                T v = row[o] + (b ? b[o] : T(0));
                row[o] = relu ? std::max(v, T(0)) : v;
            }
        }
    }
}

template <typename T>
void linear_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int64_t N, int64_t IN, int64_t OUT,
                     bool relu_input) {
    const IsaKernels& kern = isa();
    const int MR = kern.mr, NR = kern.nr<T>();
    Layout shared;
    const Slot at_dyp = shared.add<T>(N * OUT), at_dyt = shared.add<T>(OUT * N);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(shared.size()));
    T* dy_panels = carve<T>(ws, at_dyp);   // dy as A of dx = dy w:   rows n, inner o
    T* dyt_panels = carve<T>(ws, at_dyt);  // dy^T as A of dw = dy^T x: rows o, inner n
    if (dx) pack_panels(dy_panels, N, OUT, MR, [&](int64_t n, int64_t o) { return dy[n * OUT + o]; });
    pack_panels(dyt_panels, OUT, N, MR, [&](int64_t o, int64_t n) { return dy[n * OUT + o]; });

    // dw[o][i] = sum_n dy[n][o] x[n][i]
    {
        const Split s = split_output(OUT, IN, N, MR, NR);
#pragma omp parallel for schedule(static) num_threads(s.parts)
        for (int part = 0; part < s.parts; ++part) {
            int64_t r0 = 0, r1 = OUT, c0 = 0, c1 = IN;
            if (s.by_rows) { r0 = std::min(OUT, part * s.step); r1 = std::min(OUT, r0 + s.step); }
            else           { c0 = std::min(IN, part * s.step); c1 = std::min(IN, c0 + s.step); }
            if (r0 >= r1 || c0 >= c1) continue;
            kern.rows(RowsArgs<T>{r1 - r0, c1 - c0, N, dyt_panels + r0 * N, x + c0, nullptr, IN, false,
                                  dw + r0 * IN + c0, IN});
        }
    }
    // dx[n][i] = sum_o dy[n][o] w[o][i]
    if (dx) {
        const Split s = split_output(N, IN, OUT, MR, NR);
#pragma omp parallel for schedule(static) num_threads(s.parts)
        for (int part = 0; part < s.parts; ++part) {
            int64_t r0 = 0, r1 = N, c0 = 0, c1 = IN;
            if (s.by_rows) { r0 = std::min(N, part * s.step); r1 = std::min(N, r0 + s.step); }
            else           { c0 = std::min(IN, part * s.step); c1 = std::min(IN, c0 + s.step); }
            if (r0 >= r1 || c0 >= c1) continue;
            kern.rows(RowsArgs<T>{r1 - r0, c1 - c0, OUT, dy_panels + r0 * OUT, w + c0, nullptr, IN, false,
                                  dx + r0 * IN + c0, IN});
            if (relu_input)   // dx through the ReLU that produced x
                for (int64_t n = r0; n < r1; ++n)
                    for (int64_t i = c0; i < c1; ++i) dx[n * IN + i] = x[n * IN + i] > T(0) ? dx[n * IN + i] : T(0);
        }
    }
    if (db)
        for (int64_t o = 0; o < OUT; ++o) {
            T s = 0;
            for (int64_t n = 0; n < N; ++n) s += dy[n * OUT + o];
            db[o] = s;
        }
}

template void linear_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, bool);
template void linear_forward<double>(double*, const double*, const double*, const double*, int64_t, int64_t, int64_t, bool);
template void linear_backward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, bool);
template void linear_backward<double>(double*, double*, double*, const double*, const double*, const double*, int64_t, int64_t, int64_t, bool);

}  // namespace maqueta
