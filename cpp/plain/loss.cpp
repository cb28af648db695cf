// Plain softmax cross-entropy on logits, and its gradient P - Y.
//
//   logits z (N, K), targets t (N,) -> loss (a number), dz (N, K)
//   p[n, k] = exp(z[n, k] - max_k z[n]) / sum over k' of exp(z[n, k'] - max_k z[n])   (softmax)
//   loss    = mean over n of -log p[n, t[n]]
//   dz[n, k] = (p[n, k] - [k == t[n]]) / N                                             (P - Y, averaged)
// Subtracting the row's maximum changes no p but keeps exp from overflowing.
//
// Serial: a classifier's logits are small (LeNet-5: N x 10).
// The fast twin is cpp/kernels/loss.cpp.
#include <cmath>

#include "plain.h"

namespace maqueta {
namespace plain {

// --8<-- [start:softmax_cross_entropy]
template <typename T>
double softmax_cross_entropy(T* dz,            // (N, K): the gradient of the mean loss
                             const T* z,       // (N, K): the logits
                             const int64_t* t, // (N,): the true classes, each in [0, K)
                             int64_t N, int64_t K) {
    double total = 0;
    for (int64_t n = 0; n < N; ++n) {
        T top = z[n * K];
        for (int64_t k = 1; k < K; ++k)
            if (z[n * K + k] > top || z[n * K + k] != z[n * K + k]) top = z[n * K + k];   // NaN wins
        T sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += std::exp(z[n * K + k] - top);
        total += -(double)(z[n * K + t[n]] - top - std::log(sum));     // -log p[n, t[n]]
        for (int64_t k = 0; k < K; ++k) {
            const T p = std::exp(z[n * K + k] - top) / sum;
            dz[n * K + k] = (p - (k == t[n] ? T(1) : T(0))) / (T)N;
        }
    }
    return total / (double)N;
}
// --8<-- [end:softmax_cross_entropy]

template double softmax_cross_entropy<float>(float*, const float*, const int64_t*, int64_t, int64_t);
template double softmax_cross_entropy<double>(double*, const double*, const int64_t*, int64_t, int64_t);

}  // namespace plain
}  // namespace maqueta
