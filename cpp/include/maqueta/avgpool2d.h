// Average-pooling kernels (kernels/avgpool2d.cpp) on P = N * C planes of H x W, windows KH x KW at
// stride (SH, SW) over the input zero-padded by (PH, PW); OH = (H + 2 PH - KH) / SH + 1 (OW alike).
// Padding counts in the average (PyTorch's count_include_pad=True). Plain reference:
// python/maqueta/reference.py (avgpool2d_forward, avgpool2d_backward).
#pragma once
#include <cstdint>

namespace maqueta {

struct AvgPoolDims {
    int64_t P, H, W, KH, KW, SH, SW, PH, PW, OH, OW;
};

// y[p][i][j] = sum of the window at (i SH - PH, j SW - PW) / (KH KW).
template <typename T>
void avgpool2d_forward(T* y,        // [P, OH, OW]
                       const T* x,  // [P, H, W]
                       const AvgPoolDims& d);

// dx[p][h][w] = sum over the windows that cover (h, w) of dy / (KH KW).
template <typename T>
void avgpool2d_backward(T* dx,        // [P, H, W]
                        const T* dy,  // [P, OH, OW]
                        const AvgPoolDims& d);

}  // namespace maqueta
