// Loss kernels (kernels/loss.cpp).
#pragma once
#include <cstdint>

namespace maqueta {

// Softmax cross-entropy on logits, averaged over the batch, and its gradient
// dlogits = (softmax(logits) - onehot(targets)) / N. Returns the loss (computed in double).
template <typename T>
double softmax_cross_entropy(T* dlogits,             // [N, K]
                             const T* logits,        // [N, K]
                             const int64_t* targets, // [N], each in [0, K)
                             int64_t N, int64_t K);

}  // namespace maqueta
