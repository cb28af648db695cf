// Average pooling forward and backward. Parallel strategy: one plane per iteration; a plane's
// outputs (forward) and input gradient (backward) belong to it, each sum in one fixed order.
// The plain twin is cpp/plain/avgpool2d.cpp.
#include <algorithm>

#include "maqueta/avgpool2d.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

int threads_for(const AvgPoolDims& d) {
    return team_size(std::min<int64_t>(d.P, std::max<int64_t>(1, d.P * d.H * d.W / 32768)));
}

}  // namespace

template <typename T>
void avgpool2d_forward(T* y, const T* x, const AvgPoolDims& d) {
    const T area = (T)(d.KH * d.KW);
#pragma omp parallel for schedule(static) num_threads(threads_for(d))
    for (int64_t p = 0; p < d.P; ++p) {
        const T* plane = x + p * d.H * d.W;
        for (int64_t i = 0; i < d.OH; ++i)
            for (int64_t j = 0; j < d.OW; ++j) {
                const int64_t r0 = i * d.SH - d.PH, c0 = j * d.SW - d.PW;
                T sum = 0;
                for (int64_t r = std::max<int64_t>(r0, 0); r < std::min(r0 + d.KH, d.H); ++r)
                    for (int64_t c = std::max<int64_t>(c0, 0); c < std::min(c0 + d.KW, d.W); ++c)
                        sum += plane[r * d.W + c];
                y[(p * d.OH + i) * d.OW + j] = sum / area;
            }
    }
}

template <typename T>
void avgpool2d_backward(T* dx, const T* dy, const AvgPoolDims& d) {
    const T area = (T)(d.KH * d.KW);
#pragma omp parallel for schedule(static) num_threads(threads_for(d))
    for (int64_t p = 0; p < d.P; ++p) {
        T* plane = dx + p * d.H * d.W;
        std::fill(plane, plane + d.H * d.W, T(0));
        for (int64_t i = 0; i < d.OH; ++i)
            for (int64_t j = 0; j < d.OW; ++j) {
                const T g = dy[(p * d.OH + i) * d.OW + j] / area;
                const int64_t r0 = i * d.SH - d.PH, c0 = j * d.SW - d.PW;
                for (int64_t r = std::max<int64_t>(r0, 0); r < std::min(r0 + d.KH, d.H); ++r)
                    for (int64_t c = std::max<int64_t>(c0, 0); c < std::min(c0 + d.KW, d.W); ++c)
                        plane[r * d.W + c] += g;
            }
    }
}

template void avgpool2d_forward<float>(float*, const float*, const AvgPoolDims&);
template void avgpool2d_forward<double>(double*, const double*, const AvgPoolDims&);
template void avgpool2d_backward<float>(float*, const float*, const AvgPoolDims&);
template void avgpool2d_backward<double>(double*, const double*, const AvgPoolDims&);

}  // namespace maqueta
