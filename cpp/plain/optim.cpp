// Plain optimizer steps, in place, one parameter at a time.
//
//   param, grad, m, v, velocity: (P,) each (any tensor, seen as a flat vector)
//   Adam (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam), at step t = 1, 2, ...:
//     g = grad + weight_decay * param
//     m = beta1 m + (1 - beta1) g            v = beta2 v + (1 - beta2) g^2
//     m_hat = m / (1 - beta1^t)              v_hat = v / (1 - beta2^t)      (bias correction)
//     param = param - lr m_hat / (sqrt(v_hat) + eps)
//   Without bias correction m_hat = m and v_hat = v: the original notebook's variant.
//   SGD (torch.optim.SGD, dampening 0):
//     g = grad + weight_decay * param;  velocity = momentum velocity + g;
//     param = param - lr (nesterov ? g + momentum velocity : velocity)   (g itself without momentum)
// The scalars and each update are computed in double and rounded to T when stored.
//
// Parallel strategy: over the parameters, from 16k of them up (below, waking threads costs more).
// The fast twin is cpp/kernels/optim.cpp.
#include <cmath>

#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

constexpr int64_t kParallelMin = 1 << 14;

// --8<-- [start:adam_update]
template <typename T>
void adam_update(T* param, T* m, T* v, // (P,) each, updated in place
                 const T* grad,        // (P,)
                 int64_t P, int64_t step, double lr, double beta1, double beta2, double eps,
                 double weight_decay, bool bias_correction) {
    const double bc1 = bias_correction ? 1 - std::pow(beta1, (double)step) : 1;
    const double bc2 = bias_correction ? 1 - std::pow(beta2, (double)step) : 1;
#pragma omp parallel for num_threads(team_size(P / kParallelMin))
    for (int64_t p = 0; p < P; ++p) {
        const double g = grad[p] + weight_decay * param[p];
        m[p] = beta1 * m[p] + (1 - beta1) * g;
        v[p] = beta2 * v[p] + (1 - beta2) * g * g;
        const double m_hat = m[p] / bc1, v_hat = v[p] / bc2;
        param[p] = param[p] - lr * m_hat / (std::sqrt(v_hat) + eps);
    }
}
// --8<-- [end:adam_update]

// --8<-- [start:sgd_update]
template <typename T>
void sgd_update(T* param, T* velocity, // (P,) each, in place; velocity unused (may be nullptr) without momentum
                const T* grad,         // (P,)
                int64_t P, double lr, double momentum, double weight_decay, bool nesterov) {
#pragma omp parallel for num_threads(team_size(P / kParallelMin))
    for (int64_t p = 0; p < P; ++p) {
        double g = grad[p] + weight_decay * param[p];
        if (momentum != 0) {
            velocity[p] = momentum * velocity[p] + g;
            g = nesterov ? g + momentum * velocity[p] : velocity[p];
        }
        param[p] = param[p] - lr * g;
    }
}
// --8<-- [end:sgd_update]

template void adam_update<float>(float*, float*, float*, const float*, int64_t, int64_t, double, double, double,
                                 double, double, bool);
template void adam_update<double>(double*, double*, double*, const double*, int64_t, int64_t, double, double,
                                  double, double, double, bool);
template void sgd_update<float>(float*, float*, const float*, int64_t, double, double, double, bool);
template void sgd_update<double>(double*, double*, const double*, int64_t, double, double, double, bool);

}  // namespace plain
}  // namespace maqueta
