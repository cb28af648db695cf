// Element-wise activation kernels (kernels/activation.cpp) on n values. Plain reference:
// python/maqueta/reference.py (activation_forward, activation_backward).
#pragma once
#include <cstdint>

namespace maqueta {

enum class Activation {
    LeakyRelu,  // x > 0 ? x : alpha x
    Elu,        // x > 0 ? x : alpha (e^x - 1)
    Gelu,       // x Phi(x), Phi the standard normal CDF: x / 2 (1 + erf(x / sqrt 2))
    GeluTanh,   // x / 2 (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), PyTorch's approximate="tanh"
};

template <typename T>
void activation_forward(T* y,        // [n]
                        const T* x,  // [n]
                        int64_t n, Activation kind, double alpha);

// dx = dy * f'(x).
template <typename T>
void activation_backward(T* dx,        // [n]
                         const T* dy,  // [n]
                         const T* x,   // [n]
                         int64_t n, Activation kind, double alpha);

}  // namespace maqueta
