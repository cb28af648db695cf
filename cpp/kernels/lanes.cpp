// The batch-lane layout's kernels, threaded: every block of V images belongs to one thread
// (static contiguous ranges); dw and db are summed per thread and reduced in thread order
// (deterministic for a fixed thread count).
// Plain twin, the same math as loops in the order of the formula: cpp/plain/conv2d.cpp and cpp/plain/maxpool2d.cpp (NCHW).
#include <algorithm>

#include "maqueta/lanes.h"
#include "maqueta/runtime.h"

namespace maqueta {

template <typename T>
static void pack_or_unpack(T* flat, T* lanes, int64_t N, int64_t E, bool to_lanes, const IsaKernels& kern) {
    const int64_t V = kern.lanes<T>();
    const int64_t B = (N + V - 1) / V;
    const int teams = team_size(B);
#pragma omp parallel num_threads(teams)
    {
        const Range r = range_of(B, team_threads(), thread_index());
        kern.lane_pack(LanePackArgs<T>{.N = N, .E = E, .b0 = r.begin, .b1 = r.end, .flat = flat, .lanes = lanes,
                                       .to_lanes = to_lanes});
    }
}

template <typename T>
void lanes_pack(T* lanes, const T* flat, int64_t N, int64_t E, const IsaKernels& kern) {
    pack_or_unpack(const_cast<T*>(flat), lanes, N, E, true, kern);
}

template <typename T>
void lanes_unpack(T* flat, const T* lanes, int64_t N, int64_t E, const IsaKernels& kern) {
    pack_or_unpack(flat, const_cast<T*>(lanes), N, E, false, kern);
}

template <typename T>
void lanes_conv2d_forward(T* y, typename LaneCode<T>::type* code, const T* x, const T* w, const T* b,
                          const Conv2dDims& d, bool relu, const IsaKernels& kern) {
    const int64_t V = kern.lanes<T>();
    const int64_t K = d.C * d.KH * d.KW;
    const int teams = team_size(d.N);
    Layout shared, mine;
    const Slot at_wp = shared.add<T>(K * d.O);
    const Slot at_rows = mine.add<T>(code ? d.O * 2 * d.OW * V : 0);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* wp = carve<T>(ws, at_wp);   // w as [C][KH][KW][O]
    for (int64_t o = 0; o < d.O; ++o)
        for (int64_t k = 0; k < K; ++k) wp[k * d.O + o] = w[o * K + k];
    // pooled, y and code are [B][O][OH/2][OW/2] lanes
    const int64_t out_block = d.O * (code ? (d.OH / 2) * (d.OW / 2) : d.OH * d.OW) * V;
#pragma omp parallel num_threads(teams)
    {
        const int t = thread_index();
        const Range r = range_of(d.N, team_threads(), t);
        T* rows = code ? carve<T>(ws + shared.size() + t * mine.size(), at_rows) : nullptr;
        kern.lane_conv(LaneConvArgs<T>{.B = r.end - r.begin, .C = d.C, .H = d.H, .W = d.W, .O = d.O, .KH = d.KH,
                                       .KW = d.KW, .OH = d.OH, .OW = d.OW, .x = x + r.begin * d.C * d.H * d.W * V,
                                       .wp = wp, .bias = b, .relu = relu, .y = y + r.begin * out_block,
                                       .code = code ? code + r.begin * out_block : nullptr, .rows = rows});
    }
}

template <typename T>
void lanes_conv2d_backward(T* dx, T* dw, T* db, int64_t* bad_codes, const T* dy, const typename LaneCode<T>::type* code,
                           const T* relu_y, const T* x, const T* w, const Conv2dDims& d, bool relu_input,
                           const IsaKernels& kern) {
    const int64_t V = kern.lanes<T>();
    const int64_t K = d.C * d.KH * d.KW;
    const int teams = team_size(d.N);
    Layout shared, mine;
    const Slot at_wq = shared.add<T>(dx ? K * d.O : 0), at_toff = shared.add<int64_t>(K),
               at_parts = shared.add<T*>(teams);
    const Slot at_part = mine.add<T>(d.O * K + d.O);
    const Slot at_grad = mine.add<T>(code ? d.O * d.OH * d.OW * V : 0);
    unsigned char* ws = static_cast<unsigned char*>(Workspace::get(Layout::total(shared, teams, mine)));
    T* wq = carve<T>(ws, at_wq);        // w as [KH][KW][O][C]
    int64_t* toff = carve<int64_t>(ws, at_toff);
    T** parts = carve<T*>(ws, at_parts);
    for (int t = 0; t < teams; ++t) parts[t] = carve<T>(ws + shared.size() + t * mine.size(), at_part);
    if (dx)
        for (int64_t o = 0; o < d.O; ++o)
            for (int64_t c = 0; c < d.C; ++c)
                for (int64_t kh = 0; kh < d.KH; ++kh)
                    for (int64_t kw = 0; kw < d.KW; ++kw)
                        wq[((kh * d.KW + kw) * d.O + o) * d.C + c] = w[((o * d.C + c) * d.KH + kh) * d.KW + kw];
    for (int64_t c = 0, k = 0; c < d.C; ++c)
        for (int64_t kh = 0; kh < d.KH; ++kh)
            for (int64_t kw = 0; kw < d.KW; ++kw, ++k) toff[k] = ((c * d.H + kh) * d.W + kw) * V;
    int64_t bad = 0;
#pragma omp parallel num_threads(teams) reduction(+ : bad)
    {
        const int t = thread_index(), ran = team_threads();
        const Range r = range_of(d.N, ran, t);
        T* part = parts[t];
        std::fill(part, part + d.O * K + d.O, T(0));
        const int64_t in_block = d.C * d.H * d.W * V, out_block = d.O * d.OH * d.OW * V;
        const auto run = [&](int64_t b0, int64_t b1, const T* grad) {   // dy of blocks [b0, b1) at grad
            kern.lane_dw(LaneDwArgs<T>{.B = b1 - b0, .C = d.C, .H = d.H, .W = d.W, .O = d.O, .K = K, .OH = d.OH,
                                       .OW = d.OW, .x = x + b0 * in_block, .dy = grad, .toff = toff, .dw = part,
                                       .db = part + d.O * K});
            if (dx)
                kern.lane_dx(LaneDxArgs<T>{.B = b1 - b0, .C = d.C, .H = d.H, .W = d.W, .O = d.O, .KH = d.KH,
                                           .KW = d.KW, .OH = d.OH, .OW = d.OW, .dy = grad, .wq = wq,
                                           .relu_x = relu_input ? x + b0 * in_block : nullptr,
                                           .dx = dx + b0 * in_block});
        };
        if (!code) {
            if (r.end > r.begin) run(r.begin, r.end, dy + r.begin * out_block);
        } else {
            // Through the pool, a block at a time: its full-size gradient goes to a scratch block
            // that stays in L2 while dw and dx read it, instead of a batch-sized array in memory.
            T* grad = carve<T>(ws + shared.size() + t * mine.size(), at_grad);
            const int64_t pooled = d.O * (d.OH / 2) * (d.OW / 2) * V;
            for (int64_t b = r.begin; b < r.end; ++b) {
                kern.lane_unpool(LaneUnpoolArgs<T>{.planes = d.O, .H = d.OH, .W = d.OW, .OH = d.OH / 2,
                                                   .OW = d.OW / 2, .dy = dy + b * pooled, .code = code + b * pooled,
                                                   .relu_y = relu_y ? relu_y + b * pooled : nullptr, .dx = grad,
                                                   .bad = &bad});
                run(b, b + 1, grad);
            }
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t e = 0; e < d.O * K + d.O; ++e) {
            T s = parts[0][e];
            for (int u = 1; u < ran; ++u) s += parts[u][e];
            if (e < d.O * K) dw[e] = s;
            else if (db) db[e - d.O * K] = s;
        }
    }
    *bad_codes = bad;
}

template <typename T>
void lanes_maxpool2x2_forward(T* y, typename LaneCode<T>::type* code, const T* x, const Pool2dDims& d, const IsaKernels& kern) {
    const int64_t V = kern.lanes<T>();
    const int64_t planes = d.N * d.C;
    const int teams = team_size(planes / 8 + 1);
#pragma omp parallel num_threads(teams)
    {
        const Range r = range_of(planes, team_threads(), thread_index());
        kern.lane_pool(LanePoolArgs<T>{.planes = r.end - r.begin, .H = d.H, .W = d.W, .OH = d.OH, .OW = d.OW,
                                       .x = x + r.begin * d.H * d.W * V, .y = y + r.begin * d.OH * d.OW * V,
                                       .code = code + r.begin * d.OH * d.OW * V});
    }
}

template <typename T>
void lanes_maxpool2x2_backward(T* dx, int64_t* bad_codes, const T* dy, const typename LaneCode<T>::type* code,
                               const T* relu_y, const Pool2dDims& d, const IsaKernels& kern) {
    const int64_t V = kern.lanes<T>();
    const int64_t planes = d.N * d.C, out = d.OH * d.OW * V;
    const int teams = team_size(planes / 8 + 1);
    int64_t bad = 0;
#pragma omp parallel num_threads(teams) reduction(+ : bad)
    {
        const Range r = range_of(planes, team_threads(), thread_index());
        kern.lane_unpool(LaneUnpoolArgs<T>{.planes = r.end - r.begin, .H = d.H, .W = d.W, .OH = d.OH, .OW = d.OW,
                                           .dy = dy + r.begin * out, .code = code + r.begin * out,
                                           .relu_y = relu_y ? relu_y + r.begin * out : nullptr,
                                           .dx = dx + r.begin * d.H * d.W * V, .bad = &bad});
    }
    *bad_codes = bad;
}

#define MAQUETA_INSTANTIATE(T)                                                                           \
    template void lanes_pack<T>(T*, const T*, int64_t, int64_t, const IsaKernels&);                      \
    template void lanes_unpack<T>(T*, const T*, int64_t, int64_t, const IsaKernels&);                    \
    template void lanes_conv2d_forward<T>(T*, typename LaneCode<T>::type*, const T*, const T*, const T*, \
                                          const Conv2dDims&, bool, const IsaKernels&);                   \
    template void lanes_conv2d_backward<T>(T*, T*, T*, int64_t*, const T*, const typename LaneCode<T>::type*, \
                                           const T*, const T*, const T*, const Conv2dDims&, bool,        \
                                           const IsaKernels&);                                           \
    template void lanes_maxpool2x2_forward<T>(T*, typename LaneCode<T>::type*, const T*, const Pool2dDims&, \
                                              const IsaKernels&);                                        \
    template void lanes_maxpool2x2_backward<T>(T*, int64_t*, const T*, const typename LaneCode<T>::type*, \
                                               const T*, const Pool2dDims&, const IsaKernels&);
MAQUETA_INSTANTIATE(float)
MAQUETA_INSTANTIATE(double)

}  // namespace maqueta
