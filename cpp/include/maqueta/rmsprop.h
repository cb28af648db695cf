// RMSprop kernel (kernels/rmsprop.cpp): an in-place elementwise update over P parameters, as
// torch.optim.RMSprop. Plain reference: python/maqueta/reference.py (rmsprop_update).
#pragma once
#include <cstdint>

namespace maqueta {

// g = grad + weight_decay * param; square_avg = alpha square_avg + (1 - alpha) g^2;
// centered (grad_avg not null): grad_avg += (1 - alpha)(g - grad_avg), avg = sqrt(square_avg - grad_avg^2) + eps,
// else avg = sqrt(square_avg) + eps; then with momentum: buffer = momentum buffer + g / avg,
// param -= lr buffer; without: param -= lr g / avg.
template <typename T>
void rmsprop_update(T* param, T* square_avg,  // [P] each, updated in place
                    T* grad_avg,              // [P] or nullptr (not centered)
                    T* momentum_buffer,       // [P] or nullptr (momentum == 0)
                    const T* grad,            // [P]
                    int64_t P, double lr, double alpha, double eps, double weight_decay, double momentum);

}  // namespace maqueta
