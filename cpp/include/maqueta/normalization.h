// Batch normalisation kernels (kernels/normalization.cpp). x is [N, C, S]: S = H * W values per
// channel and sample (1 for dense features); the statistics of channel c run over its M = N * S
// values. Plain reference: python/maqueta/reference.py (batchnorm_forward, batchnorm_backward).
#pragma once
#include <cstdint>

#include "maqueta/runtime.h"

namespace maqueta {

// Training mode: mean and biased variance of each channel, then
// y = (x - mean) / sqrt(var + eps) * weight + bias (weight 1 and bias 0 when null), then max(y, 0)
// when relu (a ReLU after the batch norm, fused: the layer after it applies its gradient).
template <typename T>
void batchnorm_forward(T* y,             // [N, C, S]
                       T* mean, T* var,  // [C] each: the batch statistics
                       const T* x,       // [N, C, S]
                       const T* weight,  // [C] or nullptr
                       const T* bias,    // [C] or nullptr
                       int64_t N, int64_t C, int64_t S, double eps, bool relu, const IsaKernels& isa);

// Gradients of batchnorm_forward, through the batch statistics: with xhat = (x - mean) / sqrt(var + eps),
// dbias = sum dy, dweight = sum dy * xhat, dx = weight / sqrt(var + eps) * (dy - dbias / M - xhat * dweight / M).
// With relu_output (the forward's y when it applied a ReLU), dy * (y > 0) takes dy's place: the
// ReLU's gradient, for a ReLU whose next layer cannot apply it.
template <typename T>
void batchnorm_backward(T* dx,                    // [N, C, S]
                        T* dweight, T* dbias,     // [C] each, or nullptr (no affine parameters)
                        const T* dy,              // [N, C, S]
                        const T* relu_output,     // [N, C, S] or nullptr
                        const T* x,               // [N, C, S]
                        const T* weight,          // [C] or nullptr
                        const T* mean, const T* var,  // [C] each, from the forward pass
                        int64_t N, int64_t C, int64_t S, double eps, const IsaKernels& isa);

// Evaluation mode, with the running statistics folded into one multiply-add per value:
// y = x * scale[c] + shift[c], then max(y, 0) when relu.
template <typename T>
void channel_affine(T* y,                          // [N, C, S]
                    const T* x,                    // [N, C, S]
                    const T* scale, const T* shift,  // [C] each
                    int64_t N, int64_t C, int64_t S, bool relu);

}  // namespace maqueta
