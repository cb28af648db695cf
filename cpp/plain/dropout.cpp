// Plain (inverted) dropout: each unit is kept with probability 1 - p and scaled by 1 / (1 - p), so
// that the expected output is the input; the gradient passes where the unit was kept.
//
//   x (U, S): U units of S values kept or dropped together (Dropout: every value is a unit, S = 1;
//             Dropout2D: every (n, c) plane of (N, C, H, W) is one, U = N*C, S = H*W)
//   keep[u] = u01(seed, u) >= p,  u01 = splitmix64(seed + (u + 1) * golden) / 2^64 in [0, 1)
//   y[u, s] = x[u, s] * keep[u] / (1 - p)        (0 when p = 1)
//   dx[u, s] = dy[u, s] * keep[u] / (1 - p)
// keep is a hash of the unit's index and the call's seed, not a draw from a generator: the mask is
// the same whatever the thread count and the order, and bit for bit the fast kernel's.
//
// Parallel strategy: over the units u; a unit's mask bit and its values belong to one thread.
// The fast twin is cpp/kernels/dropout.cpp.
#include <algorithm>

#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

constexpr int64_t kParallelMin = 1 << 14;   // values per thread, at least

// --8<-- [start:dropout_keeps]
// Whether unit u is kept: splitmix64 (Steele, Lea & Flood 2014) of seed + (u + 1) * golden, its
// top 53 bits as a double in [0, 1), compared with p. Unsigned arithmetic wraps modulo 2^64.
static bool keeps(uint64_t seed, int64_t u, double p) {
    uint64_t z = seed + ((uint64_t)u + 1) * 0x9E3779B97F4A7C15ull;   // golden = 2^64 / the golden ratio
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    const double u01 = (double)(z >> 11) / 9007199254740992.0;      // / 2^53
    return u01 >= p;
}
// --8<-- [end:dropout_keeps]

// --8<-- [start:dropout_forward]
template <typename T>
void dropout_forward(T* y,             // (U, S)
                     uint8_t* mask,    // (U,): 1 where the unit is kept
                     const T* x,       // (U, S)
                     int64_t U, int64_t S, double p, uint64_t seed) {
    const T scale = p >= 1 ? T(0) : T(1.0 / (1.0 - p));
#pragma omp parallel for num_threads(team_size(std::min(U, U * S / kParallelMin)))
    for (int64_t u = 0; u < U; ++u) {
        mask[u] = keeps(seed, u, p) ? 1 : 0;
        for (int64_t s = 0; s < S; ++s) y[u * S + s] = x[u * S + s] * (T)mask[u] * scale;   // NaN * 0 stays NaN
    }
}
// --8<-- [end:dropout_forward]

// --8<-- [start:dropout_backward]
template <typename T>
void dropout_backward(T* dx,              // (U, S)
                      const T* dy,        // (U, S)
                      const uint8_t* mask, // (U,)
                      int64_t U, int64_t S, double p) {
    const T scale = p >= 1 ? T(0) : T(1.0 / (1.0 - p));
#pragma omp parallel for num_threads(team_size(std::min(U, U * S / kParallelMin)))
    for (int64_t u = 0; u < U; ++u)
        for (int64_t s = 0; s < S; ++s) dx[u * S + s] = dy[u * S + s] * (T)mask[u] * scale;
}
// --8<-- [end:dropout_backward]

template void dropout_forward<float>(float*, uint8_t*, const float*, int64_t, int64_t, double, uint64_t);
template void dropout_forward<double>(double*, uint8_t*, const double*, int64_t, int64_t, double, uint64_t);
template void dropout_backward<float>(float*, const float*, const uint8_t*, int64_t, int64_t, double);
template void dropout_backward<double>(double*, const double*, const uint8_t*, int64_t, int64_t, double);

}  // namespace plain
}  // namespace maqueta
