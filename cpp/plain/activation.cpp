// Plain element-wise activations and their derivatives, one value at a time.
//
//   x (n,) -> y (n,), any shape seen as a flat vector; alpha is the slope (LeakyReLU) or scale (ELU)
//   leaky_relu: y = x > 0 ? x : alpha x                    y' = x > 0 ? 1 : alpha
//   elu:        y = x > 0 ? x : alpha (e^x - 1)            y' = x > 0 ? 1 : alpha e^x
//   gelu:       y = x Phi(x) = x/2 (1 + erf(x / sqrt 2))   y' = Phi(x) + x phi(x),  phi(x) = e^(-x^2/2) / sqrt(2 pi)
//   gelu_tanh:  y = x/2 (1 + t),  t = tanh(sqrt(2/pi) (x + 0.044715 x^3))   (PyTorch's approximate="tanh")
//               y' = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//   backward: dx = dy * y'(x)   (the chain rule, value by value)
//   elu_from_output (backward only): y' from ELU's output y, alpha > 0: y > 0 ? 1 : y + alpha
//               (= alpha e^x; for a Conv2D or Dense that fused the ELU and kept only y)
// Computed in the values' own precision T, as PyTorch's CPU kernels do.
//
// Parallel strategy: over the values, from 16k of them up; each value is written by one thread.
// The fast twin is cpp/kernels/activation.cpp.
#include <cmath>

#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

namespace {
constexpr int64_t kParallelMin = 1 << 14;
constexpr double kSqrtHalf = 0.70710678118654752440;     // 1 / sqrt(2)
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2 / pi)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1 / sqrt(2 pi)
}  // namespace

// --8<-- [start:activation_forward]
template <typename T>
void activation_forward(T* y,          // (n,)
                        const T* x,    // (n,)
                        int64_t n, Activation kind, double alpha) {
    const T a = (T)alpha;
#pragma omp parallel for num_threads(team_size(n / kParallelMin))
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i];
        switch (kind) {
            case Activation::LeakyRelu: y[i] = v > 0 ? v : a * v; break;
            case Activation::Elu: y[i] = v > 0 ? v : a * std::expm1(v); break;
            case Activation::Gelu: y[i] = T(0.5) * v * (T(1) + std::erf(v * T(kSqrtHalf))); break;
            case Activation::GeluTanh:
                y[i] = T(0.5) * v * (T(1) + std::tanh(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v)));
                break;
            case Activation::EluFromOutput: break;   // backward only (the bindings refuse it here)
        }
    }
}
// --8<-- [end:activation_forward]

// --8<-- [start:activation_backward]
template <typename T>
void activation_backward(T* dx,        // (n,)
                         const T* dy,  // (n,)
                         const T* x,   // (n,): the forward pass's input
                         int64_t n, Activation kind, double alpha) {
    const T a = (T)alpha;
#pragma omp parallel for num_threads(team_size(n / kParallelMin))
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i];
        T slope = T(1);   // y'(v)
        switch (kind) {
            case Activation::LeakyRelu: slope = v > 0 ? T(1) : a; break;
            case Activation::Elu: slope = v > 0 ? T(1) : a * std::exp(v); break;
            case Activation::EluFromOutput: slope = v > 0 ? T(1) : v + a; break;   // v is ELU's output
            case Activation::Gelu:
                slope = T(0.5) * (T(1) + std::erf(v * T(kSqrtHalf))) + v * std::exp(T(-0.5) * v * v) * T(kInvSqrt2Pi);
                break;
            case Activation::GeluTanh: {
                const T t = std::tanh(T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v));
                slope = T(0.5) * (T(1) + t) +
                        T(0.5) * v * (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * v * v);
                break;
            }
        }
        dx[i] = dy[i] * slope;
    }
}
// --8<-- [end:activation_backward]

template void activation_forward<float>(float*, const float*, int64_t, Activation, double);
template void activation_forward<double>(double*, const double*, int64_t, Activation, double);
template void activation_backward<float>(float*, const float*, const float*, int64_t, Activation, double);
template void activation_backward<double>(double*, const double*, const double*, int64_t, Activation, double);

}  // namespace plain
}  // namespace maqueta
