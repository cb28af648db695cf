// Batch normalisation forward and backward, and the per-channel multiply-add of evaluation mode.
// The plain twin is cpp/plain/normalization.cpp.
//
// Per channel c, over its M = N * S values: mean = sum x / M, var = sum (x - mean)^2 / M (two
// passes, summed in double), then y = (x - mean) * weight / sqrt(var + eps) + bias. Each sum runs
// in kBnChains interleaved partial sums, added in order at the end (channel_sums); the passes
// run on the instruction set's micro-kernel (cpp/isa/normalization.inc).
// Parallel strategy: training runs one channel per iteration (a channel's statistics and its
// outputs belong to it, each sum in one fixed order, so the thread count changes nothing);
// evaluation runs over the N * C planes.
#include <algorithm>
#include <cmath>

#include "maqueta/normalization.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

int threads_for(int64_t values, int64_t pieces) {   // one thread per 32k values, at most one per piece
    return team_size(std::min<int64_t>(pieces, std::max<int64_t>(1, values / 32768)));
}

// The sums of one channel's pass (BnArgs): the chains, then their total in order.
template <typename T>
void channel_sums(double sums[2], BnArgs<T> pass, const IsaKernels& kern) {
    double first[kBnChains] = {}, second[kBnChains] = {};
    pass.first = first;
    pass.second = second;
    kern.batchnorm(pass);
    sums[0] = sums[1] = 0;
    for (int j = 0; j < kBnChains; ++j) {
        sums[0] += first[j];
        sums[1] += second[j];
    }
}

}  // namespace

template <typename T>
void batchnorm_forward(T* y, T* mean, T* var, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                       int64_t S, double eps, bool relu, const IsaKernels& kern) {
    const double M = (double)(N * S);
#pragma omp parallel for schedule(static) num_threads(threads_for(N * C * S, C))
    for (int64_t c = 0; c < C; ++c) {
        const BnArgs<T> channel{.pass = BnPass::Sum, .N = N, .C = C, .S = S, .c = c, .x = x, .dy = nullptr,
                                .relu_output = nullptr, .out = y};
        double sums[2];
        channel_sums(sums, channel, kern);
        const double mu = sums[0] / M;
        BnArgs<T> squares = channel;
        squares.pass = BnPass::Squares;
        squares.mu = mu;
        channel_sums(sums, squares, kern);
        const double v = sums[0] / M;
        mean[c] = (T)mu;
        var[c] = (T)v;
        const double scale = (weight ? (double)weight[c] : 1.0) / std::sqrt(v + eps);
        const double shift = bias ? (double)bias[c] : 0.0;
        BnArgs<T> normalize = channel;
        normalize.pass = BnPass::Normalize;
        normalize.mu = mu;
        normalize.scale = scale;
        normalize.shift = shift;
        normalize.relu = relu;
        kern.batchnorm(normalize);
    }
}

template <typename T>
void batchnorm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* relu_output, const T* x, const T* weight,
                        const T* mean, const T* var, int64_t N, int64_t C, int64_t S, double eps,
                        const IsaKernels& kern) {
    const double M = (double)(N * S);
#pragma omp parallel for schedule(static) num_threads(threads_for(N * C * S, C))
    for (int64_t c = 0; c < C; ++c) {
        const double mu = mean[c], invstd = 1.0 / std::sqrt((double)var[c] + eps);
        BnArgs<T> channel{.pass = BnPass::GradSums, .N = N, .C = C, .S = S, .c = c, .x = x, .dy = dy,
                          .relu_output = relu_output, .out = dx, .mu = mu, .invstd = invstd};
        double sums[2];
        channel_sums(sums, channel, kern);
        const double sum_dy = sums[0], sum_dy_xhat = sums[1];
        if (dweight) {
            dweight[c] = (T)sum_dy_xhat;
            dbias[c] = (T)sum_dy;
        }
        const double scale = (weight ? (double)weight[c] : 1.0) * invstd;
        const double mean_dy = sum_dy / M, mean_dy_xhat = sum_dy_xhat / M;
        channel.pass = BnPass::Grad;
        channel.scale = scale;
        channel.mean_dy = mean_dy;
        channel.mean_dy_xhat = mean_dy_xhat;
        kern.batchnorm(channel);
    }
}

template <typename T>
void channel_affine(T* y, const T* x, const T* scale, const T* shift, int64_t N, int64_t C, int64_t S, bool relu) {
#pragma omp parallel for schedule(static) num_threads(threads_for(N * C * S, N * C))
    for (int64_t plane = 0; plane < N * C; ++plane) {
        const T a = scale[plane % C], b = shift[plane % C];
        const T* in = x + plane * S;
        T* out = y + plane * S;
        if (relu)
            for (int64_t s = 0; s < S; ++s) out[s] = std::max(in[s] * a + b, T(0));
        else
            for (int64_t s = 0; s < S; ++s) out[s] = in[s] * a + b;
    }
}

#define MAQUETA_INSTANTIATE(T)                                                                               \
    template void batchnorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, \
                                       double, bool, const IsaKernels&);                                                       \
    template void batchnorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const T*, \
                                        int64_t, int64_t, int64_t, double, const IsaKernels&);                      \
    template void channel_affine<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, bool);
MAQUETA_INSTANTIATE(float)
MAQUETA_INSTANTIATE(double)
#undef MAQUETA_INSTANTIATE

}  // namespace maqueta
