// Plain batch normalisation: each channel normalised by the batch's mean and variance in training,
// by the running statistics (folded into one multiply-add) in evaluation.
//
//   x (N, C, S): S = H*W values per sample and channel ((N, C) dense features: S = 1);
//   channel c has M = N*S values
//   mean[c] = (1/M) sum over n, s of x[n, c, s]
//   var[c]  = (1/M) sum over n, s of (x[n, c, s] - mean[c])^2          (biased, as PyTorch normalises)
//   xhat    = (x[n, c, s] - mean[c]) / sqrt(var[c] + eps)
//   y[n, c, s] = weight[c] * xhat + bias[c]                           (1 and 0 without weight and bias)
// The statistics and each value are computed in double and rounded to T when stored.
// The running statistics (momentum, unbiased variance, num_batches_tracked) are the layer's
// (python/maqueta/layers/norm.py), which gives their folded scale and shift to channel_affine.
//
// Parallel strategy: training over the channels c (a channel's statistics, its outputs and its
// gradients belong to one thread, each sum in one fixed order); evaluation over the N*C planes.
// The fast twin is cpp/kernels/normalization.cpp.
#include <cmath>

#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

// --8<-- [start:batchnorm_forward]
template <typename T>
void batchnorm_forward(T* y,             // (N, C, S)
                       T* mean, T* var,  // (C,) each: the batch's statistics, for backward and the running ones
                       const T* x,       // (N, C, S)
                       const T* weight,  // (C,) or nullptr
                       const T* bias,    // (C,) or nullptr
                       int64_t N, int64_t C, int64_t S, double eps,
                       bool relu) {      // then max(y, 0): a ReLU after the batch norm, fused
    const double M = (double)(N * S);
#pragma omp parallel for num_threads(team_size(C))
    for (int64_t c = 0; c < C; ++c) {
        double sum = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < S; ++s) sum += x[(n * C + c) * S + s];
        const double mu = sum / M;
        double squares = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < S; ++s) {
                const double centered = x[(n * C + c) * S + s] - mu;
                squares += centered * centered;
            }
        const double sigma2 = squares / M;
        mean[c] = (T)mu;
        var[c] = (T)sigma2;
        const double gamma = weight ? (double)weight[c] : 1.0, beta = bias ? (double)bias[c] : 0.0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < S; ++s) {
                const int64_t at = (n * C + c) * S + s;
                const double xhat = (x[at] - mu) / std::sqrt(sigma2 + eps);
                const T value = (T)(gamma * xhat + beta);
                y[at] = relu && value < 0 ? T(0) : value;
            }
    }
}
// --8<-- [end:batchnorm_forward]

// Every y of channel c depends on every x of it, through mean and var. With s = 1 / sqrt(var + eps):
//   dbias[c]   = sum over n, s of dy[n, c, s]
//   dweight[c] = sum over n, s of dy[n, c, s] * xhat[n, c, s]
//   dx[n, c, s] = weight[c] * s / M * (M dy[n, c, s] - dbias[c] - xhat[n, c, s] * dweight[c])
// (dbias and dweight are the two sums whether or not the layer has weight and bias.) With
// relu_output, a ReLU ran after the batch norm and its gradient comes first: dy * (y > 0) for dy.
// --8<-- [start:batchnorm_backward]
template <typename T>
void batchnorm_backward(T* dx,                   // (N, C, S)
                        T* dweight, T* dbias,    // (C,) each, or nullptr (no weight and bias)
                        const T* dy,             // (N, C, S)
                        const T* relu_output,    // (N, C, S) or nullptr: dy * (relu_output > 0) for dy
                        const T* x,              // (N, C, S)
                        const T* weight,         // (C,) or nullptr
                        const T* mean, const T* var,  // (C,) each, from batchnorm_forward
                        int64_t N, int64_t C, int64_t S, double eps) {
    const double M = (double)(N * S);
#pragma omp parallel for num_threads(team_size(C))
    for (int64_t c = 0; c < C; ++c) {
        const double mu = mean[c], inv_std = 1.0 / std::sqrt((double)var[c] + eps);
        double sum_dy = 0, sum_dy_xhat = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < S; ++s) {
                const int64_t at = (n * C + c) * S + s;
                const T g = relu_output ? dy[at] * T(relu_output[at] > 0) : dy[at];
                sum_dy += g;
                sum_dy_xhat += g * ((x[at] - mu) * inv_std);
            }
        if (dweight) dweight[c] = (T)sum_dy_xhat;
        if (dbias) dbias[c] = (T)sum_dy;
        const double gamma = weight ? (double)weight[c] : 1.0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < S; ++s) {
                const int64_t at = (n * C + c) * S + s;
                const double xhat = (x[at] - mu) * inv_std;
                const T g = relu_output ? dy[at] * T(relu_output[at] > 0) : dy[at];
                dx[at] = (T)(gamma * inv_std / M * (M * g - sum_dy - xhat * sum_dy_xhat));
            }
    }
}
// --8<-- [end:batchnorm_backward]

// Evaluation: y = weight (x - running_mean) / sqrt(running_var + eps) + bias, which the layer folds
// into scale = weight / sqrt(running_var + eps) and shift = bias - running_mean * scale.
// --8<-- [start:channel_affine]
template <typename T>
void channel_affine(T* y,                    // (N, C, S)
                    const T* x,              // (N, C, S)
                    const T* scale,          // (C,)
                    const T* shift,          // (C,)
                    int64_t N, int64_t C, int64_t S,
                    bool relu) {             // then max(y, 0)
#pragma omp parallel for num_threads(team_size(N * C))
    for (int64_t nc = 0; nc < N * C; ++nc) {
        const int64_t c = nc % C;
        for (int64_t s = 0; s < S; ++s) {
            const T value = x[nc * S + s] * scale[c] + shift[c];
            y[nc * S + s] = relu && value < 0 ? T(0) : value;
        }
    }
}
// --8<-- [end:channel_affine]

template void batchnorm_forward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t,
                                       int64_t, int64_t, double, bool);
template void batchnorm_forward<double>(double*, double*, double*, const double*, const double*, const double*,
                                        int64_t, int64_t, int64_t, double, bool);
template void batchnorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, const float*, int64_t, int64_t, int64_t, double);
template void batchnorm_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, const double*, int64_t, int64_t, int64_t,
                                         double);
template void channel_affine<float>(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                    bool);
template void channel_affine<double>(double*, const double*, const double*, const double*, int64_t, int64_t,
                                     int64_t, bool);

}  // namespace plain
}  // namespace maqueta
