// Dropout kernels (kernels/dropout.cpp). x is [U, S]: U units that are kept or dropped together
// (N * C * H * W single values for Dropout, N * C channel planes of S = H * W for Dropout2D).
// Plain reference: python/maqueta/reference.py (dropout_keep, dropout_forward, dropout_backward).
#pragma once
#include <cstdint>

namespace maqueta {

// Whether dropout keeps unit u for a seed: u01 = splitmix64(seed + (u + 1) * golden) / 2^64, kept
// when u01 >= p. A hash of the index, so the mask does not depend on threads or order.
bool dropout_keeps(uint64_t seed, int64_t u, double p);

// y = x * keep / (1 - p) (inverted dropout, as PyTorch's); mask[u] = keep.
template <typename T>
void dropout_forward(T* y,           // [U, S]
                     uint8_t* mask,  // [U]
                     const T* x,     // [U, S]
                     int64_t U, int64_t S, double p, uint64_t seed);

// dx = dy * mask / (1 - p).
template <typename T>
void dropout_backward(T* dx,                // [U, S]
                      const T* dy,          // [U, S]
                      const uint8_t* mask,  // [U]
                      int64_t U, int64_t S, double p);

}  // namespace maqueta
