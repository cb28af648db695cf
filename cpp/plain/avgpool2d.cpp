// Plain average pooling: each output is the mean of its window; the gradient is shared equally
// among the window's pixels.
//
//   x (N, C, H, W) seen as P = N*C planes (H, W) -> y (P, OH, OW)
//   OH = (H + 2*PH - KH) / SH + 1,  OW = (W + 2*PW - KW) / SW + 1
//   y[p, i, j] = (1 / (KH*KW)) * sum over kh, kw of x[p, i*SH + kh - PH, j*SW + kw - PW]
// where x is zero outside the image: the padding counts in the average (PyTorch's
// count_include_pad=True), so every window divides by KH*KW. GlobalAvgPool2D is the window (H, W).
//
// Parallel strategy: over the planes p; a plane's outputs and its dx belong to one thread.
// The fast twin is cpp/kernels/avgpool2d.cpp.
#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

// --8<-- [start:avgpool2d_forward]
template <typename T>
void avgpool2d_forward(T* y,           // (P, OH, OW)
                       const T* x,     // (P, H, W)
                       const AvgPoolDims& d) {
    const int64_t H = d.H, W = d.W, KH = d.KH, KW = d.KW, SH = d.SH, SW = d.SW, PH = d.PH, PW = d.PW;
    const int64_t OH = d.OH, OW = d.OW;
#pragma omp parallel for num_threads(team_size(d.P))
    for (int64_t p = 0; p < d.P; ++p)
        for (int64_t i = 0; i < OH; ++i)
            for (int64_t j = 0; j < OW; ++j) {
                T sum = 0;
                for (int64_t kh = 0; kh < KH; ++kh)
                    for (int64_t kw = 0; kw < KW; ++kw) {
                        const int64_t h = i * SH + kh - PH, v = j * SW + kw - PW;   // input row, column
                        if (h < 0 || h >= H || v < 0 || v >= W) continue;          // in the zero padding
                        sum += x[(p * H + h) * W + v];
                    }
                y[(p * OH + i) * OW + j] = sum / (T)(KH * KW);
            }
}
// --8<-- [end:avgpool2d_forward]

// y[p, i, j] depends on each pixel of its window with weight 1 / (KH*KW), so
//   dx[p, h, v] = sum over the windows (i, j) that cover (h, v) of dy[p, i, j] / (KH*KW)
// computed window by window: each window adds its share to its pixels (the padding's is dropped).
// --8<-- [start:avgpool2d_backward]
template <typename T>
void avgpool2d_backward(T* dx,         // (P, H, W)
                        const T* dy,   // (P, OH, OW)
                        const AvgPoolDims& d) {
    const int64_t H = d.H, W = d.W, KH = d.KH, KW = d.KW, SH = d.SH, SW = d.SW, PH = d.PH, PW = d.PW;
    const int64_t OH = d.OH, OW = d.OW;
#pragma omp parallel for num_threads(team_size(d.P))
    for (int64_t p = 0; p < d.P; ++p) {
        for (int64_t at = 0; at < H * W; ++at) dx[p * H * W + at] = T(0);
        for (int64_t i = 0; i < OH; ++i)
            for (int64_t j = 0; j < OW; ++j) {
                const T share = dy[(p * OH + i) * OW + j] / (T)(KH * KW);
                for (int64_t kh = 0; kh < KH; ++kh)
                    for (int64_t kw = 0; kw < KW; ++kw) {
                        const int64_t h = i * SH + kh - PH, v = j * SW + kw - PW;
                        if (h < 0 || h >= H || v < 0 || v >= W) continue;   // padding: nobody to pass it to
                        dx[(p * H + h) * W + v] += share;
                    }
            }
    }
}
// --8<-- [end:avgpool2d_backward]

template void avgpool2d_forward<float>(float*, const float*, const AvgPoolDims&);
template void avgpool2d_forward<double>(double*, const double*, const AvgPoolDims&);
template void avgpool2d_backward<float>(float*, const float*, const AvgPoolDims&);
template void avgpool2d_backward<double>(double*, const double*, const AvgPoolDims&);

}  // namespace plain
}  // namespace maqueta
