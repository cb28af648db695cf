// Plain max-pooling: each output is the largest value of its window; the gradient goes back to
// where that value was.
//
//   x (N, C, H, W) -> y (N, C, OH, OW), idx (N, C, OH, OW)
//   OH = (H - KH) / SH + 1,  OW = (W - KW) / SW + 1   (windows that do not fit are dropped)
//   y[n, c, i, j] = max over kh, kw of x[n, c, i*SH + kh, j*SW + kw]
//   idx[n, c, i, j] = (row * W + column) of that maximum within its (H, W) plane, as PyTorch
//
// Parallel strategy: over the N*C planes; a plane's outputs and its dx belong to one thread.
// The fast twin is cpp/kernels/maxpool2d.cpp.
#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

// --8<-- [start:maxpool2d_forward]
template <typename T>
void maxpool2d_forward(T* y,           // (N, C, OH, OW)
                       int64_t* idx,   // (N, C, OH, OW)
                       const T* x,     // (N, C, H, W)
                       const Pool2dDims& d) {
    const int64_t H = d.H, W = d.W, KH = d.KH, KW = d.KW, SH = d.SH, SW = d.SW, OH = d.OH, OW = d.OW;
#pragma omp parallel for num_threads(team_size(d.N * d.C))
    for (int64_t p = 0; p < d.N * d.C; ++p) {   // one (n, c) plane
        const T* xp = x + p * H * W;
        for (int64_t i = 0; i < OH; ++i)
            for (int64_t j = 0; j < OW; ++j) {
                int64_t best = (i * SH) * W + j * SW;   // the window's first pixel
                for (int64_t kh = 0; kh < KH; ++kh)
                    for (int64_t kw = 0; kw < KW; ++kw) {
                        const int64_t at = (i * SH + kh) * W + (j * SW + kw);
                        // strictly greater: the first of equal maxima wins. The first NaN wins
                        // over any number and stays, so NaN propagates (as np.argmax, PyTorch).
                        const bool nan_here = xp[at] != xp[at], nan_best = xp[best] != xp[best];
                        if (xp[at] > xp[best] || (nan_here && !nan_best)) best = at;
                    }
                y[p * OH * OW + i * OW + j] = xp[best];
                idx[p * OH * OW + i * OW + j] = best;
            }
    }
}
// --8<-- [end:maxpool2d_forward]

// dx[n, c, idx[n, c, i, j]] += dy[n, c, i, j]: only the maximum influenced y, so only it gets the
// gradient, once per window that chose it (overlapping windows may share one and add up).
// With relu_y (the forward output, when x came out of a ReLU), a window whose maximum was <= 0
// passes nothing: the ReLU's gradient at the maximum. Indices outside the plane are skipped and
// counted, so that the binding can raise (they were checked before; this guards memory).
// --8<-- [start:maxpool2d_backward]
template <typename T>
int64_t maxpool2d_backward(T* dx,              // (N, C, H, W)
                           const T* dy,        // (N, C, OH, OW)
                           const int64_t* idx, // (N, C, OH, OW)
                           const T* relu_y,    // (N, C, OH, OW) or nullptr
                           const Pool2dDims& d) {
    const int64_t HW = d.H * d.W, OHW = d.OH * d.OW;
    int64_t outside = 0;
#pragma omp parallel for num_threads(team_size(d.N * d.C)) reduction(+ : outside)
    for (int64_t p = 0; p < d.N * d.C; ++p) {
        for (int64_t at = 0; at < HW; ++at) dx[p * HW + at] = T(0);
        for (int64_t q = 0; q < OHW; ++q) {     // q = i * OW + j
            const int64_t at = idx[p * OHW + q];
            if (at < 0 || at >= HW) {
                ++outside;
                continue;
            }
            if (relu_y && !(relu_y[p * OHW + q] > T(0))) continue;
            dx[p * HW + at] += dy[p * OHW + q];
        }
    }
    return outside;
}
// --8<-- [end:maxpool2d_backward]

template void maxpool2d_forward<float>(float*, int64_t*, const float*, const Pool2dDims&);
template void maxpool2d_forward<double>(double*, int64_t*, const double*, const Pool2dDims&);
template int64_t maxpool2d_backward<float>(float*, const float*, const int64_t*, const float*, const Pool2dDims&);
template int64_t maxpool2d_backward<double>(double*, const double*, const int64_t*, const double*, const Pool2dDims&);

}  // namespace plain
}  // namespace maqueta
