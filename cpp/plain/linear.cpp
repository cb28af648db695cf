// Plain dense layer: y = x w^T + b and its gradients, as loops over the matrix indices.
//
//   x (N, IN), w (OUT, IN), b (OUT,) -> y (N, OUT)
//   y[n, o] = b[o] + sum over i of x[n, i] * w[o, i]
//
// Parallel strategy: y and dx over the rows n, dw and db over the outputs o.
// The fast twin is cpp/kernels/linear.cpp.
#include "plain.h"

#include "maqueta/runtime.h"

namespace maqueta {
namespace plain {

// --8<-- [start:linear_forward]
template <typename T>
void linear_forward(T* y,              // (N, OUT)
                    const T* x,        // (N, IN)
                    const T* w,        // (OUT, IN)
                    const T* b,        // (OUT,) or nullptr
                    int64_t N, int64_t IN, int64_t OUT, const OutputActivation& act) {
#pragma omp parallel for num_threads(team_size(N))
    for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < OUT; ++o) {
            T sum = 0;
            for (int64_t i = 0; i < IN; ++i) sum += x[n * IN + i] * w[o * IN + i];
            if (b) sum += b[o];
            y[n * OUT + o] = output_activation(sum, act);   // none, ReLU, leaky ReLU, ELU
        }
}
// --8<-- [end:linear_forward]

//   dx[n, i] = sum over o of dy[n, o] * w[o, i]     (zero where x <= 0 with relu_input)
//   dw[o, i] = sum over n of dy[n, o] * x[n, i]
//   db[o]    = sum over n of dy[n, o]
// --8<-- [start:linear_backward]
template <typename T>
void linear_backward(T* dx,            // (N, IN), or nullptr when not wanted
                     T* dw,            // (OUT, IN)
                     T* db,            // (OUT,)
                     const T* dy,      // (N, OUT)
                     const T* x,       // (N, IN)
                     const T* w,       // (OUT, IN)
                     int64_t N, int64_t IN, int64_t OUT, bool relu_input) {
#pragma omp parallel for num_threads(team_size(OUT))
    for (int64_t o = 0; o < OUT; ++o) {
        T bsum = 0;
        for (int64_t n = 0; n < N; ++n) bsum += dy[n * OUT + o];
        db[o] = bsum;
        for (int64_t i = 0; i < IN; ++i) {
            T sum = 0;
            for (int64_t n = 0; n < N; ++n) sum += dy[n * OUT + o] * x[n * IN + i];
            dw[o * IN + i] = sum;
        }
    }
    if (!dx) return;
#pragma omp parallel for num_threads(team_size(N))
    for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < IN; ++i) {
            T sum = 0;
            for (int64_t o = 0; o < OUT; ++o) sum += dy[n * OUT + o] * w[o * IN + i];
            dx[n * IN + i] = relu_input && !(x[n * IN + i] > T(0)) ? T(0) : sum;
        }
}
// --8<-- [end:linear_backward]

template void linear_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                    const OutputActivation&);
template void linear_forward<double>(double*, const double*, const double*, const double*, int64_t, int64_t, int64_t,
                                     const OutputActivation&);
template void linear_backward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t,
                                     int64_t, int64_t, bool);
template void linear_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                      int64_t, int64_t, int64_t, bool);

}  // namespace plain
}  // namespace maqueta
