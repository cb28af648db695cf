// Dropout forward and backward: each unit's mask bit is a hash of its index and the call's seed.
// Parallel strategy: contiguous ranges of units; a unit's mask bit and values belong to it.
// The plain twin is cpp/plain/dropout.cpp.
#include <algorithm>

#include "maqueta/dropout.h"
#include "maqueta/runtime.h"

namespace maqueta {

bool dropout_keeps(uint64_t seed, int64_t u, double p) {
    uint64_t z = seed + ((uint64_t)u + 1) * 0x9E3779B97F4A7C15ull;   // splitmix64, wrapping as unsigned
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53 >= p;
}

namespace {

int threads_for(int64_t values, int64_t units) {
    return team_size(std::min<int64_t>(units, std::max<int64_t>(1, values / 65536)));
}

template <typename T>
T inverted_scale(double p) {
    return p >= 1 ? T(0) : T(1.0 / (1.0 - p));
}

}  // namespace

template <typename T>
void dropout_forward(T* y, uint8_t* mask, const T* x, int64_t U, int64_t S, double p, uint64_t seed) {
    const T scale = inverted_scale<T>(p);
#pragma omp parallel for schedule(static) num_threads(threads_for(U * S, U))
    for (int64_t u = 0; u < U; ++u) {
        const uint8_t keep = dropout_keeps(seed, u, p);
        mask[u] = keep;
        for (int64_t s = 0; s < S; ++s) y[u * S + s] = x[u * S + s] * (T)keep * scale;   // NaN * 0 stays NaN
    }
}

template <typename T>
void dropout_backward(T* dx, const T* dy, const uint8_t* mask, int64_t U, int64_t S, double p) {
    const T scale = inverted_scale<T>(p);
#pragma omp parallel for schedule(static) num_threads(threads_for(U * S, U))
    for (int64_t u = 0; u < U; ++u)
        for (int64_t s = 0; s < S; ++s) dx[u * S + s] = dy[u * S + s] * (T)mask[u] * scale;
}

template void dropout_forward<float>(float*, uint8_t*, const float*, int64_t, int64_t, double, uint64_t);
template void dropout_forward<double>(double*, uint8_t*, const double*, int64_t, int64_t, double, uint64_t);
template void dropout_backward<float>(float*, const float*, const uint8_t*, int64_t, int64_t, double);
template void dropout_backward<double>(double*, const double*, const uint8_t*, int64_t, int64_t, double);

}  // namespace maqueta
