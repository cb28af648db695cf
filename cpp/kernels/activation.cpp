// Element-wise activations forward and backward, computed in the values' own precision as
// PyTorch's CPU kernels do. Parallel strategy: contiguous ranges of values. Those without a
// library call (the leaky ReLU, ELU's gradient from its output) run on the instruction set's
// micro-kernel (ActivationArgs), in the same arithmetic; the others one value at a time.
// The plain twin is cpp/plain/activation.cpp.
#include <algorithm>
#include <cmath>

#include "maqueta/activation.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {

int threads_for(int64_t n) { return team_size(std::max<int64_t>(1, n / 65536)); }

constexpr double kSqrtHalf = 0.70710678118654752440;   // 1 / sqrt(2)
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)

template <typename T>
T forward_one(T x, Activation kind, T alpha) {
    switch (kind) {
        case Activation::LeakyRelu: return leaky_relu_value(x, alpha);   // as a fused one (activation.h)
        case Activation::Elu: return elu_value(x, alpha);
        case Activation::Gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kSqrtHalf)));
        case Activation::GeluTanh:
            return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x)));
        case Activation::EluFromOutput: break;   // backward only (the bindings refuse it here)
    }
    return x;
}

template <typename T>
T derivative(T x, Activation kind, T alpha) {
    switch (kind) {
        case Activation::LeakyRelu: return x > 0 ? T(1) : alpha;
        case Activation::Elu: return x > 0 ? T(1) : alpha * std::exp(x);
        case Activation::EluFromOutput: return x > 0 ? T(1) : x + alpha;   // x is the output here
        case Activation::Gelu:
            return T(0.5) * (T(1) + std::erf(x * T(kSqrtHalf))) + x * std::exp(T(-0.5) * x * x) * T(kInvSqrt2Pi);
        case Activation::GeluTanh: {
            const T t = std::tanh(T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x));
            return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * x * x);
        }
    }
    return T(1);
}

// Runs part(i0, i1) over consecutive ranges of 16k values, dealt to the team in order.
template <typename F>
void in_ranges(int64_t n, F part) {
    constexpr int64_t kRange = 16384;
    const int64_t ranges = (n + kRange - 1) / kRange;
#pragma omp parallel for schedule(static) num_threads(threads_for(n))
    for (int64_t r = 0; r < ranges; ++r) part(r * kRange, std::min(n, (r + 1) * kRange));
}

}  // namespace

template <typename T>
void activation_forward(T* y, const T* x, int64_t n, Activation kind, double alpha, const IsaKernels& kern) {
    const T a = (T)alpha;
    if (kind == Activation::LeakyRelu) {
        in_ranges(n, [&](int64_t i0, int64_t i1) {
            kern.activation(ActivationArgs<T>{.n = i1 - i0, .out = y + i0, .x = x + i0, .dy = nullptr, .alpha = a,
                                              .from_output = false});
        });
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads_for(n))
    for (int64_t i = 0; i < n; ++i) y[i] = forward_one(x[i], kind, a);
}

template <typename T>
void activation_backward(T* dx, const T* dy, const T* x, int64_t n, Activation kind, double alpha,
                         const IsaKernels& kern) {
    const T a = (T)alpha;
    if (kind == Activation::LeakyRelu || kind == Activation::EluFromOutput) {
        in_ranges(n, [&](int64_t i0, int64_t i1) {
            kern.activation(ActivationArgs<T>{.n = i1 - i0, .out = dx + i0, .x = x + i0, .dy = dy + i0, .alpha = a,
                                              .from_output = kind == Activation::EluFromOutput});
        });
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads_for(n))
    for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * derivative(x[i], kind, a);
}

template void activation_forward<float>(float*, const float*, int64_t, Activation, double, const IsaKernels&);
template void activation_forward<double>(double*, const double*, int64_t, Activation, double, const IsaKernels&);
template void activation_backward<float>(float*, const float*, const float*, int64_t, Activation, double,
                                         const IsaKernels&);
template void activation_backward<double>(double*, const double*, const double*, int64_t, Activation, double,
                                          const IsaKernels&);

}  // namespace maqueta
