// max-pool forward and backward.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/maxpool2d.cpp.
//
//   OH = (H - KH) / SH + 1,  OW = (W - KW) / SW + 1   (windows that do not fit are dropped)
//
// Parallel strategy: over the N*C planes; a plane's outputs and its dx belong to one thread.
#include <algorithm>

#include "maqueta/maxpool2d.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

// Does v replace the running maximum m? Strictly greater keeps the first of equal maxima; the
// first NaN replaces any number and is never replaced, so NaN propagates.
template <typename T>
inline bool beats(T v, T m) { return v > m || (v != v && m == m); }


template <typename T>
void pool_plane(T* y, int64_t* idx, const T* x, const Pool2dDims& d) {
    for (int64_t oh = 0; oh < d.OH; ++oh)
        for (int64_t ow = 0; ow < d.OW; ++ow) {
            const int64_t h0 = oh * d.SH, w0 = ow * d.SW;
            T m = x[h0 * d.W + w0];
            int64_t at = h0 * d.W + w0;
            for (int64_t kh = 0; kh < d.KH; ++kh) {
                const T* row = x + (h0 + kh) * d.W + w0;
                for (int64_t kw = 0; kw < d.KW; ++kw)
                    if (beats(row[kw], m)) {
                        m = row[kw];
                        at = (h0 + kh) * d.W + w0 + kw;
                    }
            }
            y[oh * d.OW + ow] = m;
            idx[oh * d.OW + ow] = at;
        }
}

}  // namespace

template <typename T>
void maxpool2d_forward(T* y, int64_t* idx, const T* x, const Pool2dDims& d, const IsaKernels& kern) {
    const int64_t planes = d.N * d.C, HW = d.H * d.W, OP = d.OH * d.OW;
    // LeNet's 2x2 / stride 2 runs branch-free and vectorised; any other window, the loop above
    const bool fast = d.KH == 2 && d.KW == 2 && d.SH == 2 && d.SW == 2 && d.W < (int64_t(1) << 30);
    const int teams = team_size(planes * OP / 4096 + 1);
#pragma omp parallel num_threads(teams)
    {
        const Range r = range_of(planes, team_threads(), thread_index());
        const int64_t p0 = r.begin, p1 = r.end;
        if (fast) {
            kern.pool2x2(Pool2x2Args<T>{.planes = p1 - p0, .H = d.H, .W = d.W, .OH = d.OH, .OW = d.OW,
                                        .y = y + p0 * OP, .idx = idx + p0 * OP, .x = x + p0 * HW});
        } else {
            for (int64_t p = p0; p < p1; ++p) pool_plane(y + p * OP, idx + p * OP, x + p * HW, d);
        }
    }
}

template <typename T>
int64_t maxpool2d_backward(T* dx, const T* dy, const int64_t* idx, const T* relu_y, const Pool2dDims& d) {
    const int64_t planes = d.N * d.C, HW = d.H * d.W, OP = d.OH * d.OW;
    int64_t outside = 0;   // indices found outside the plane (changed after the binding's check)
#pragma omp parallel for schedule(static) num_threads(team_size(planes * HW / 4096 + 1)) reduction(+ : outside)
    for (int64_t p = 0; p < planes; ++p) {
        T* dxp = dx + p * HW;
        const T* dyp = dy + p * OP;
        const int64_t* ip = idx + p * OP;
        std::fill(dxp, dxp + HW, T(0));
        for (int64_t q = 0; q < OP; ++q) {
            const int64_t at = ip[q];   // read once, checked, then used
            if ((uint64_t)at >= (uint64_t)HW) {
                ++outside;
                continue;
            }
            // the ReLU mask without a branch: half the windows of a ReLU'd input are often all zero
            dxp[at] += relu_y ? (relu_y[p * OP + q] > T(0) ? dyp[q] : T(0)) : dyp[q];
        }
    }
    return outside;
}

template void maxpool2d_forward<float>(float*, int64_t*, const float*, const Pool2dDims&, const IsaKernels&);
template void maxpool2d_forward<double>(double*, int64_t*, const double*, const Pool2dDims&, const IsaKernels&);
template int64_t maxpool2d_backward<float>(float*, const float*, const int64_t*, const float*, const Pool2dDims&);
template int64_t maxpool2d_backward<double>(double*, const double*, const int64_t*, const double*, const Pool2dDims&);

}  // namespace maqueta
