// RMSprop update, in the order of torch.optim.RMSprop's single-tensor loop, in the parameters'
// precision. Parallel strategy: contiguous ranges of parameters; each is updated by one thread.
// The plain twin is cpp/plain/rmsprop.cpp.
#include <algorithm>
#include <cmath>

#include "maqueta/rmsprop.h"
#include "maqueta/runtime.h"

namespace maqueta {

template <typename T>
void rmsprop_update(T* param, T* square_avg, T* grad_avg, T* momentum_buffer, const T* grad, int64_t P, double lr,
                    double alpha, double eps, double weight_decay, double momentum) {
    const T a = (T)alpha, one_minus_a = (T)(1.0 - alpha), e = (T)eps, wd = (T)weight_decay, mu = (T)momentum,
            step = (T)lr;
#pragma omp parallel for schedule(static) num_threads(team_size(std::max<int64_t>(1, P / 65536)))
    for (int64_t i = 0; i < P; ++i) {
        const T g = weight_decay != 0 ? grad[i] + wd * param[i] : grad[i];
        square_avg[i] = a * square_avg[i] + one_minus_a * g * g;
        T avg;
        if (grad_avg) {
            grad_avg[i] += one_minus_a * (g - grad_avg[i]);
            avg = std::sqrt(square_avg[i] - grad_avg[i] * grad_avg[i]) + e;
        } else {
            avg = std::sqrt(square_avg[i]) + e;
        }
        if (momentum_buffer) {
            momentum_buffer[i] = mu * momentum_buffer[i] + g / avg;
            param[i] -= step * momentum_buffer[i];
        } else {
            param[i] -= step * (g / avg);
        }
    }
}

template void rmsprop_update<float>(float*, float*, float*, float*, const float*, int64_t, double, double, double,
                                    double, double);
template void rmsprop_update<double>(double*, double*, double*, double*, const double*, int64_t, double, double,
                                     double, double, double);

}  // namespace maqueta
