// Element-wise activation kernels (kernels/activation.cpp) on n values. Plain reference:
// python/maqueta/reference.py (activation_forward, activation_backward).
#pragma once
#include <cmath>
#include <cstdint>

#include "maqueta/runtime.h"

namespace maqueta {

enum class Activation {
    LeakyRelu,  // x > 0 ? x : alpha x
    Elu,        // x > 0 ? x : alpha (e^x - 1)
    Gelu,       // x Phi(x), Phi the standard normal CDF: x / 2 (1 + erf(x / sqrt 2))
    GeluTanh,   // x / 2 (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), PyTorch's approximate="tanh"
    EluFromOutput,  // backward only, "x" being ELU's output y (alpha > 0): f' = y > 0 ? 1 : y + alpha,
                    // for a Conv2D or Dense that fused the ELU and kept only its output
};

// The activation a Conv2D or Dense kernel applies to its own output as it writes it (fused):
// Relu is max(v, 0) as before; LeakyRelu and Elu are leaky_relu_value / elu_value below, the
// activation kernels' own arithmetic, so a fused activation equals the separate one bit for bit.
struct OutputActivation {
    enum Kind { None, Relu, LeakyRelu, Elu };
    Kind kind = None;
    double alpha = 0;   // LeakyRelu's negative slope, Elu's alpha (applied as a T, as the activation kernels do)
    bool relu() const { return kind == Relu; }
    bool elementwise() const { return kind == LeakyRelu || kind == Elu; }   // applied by apply_output_activation
};

template <typename T>
inline T leaky_relu_value(T x, T alpha) { return x > 0 ? x : alpha * x; }
template <typename T>
inline T elu_value(T x, T alpha) { return x > 0 ? x : alpha * std::expm1(x); }

// y[i] = f(y[i]) for a LeakyRelu or Elu act (nothing for the others), in place over n values;
// the leaky ReLU on the instruction set's micro-kernel (the same expression, in vectors).
template <typename T>
inline void apply_output_activation(T* y, int64_t n, const OutputActivation& act, const IsaKernels& kern) {
    const T a = (T)act.alpha;
    if (act.kind == OutputActivation::LeakyRelu)
        kern.activation(ActivationArgs<T>{.n = n, .out = y, .x = y, .dy = nullptr, .alpha = a, .from_output = false});
    else if (act.kind == OutputActivation::Elu)
        for (int64_t i = 0; i < n; ++i) y[i] = elu_value(y[i], a);
}

template <typename T>
void activation_forward(T* y,        // [n]
                        const T* x,  // [n]
                        int64_t n, Activation kind, double alpha, const IsaKernels& kern);

// dx = dy * f'(x) (EluFromOutput: x is the output y).
template <typename T>
void activation_backward(T* dx,        // [n]
                         const T* dy,  // [n]
                         const T* x,   // [n]
                         int64_t n, Activation kind, double alpha, const IsaKernels& kern);

}  // namespace maqueta
