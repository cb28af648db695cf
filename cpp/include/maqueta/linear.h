// Dense layer kernels (kernels/linear.cpp): N batch, IN and OUT features; w is [OUT, IN], as PyTorch.
#pragma once
#include <cstdint>

#include "maqueta/activation.h"
#include "maqueta/runtime.h"

namespace maqueta {

// y = x w^T + b, then the fused activation act (see OutputActivation): a torch.nn.Linear.
template <typename T>
void linear_forward(T* y,         // [N, OUT]
                    const T* x,   // [N, IN]
                    const T* w,   // [OUT, IN]
                    const T* b,   // [OUT] or nullptr
                    int64_t N, int64_t IN, int64_t OUT, const OutputActivation& act, const IsaKernels& isa);

// Gradients of linear_forward (without its activation); dx may be nullptr; with relu_input, x is the output
// of a ReLU and dx is zeroed where x <= 0 (as conv2d_backward).
template <typename T>
void linear_backward(T* dx,        // [N, IN] or nullptr
                     T* dw,        // [OUT, IN]
                     T* db,        // [OUT] or nullptr
                     const T* dy,  // [N, OUT]
                     const T* x,   // [N, IN]
                     const T* w,   // [OUT, IN]
                     int64_t N, int64_t IN, int64_t OUT, bool relu_input, const IsaKernels& isa);

}  // namespace maqueta
