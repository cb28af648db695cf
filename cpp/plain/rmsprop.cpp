// Plain RMSprop step, in place, one parameter at a time.
//
//   param, grad, square_avg, grad_avg, momentum_buffer: (P,) each (any tensor, seen as a flat vector)
//   RMSprop (Hinton's lecture 6e; as torch.optim.RMSprop):
//     g = grad + weight_decay * param
//     square_avg = alpha square_avg + (1 - alpha) g^2          (a running mean of g^2)
//     centered:  grad_avg = grad_avg + (1 - alpha) (g - grad_avg),  avg = sqrt(square_avg - grad_avg^2) + eps
//     otherwise: avg = sqrt(square_avg) + eps
//     momentum > 0: momentum_buffer = momentum momentum_buffer + g / avg,  param = param - lr momentum_buffer
//     otherwise:    param = param - lr g / avg
// Computed in the parameters' precision T, in the order of torch.optim.RMSprop's loop.
//
// Parallel strategy: over the parameters, from 16k of them up (below, waking threads costs more).
// The fast twin is cpp/kernels/rmsprop.cpp.
#include <cmath>

#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

constexpr int64_t kParallelMin = 1 << 14;

// --8<-- [start:rmsprop_update]
template <typename T>
void rmsprop_update(T* param, T* square_avg,  // (P,) each, updated in place
                    T* grad_avg,              // (P,) in place, or nullptr (not centered)
                    T* momentum_buffer,       // (P,) in place, or nullptr (momentum 0)
                    const T* grad,            // (P,)
                    int64_t P, double lr, double alpha, double eps, double weight_decay, double momentum) {
    const T a = (T)alpha, one_minus_a = (T)(1.0 - alpha), e = (T)eps, wd = (T)weight_decay, mu = (T)momentum;
#pragma omp parallel for num_threads(team_size(P / kParallelMin))
    for (int64_t p = 0; p < P; ++p) {
        const T g = weight_decay != 0 ? grad[p] + wd * param[p] : grad[p];
        square_avg[p] = a * square_avg[p] + one_minus_a * g * g;
        T avg;
        if (grad_avg) {
            grad_avg[p] = grad_avg[p] + one_minus_a * (g - grad_avg[p]);
            avg = std::sqrt(square_avg[p] - grad_avg[p] * grad_avg[p]) + e;
        } else {
            avg = std::sqrt(square_avg[p]) + e;
        }
        if (momentum_buffer) {
            momentum_buffer[p] = mu * momentum_buffer[p] + g / avg;
            param[p] = param[p] - (T)lr * momentum_buffer[p];
        } else {
            param[p] = param[p] - (T)lr * (g / avg);
        }
    }
}
// --8<-- [end:rmsprop_update]

template void rmsprop_update<float>(float*, float*, float*, float*, const float*, int64_t, double, double, double,
                                    double, double);
template void rmsprop_update<double>(double*, double*, double*, double*, const double*, int64_t, double, double,
                                     double, double, double);

}  // namespace plain
}  // namespace maqueta
