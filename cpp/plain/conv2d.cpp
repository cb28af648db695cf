// Plain conv2d: the convolution and its three gradients as nested loops over the formula's indices.
//
//   x (N, C, H, W), w (O, C, KH, KW), b (O,) -> y (N, O, OH, OW)
//   OH = (H + 2*PH - KH) / SH + 1,  OW = (W + 2*PW - KW) / SW + 1
//   y[n, o, i, j] = b[o] + sum over c, kh, kw of w[o, c, kh, kw] * x[n, c, i*SH + kh - PH, j*SW + kw - PW]
// where x is zero outside the image (zero padding). Cross-correlation: no flip, as PyTorch.
// With wscale, every w[o, c, kh, kw] is first multiplied by wscale[o] (a batch norm folded in).
//
// Parallel strategy: forward over the N*O output planes, dw and db over O, dx over the N*C input
// planes; each thread writes only what its index owns, every sum runs in one fixed order.
// The fast twin is cpp/kernels/conv2d_forward.cpp and conv2d_backward.cpp.
#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

// --8<-- [start:conv2d_forward]
template <typename T>
void conv2d_forward(T* y,              // (N, O, OH, OW)
                    const T* x,        // (N, C, H, W)
                    const T* w,        // (O, C, KH, KW)
                    const T* b,        // (O,) or nullptr
                    const T* wscale,   // (O,) or nullptr
                    const Conv2dDims& d, const OutputActivation& act) {
    const int64_t N = d.N, C = d.C, H = d.H, W = d.W, O = d.O, KH = d.KH, KW = d.KW;
    const int64_t SH = d.SH, SW = d.SW, PH = d.PH, PW = d.PW, OH = d.OH, OW = d.OW;
#pragma omp parallel for num_threads(team_size(N * O))
    for (int64_t no = 0; no < N * O; ++no) {
        const int64_t n = no / O, o = no % O;
        for (int64_t i = 0; i < OH; ++i)
            for (int64_t j = 0; j < OW; ++j) {
                T sum = 0;
                for (int64_t c = 0; c < C; ++c)
                    for (int64_t kh = 0; kh < KH; ++kh)
                        for (int64_t kw = 0; kw < KW; ++kw) {
                            const int64_t h = i * SH + kh - PH, v = j * SW + kw - PW;   // input row, column
                            if (h < 0 || h >= H || v < 0 || v >= W) continue;          // in the zero padding
                            T weight = w[((o * C + c) * KH + kh) * KW + kw];
                            if (wscale) weight *= wscale[o];
                            sum += weight * x[((n * C + c) * H + h) * W + v];
                        }
                if (b) sum += b[o];
                y[((n * O + o) * OH + i) * OW + j] = output_activation(sum, act);   // none, ReLU, leaky ReLU, ELU
            }
    }
}
// --8<-- [end:conv2d_forward]

// Each output y[n, o, i, j] saw the input pixel x[n, c, i*SH + kh - PH, j*SW + kw - PW] through the
// weight w[o, c, kh, kw]. The chain rule sends dy back along every such pair:
//   db[o]             = sum over n, i, j of dy[n, o, i, j]
//   dw[o, c, kh, kw]  = sum over n, i, j of dy[n, o, i, j] * x[n, c, i*SH + kh - PH, j*SW + kw - PW]
//   dx[n, c, h, v]    = sum over o, kh, kw of dy[n, o, i, j] * w[o, c, kh, kw]
//                       for the (i, j) with i*SH + kh - PH = h and j*SW + kw - PW = v, when they exist
// With relu_input, x came out of a ReLU whose gradient passes only where x > 0.
// --8<-- [start:conv2d_backward]
template <typename T>
void conv2d_backward(T* dx,            // (N, C, H, W), or nullptr when not wanted
                     T* dw,            // (O, C, KH, KW)
                     T* db,            // (O,)
                     const T* dy,      // (N, O, OH, OW)
                     const T* x,       // (N, C, H, W)
                     const T* w,       // (O, C, KH, KW)
                     const Conv2dDims& d, bool relu_input) {
    const int64_t N = d.N, C = d.C, H = d.H, W = d.W, O = d.O, KH = d.KH, KW = d.KW;
    const int64_t SH = d.SH, SW = d.SW, PH = d.PH, PW = d.PW, OH = d.OH, OW = d.OW;
    auto DY = [&](int64_t n, int64_t o, int64_t i, int64_t j) { return dy[((n * O + o) * OH + i) * OW + j]; };
#pragma omp parallel for num_threads(team_size(O))
    for (int64_t o = 0; o < O; ++o) {
        T bsum = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < OH; ++i)
                for (int64_t j = 0; j < OW; ++j) bsum += DY(n, o, i, j);
        db[o] = bsum;
        for (int64_t c = 0; c < C; ++c)
            for (int64_t kh = 0; kh < KH; ++kh)
                for (int64_t kw = 0; kw < KW; ++kw) {
                    T sum = 0;
                    for (int64_t n = 0; n < N; ++n)
                        for (int64_t i = 0; i < OH; ++i)
                            for (int64_t j = 0; j < OW; ++j) {
                                const int64_t h = i * SH + kh - PH, v = j * SW + kw - PW;
                                if (h < 0 || h >= H || v < 0 || v >= W) continue;   // padding: x is 0
                                sum += DY(n, o, i, j) * x[((n * C + c) * H + h) * W + v];
                            }
                    dw[((o * C + c) * KH + kh) * KW + kw] = sum;
                }
    }
    if (!dx) return;   // the first layer's input needs no gradient
#pragma omp parallel for num_threads(team_size(N * C))
    for (int64_t nc = 0; nc < N * C; ++nc) {
        const int64_t n = nc / C, c = nc % C;
        for (int64_t h = 0; h < H; ++h)
            for (int64_t v = 0; v < W; ++v) {
                T sum = 0;
                for (int64_t o = 0; o < O; ++o)
                    for (int64_t kh = 0; kh < KH; ++kh)
                        for (int64_t kw = 0; kw < KW; ++kw) {
                            const int64_t ih = h + PH - kh, jw = v + PW - kw;   // = i*SH, j*SW if any
                            if (ih < 0 || jw < 0 || ih % SH || jw % SW) continue;
                            const int64_t i = ih / SH, j = jw / SW;
                            if (i >= OH || j >= OW) continue;
                            sum += DY(n, o, i, j) * w[((o * C + c) * KH + kh) * KW + kw];
                        }
                const int64_t at = ((n * C + c) * H + h) * W + v;
                dx[at] = relu_input && !(x[at] > T(0)) ? T(0) : sum;
            }
    }
}
// --8<-- [end:conv2d_backward]

template void conv2d_forward<float>(float*, const float*, const float*, const float*, const float*,
                                    const Conv2dDims&, const OutputActivation&);
template void conv2d_forward<double>(double*, const double*, const double*, const double*, const double*,
                                     const Conv2dDims&, const OutputActivation&);
template void conv2d_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                     const Conv2dDims&, bool);
template void conv2d_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                      const Conv2dDims&, bool);

}  // namespace plain
}  // namespace maqueta
