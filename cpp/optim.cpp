// Optimizer updates, in place, elementwise over P parameters.
//
// Parallel strategy: contiguous chunks of the parameter vector, only when it is large enough to pay
// for waking the threads (LeNet-5's 61,706 parameters update on one). Elementwise, so the result
// never depends on the thread count.
#include <algorithm>
#include <cmath>

#include "maqueta/kernels.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {
constexpr int64_t kParallelMin = 1 << 17;
int team_size(int64_t P) {
    return (int)std::max<int64_t>(1, std::min<int64_t>(num_threads(), P / kParallelMin));
}
}  // namespace

// The arithmetic mirrors torch.optim.Adam's single-tensor path step for step, with its scalars
// rounded to T the way PyTorch's kernels round them:
//   g = grad + wd*param;  m = lerp(m, g, 1 - beta1);  v = v*beta2 + (1 - beta2)*g*g
//   param += (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
template <typename T>
void adam_update(T* param, T* m, T* v, const T* grad, int64_t P, int64_t step, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool bias_correction) {
    const double bc1 = bias_correction ? 1.0 - std::pow(beta1, (double)step) : 1.0;
    const double bc2 = bias_correction ? 1.0 - std::pow(beta2, (double)step) : 1.0;
    const T neg_step_size = (T)(-(lr / bc1));
    const T bc2_sqrt = (T)std::sqrt(bc2);
    const T w1 = (T)(1.0 - beta1), b2 = (T)beta2, w2 = (T)(1.0 - beta2), e = (T)eps, wd = (T)weight_decay;
    const bool small_w1 = w1 < T(0.5);
    const T one_minus_w1 = T(1) - w1;
#pragma omp parallel for schedule(static) num_threads(team_size(P))
    for (int64_t i = 0; i < P; ++i) {
        const T g = weight_decay != 0.0 ? grad[i] + wd * param[i] : grad[i];
        const T mi = small_w1 ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * one_minus_w1;
        const T vi = v[i] * b2 + w2 * g * g;
        const T denom = std::sqrt(vi) / bc2_sqrt + e;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] + neg_step_size * mi / denom;
    }
}

template <typename T>
void sgd_update(T* param, T* velocity, const T* grad, int64_t P, double lr, double momentum,
                double weight_decay, bool nesterov) {
    const T neg_lr = (T)(-lr), mu = (T)momentum, wd = (T)weight_decay;
#pragma omp parallel for schedule(static) num_threads(team_size(P))
    for (int64_t i = 0; i < P; ++i) {
        T g = weight_decay != 0.0 ? grad[i] + wd * param[i] : grad[i];
        if (momentum != 0.0) {
            const T buf = velocity[i] * mu + g;
            velocity[i] = buf;
            g = nesterov ? g + mu * buf : buf;
        }
        param[i] = param[i] + neg_lr * g;
    }
}

template void adam_update<float>(float*, float*, float*, const float*, int64_t, int64_t, double, double, double, double, double, bool);
template void adam_update<double>(double*, double*, double*, const double*, int64_t, int64_t, double, double, double, double, double, bool);
template void sgd_update<float>(float*, float*, const float*, int64_t, double, double, double, bool);
template void sgd_update<double>(double*, double*, const double*, int64_t, double, double, double, bool);

}  // namespace maqueta
