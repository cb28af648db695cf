// Softmax cross-entropy on logits: the loss of a classifier and its gradient, in one pass.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/loss.cpp.
//
//   loss = mean over n of  log(sum_k exp(z[n][k] - max_n)) - (z[n][t_n] - max_n)
//   dz[n][k] = (softmax(z[n])[k] - [k == t_n]) / N
//
// Serial: LeNet-5's logits are N x 10. Shifting by the row maximum keeps exp from overflowing;
// a NaN or infinite logit makes the loss NaN, which the training loop reports.
#include <cmath>

#include "maqueta/loss.h"

namespace maqueta {

template <typename T>
double softmax_cross_entropy(T* dlogits, const T* logits, const int64_t* targets, int64_t N, int64_t K) {
    double total = 0.0;
    const T inv_n = T(1) / (T)N;
    for (int64_t n = 0; n < N; ++n) {
        const T* z = logits + n * K;
        T* dz = dlogits + n * K;
        T top = z[0];
        for (int64_t k = 1; k < K; ++k)
            if (z[k] > top || z[k] != z[k]) top = z[k];
        T sum = 0;
        for (int64_t k = 0; k < K; ++k) {
            dz[k] = std::exp(z[k] - top);
            sum += dz[k];
        }
        const T log_sum = std::log(sum);
        total += (double)(log_sum - (z[targets[n]] - top));
        const T scale = inv_n / sum;
        for (int64_t k = 0; k < K; ++k) dz[k] *= scale;
        dz[targets[n]] -= inv_n;
    }
    return total / (double)N;
}

template double softmax_cross_entropy<float>(float*, const float*, const int64_t*, int64_t, int64_t);
template double softmax_cross_entropy<double>(double*, const double*, const int64_t*, int64_t, int64_t);

}  // namespace maqueta
