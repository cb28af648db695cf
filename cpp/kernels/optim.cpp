// Optimizer updates, in place, elementwise over P parameters.
// Plain twin, the same math as loops in the order of the formula: cpp/plain/optim.cpp.
//
// Parallel strategy: contiguous chunks of the parameter vector, one per thread, from 16k parameters
// up (below that, waking the threads costs more than it saves). The update is bound by the
// divide/square-root unit, about 1 ns per parameter on one core with AVX-512, so LeNet-5's 61,706
// parameters are worth splitting. Elementwise: the result never depends on the thread count.
#include <algorithm>
#include <cmath>

#include "maqueta/optim.h"
#include "maqueta/runtime.h"

namespace maqueta {
namespace {
constexpr int64_t kParallelMin = 1 << 14;

// body(first, count) once per thread, on contiguous chunks that cover [0, P) exactly.
template <typename F>
void in_chunks(int64_t P, F&& body) {
#pragma omp parallel num_threads(team_size(P / kParallelMin))
    {
        const Range r = range_of(P, team_threads(), thread_index());
        body(r.begin, r.end - r.begin);
    }
}
}  // namespace

// The arithmetic mirrors torch.optim.Adam's single-tensor path step for step, with its scalars
// rounded to T the way PyTorch's kernels round them:
//   g = grad + wd*param;  m = lerp(m, g, 1 - beta1);  v = v*beta2 + (1 - beta2)*g*g
//   param += (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
template <typename T>
void adam_update(T* param, T* m, T* v, const T* grad, int64_t P, int64_t step, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool bias_correction, const IsaKernels& kern) {
    const double bc1 = bias_correction ? 1.0 - std::pow(beta1, (double)step) : 1.0;
    const double bc2 = bias_correction ? 1.0 - std::pow(beta2, (double)step) : 1.0;
    AdamArgs<T> a{};
    a.neg_step_size = (T)(-(lr / bc1));
    a.bc2_sqrt = (T)std::sqrt(bc2);
    a.w1 = (T)(1.0 - beta1);
    a.one_minus_w1 = T(1) - a.w1;
    a.small_w1 = a.w1 < T(0.5);
    a.b2 = (T)beta2;
    a.w2 = (T)(1.0 - beta2);
    a.eps = (T)eps;
    a.wd = (T)weight_decay;
    a.decay = weight_decay != 0.0;
    in_chunks(P, [&](int64_t i0, int64_t n) {
        AdamArgs<T> part = a;
        part.P = n;
        part.param = param + i0;
        part.m = m + i0;
        part.v = v + i0;
        part.grad = grad + i0;
        kern.adam(part);
    });
}

template <typename T>
void sgd_update(T* param, T* velocity, const T* grad, int64_t P, double lr, double momentum,
                double weight_decay, bool nesterov, const IsaKernels& kern) {
    SgdArgs<T> a{};
    a.neg_lr = (T)(-lr);
    a.mu = (T)momentum;
    a.wd = (T)weight_decay;
    a.decay = weight_decay != 0.0;
    a.nesterov = nesterov;
    in_chunks(P, [&](int64_t i0, int64_t n) {
        SgdArgs<T> part = a;
        part.P = n;
        part.param = param + i0;
        part.velocity = momentum != 0.0 ? velocity + i0 : nullptr;
        part.grad = grad + i0;
        kern.sgd(part);
    });
}

template <typename T>
bool all_finite(const T* x, int64_t n, const IsaKernels& kern) {
    return kern.finite(FiniteArgs<T>{.n = n, .x = x});
}

#define MAQUETA_INSTANTIATE(T)                                                                                \
    template void adam_update<T>(T*, T*, T*, const T*, int64_t, int64_t, double, double, double, double, double, \
                                 bool, const IsaKernels&);                                                     \
    template void sgd_update<T>(T*, T*, const T*, int64_t, double, double, double, bool, const IsaKernels&);    \
    template bool all_finite<T>(const T*, int64_t, const IsaKernels&);
MAQUETA_INSTANTIATE(float)
MAQUETA_INSTANTIATE(double)

}  // namespace maqueta
