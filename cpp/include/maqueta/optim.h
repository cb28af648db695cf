// Optimizer kernels (kernels/optim.cpp): in-place elementwise updates over P parameters.
#pragma once
#include <cstdint>

#include "maqueta/runtime.h"

namespace maqueta {

// Adam (Kingma & Ba 2015, Algorithm 1) computed as torch.optim.Adam does: eps is added after the
// square root of the bias-corrected second moment; weight_decay is L2 added to the gradient.
// Without bias correction it is the update the original notebook used.
template <typename T>
void adam_update(T* param, T* m, T* v,  // [P] each, updated in place
                 const T* grad,         // [P]
                 int64_t P, int64_t step, double lr, double beta1, double beta2, double eps,
                 double weight_decay, bool bias_correction, const IsaKernels& isa);

// SGD with optional momentum (torch.optim.SGD, dampening 0): velocity = momentum*velocity + g,
// param -= lr * (nesterov ? g + momentum*velocity : velocity). Without momentum velocity is unused.
template <typename T>
void sgd_update(T* param, T* velocity,  // [P] each, updated in place (velocity may be nullptr if momentum == 0)
                const T* grad,          // [P]
                int64_t P, double lr, double momentum, double weight_decay, bool nesterov, const IsaKernels& isa);

// Whether every value of x is finite (the training loop's check of the gradients).
template <typename T>
bool all_finite(const T* x,  // [n]
                int64_t n, const IsaKernels& isa);

}  // namespace maqueta
