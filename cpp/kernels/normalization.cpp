// Batch normalisation forward and backward, and the per-channel multiply-add of evaluation mode.
// The plain twin is cpp/plain/normalization.cpp.
//
// Per channel c, over its M = N * S values: mean = sum x / M, var = sum (x - mean)^2 / M (two
// passes, summed in double), then y = (x - mean) * weight / sqrt(var + eps) + bias. Each sum runs
// in kChains interleaved partial sums, added in order at the end (channel_sums).
// Parallel strategy: training runs one channel per iteration (a channel's statistics and its
// outputs belong to it, each sum in one fixed order, so the thread count changes nothing);
// evaluation runs over the N * C planes.
#include <algorithm>
#include <cmath>
#include <utility>

#include "maqueta/normalization.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

int threads_for(int64_t values, int64_t pieces) {   // one thread per 32k values, at most one per piece
    return team_size(std::min<int64_t>(pieces, std::max<int64_t>(1, values / 32768)));
}

// sums[t] = the sum of term(i)[t] (t < 2) over channel c's values i = (n*C + c)*S + s. One chain
// of double additions waits on each add's latency; kChains independent chains (value s of a plane
// goes to chain s % kChains) run as vector adds, in an order fixed by the shapes alone.
constexpr int kChains = 32;

template <typename F>
void channel_sums(double sums[2], int64_t N, int64_t C, int64_t S, int64_t c, F term) {
    double first[kChains] = {}, second[kChains] = {};
    for (int64_t n = 0; n < N; ++n) {
        const int64_t plane = (n * C + c) * S;
        int64_t s = 0;
        for (; s + kChains <= S; s += kChains)
            for (int j = 0; j < kChains; ++j) {
                const auto t = term(plane + s + j);
                first[j] += t.first;
                second[j] += t.second;
            }
        for (int j = 0; s + j < S; ++j) {
            const auto t = term(plane + s + j);
            first[j] += t.first;
            second[j] += t.second;
        }
    }
    sums[0] = sums[1] = 0;
    for (int j = 0; j < kChains; ++j) {
        sums[0] += first[j];
        sums[1] += second[j];
    }
}

}  // namespace

template <typename T>
void batchnorm_forward(T* y, T* mean, T* var, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                       int64_t S, double eps, bool relu) {
    const double M = (double)(N * S);
#pragma omp parallel for schedule(static) num_threads(threads_for(N * C * S, C))
    for (int64_t c = 0; c < C; ++c) {
        double sums[2];
        channel_sums(sums, N, C, S, c, [&](int64_t i) { return std::pair<double, double>(x[i], 0.0); });
        const double mu = sums[0] / M;
        channel_sums(sums, N, C, S, c, [&](int64_t i) {
            const double d = x[i] - mu;
            return std::pair<double, double>(d * d, 0.0);
        });
        const double v = sums[0] / M;
        mean[c] = (T)mu;
        var[c] = (T)v;
        const double scale = (weight ? (double)weight[c] : 1.0) / std::sqrt(v + eps);
        const double shift = bias ? (double)bias[c] : 0.0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < S; ++s) {
                const int64_t i = (n * C + c) * S + s;
                const T v = (T)((x[i] - mu) * scale + shift);
                y[i] = relu ? std::max(v, T(0)) : v;
            }
    }
}

template <typename T>
void batchnorm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* weight, const T* mean,
                        const T* var, int64_t N, int64_t C, int64_t S, double eps) {
    const double M = (double)(N * S);
#pragma omp parallel for schedule(static) num_threads(threads_for(N * C * S, C))
    for (int64_t c = 0; c < C; ++c) {
        const double mu = mean[c], invstd = 1.0 / std::sqrt((double)var[c] + eps);
        double sums[2];
        channel_sums(sums, N, C, S, c, [&](int64_t i) {
            return std::pair<double, double>(dy[i], dy[i] * ((x[i] - mu) * invstd));
        });
        const double sum_dy = sums[0], sum_dy_xhat = sums[1];
        if (dweight) {
            dweight[c] = (T)sum_dy_xhat;
            dbias[c] = (T)sum_dy;
        }
        const double scale = (weight ? (double)weight[c] : 1.0) * invstd;
        const double mean_dy = sum_dy / M, mean_dy_xhat = sum_dy_xhat / M;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < S; ++s) {
                const int64_t i = (n * C + c) * S + s;
                const double xhat = (x[i] - mu) * invstd;
                dx[i] = (T)(scale * (dy[i] - mean_dy - xhat * mean_dy_xhat));
            }
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
                                       double, bool);                                                       \
    template void batchnorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, \
                                        int64_t, int64_t, double);                                         \
    template void channel_affine<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, bool);
MAQUETA_INSTANTIATE(float)
MAQUETA_INSTANTIATE(double)
#undef MAQUETA_INSTANTIATE

}  // namespace maqueta
