// The plain tier: every kernel of maqueta again as short nested loops in the order of the math,
// to be read next to the formulas (docs/) and tested against the NumPy oracle (reference.py) and
// the fast kernels (cpp/kernels/). maqueta.set_backend("plain") trains a model on them.
//
// Rules of this directory: one short function per direction, loops in the order of the formula,
// a shape comment per argument, no SIMD, no templates beyond the float type T, OpenMP only on the
// outermost loop over the index that owns the write (so no two threads write one element, and
// each element is one sum in a fixed order: the result does not depend on the thread count).
// `#pragma omp parallel for num_threads(team_size(n))` runs a loop of n iterations on maqueta's
// thread count (maqueta.set_num_threads), never on more threads than iterations; without OpenMP
// the pragma is ignored and the loop runs as written.
// Like the fast kernels they overwrite their outputs; the bindings (cpp/bind/) check the arguments.
#pragma once
#include <cstdint>

#include "maqueta/activation.h"  // Activation: LeakyRelu, Elu, Gelu, GeluTanh; OutputActivation
#include "maqueta/avgpool2d.h"   // AvgPoolDims: P (= N*C), H, W, KH, KW, SH, SW, PH, PW, OH, OW
#include "maqueta/conv2d.h"      // Conv2dDims: N, C, H, W, O, KH, KW, SH, SW, PH, PW, OH, OW
#include "maqueta/maxpool2d.h"   // Pool2dDims: N, C, H, W, KH, KW, SH, SW, OH, OW

namespace maqueta {
namespace plain {

// The activation fused into conv2d_forward and linear_forward, on one output value v: ReLU as
// these kernels always wrote it (NaN passes), leaky ReLU and ELU as activation.cpp's formulas.
template <typename T>
inline T output_activation(T v, const OutputActivation& act) {
    const T a = (T)act.alpha;
    switch (act.kind) {
        case OutputActivation::Relu: return v < T(0) ? T(0) : v;
        case OutputActivation::LeakyRelu: return v > 0 ? v : a * v;
        case OutputActivation::Elu: return v > 0 ? v : a * std::expm1(v);
        case OutputActivation::None: break;
    }
    return v;
}

// conv2d.cpp
template <typename T>
void conv2d_forward(T* y,              // (N, O, OH, OW)
                    const T* x,        // (N, C, H, W)
                    const T* w,        // (O, C, KH, KW)
                    const T* b,        // (O,) or nullptr
                    const T* wscale,   // (O,) or nullptr: filter o's weights times wscale[o]
                    const Conv2dDims& d, const OutputActivation& act);
template <typename T>
void conv2d_backward(T* dx,            // (N, C, H, W) or nullptr (not wanted)
                     T* dw,            // (O, C, KH, KW)
                     T* db,            // (O,)
                     const T* dy,      // (N, O, OH, OW)
                     const T* x,       // (N, C, H, W)
                     const T* w,       // (O, C, KH, KW)
                     const Conv2dDims& d, bool relu_input);

// maxpool2d.cpp
template <typename T>
void maxpool2d_forward(T* y,           // (N, C, OH, OW)
                       int64_t* idx,   // (N, C, OH, OW): argmax within its (H, W) plane
                       const T* x,     // (N, C, H, W)
                       const Pool2dDims& d);
template <typename T>                  // returns how many indices fell outside the plane (skipped)
int64_t maxpool2d_backward(T* dx,              // (N, C, H, W)
                           const T* dy,        // (N, C, OH, OW)
                           const int64_t* idx, // (N, C, OH, OW)
                           const T* relu_y,    // (N, C, OH, OW) or nullptr
                           const Pool2dDims& d);

// linear.cpp
template <typename T>
void linear_forward(T* y,              // (N, OUT)
                    const T* x,        // (N, IN)
                    const T* w,        // (OUT, IN)
                    const T* b,        // (OUT,) or nullptr
                    int64_t N, int64_t IN, int64_t OUT, const OutputActivation& act);
template <typename T>
void linear_backward(T* dx,            // (N, IN) or nullptr
                     T* dw,            // (OUT, IN)
                     T* db,            // (OUT,)
                     const T* dy,      // (N, OUT)
                     const T* x,       // (N, IN)
                     const T* w,       // (OUT, IN)
                     int64_t N, int64_t IN, int64_t OUT, bool relu_input);

// loss.cpp: returns the mean loss
template <typename T>
double softmax_cross_entropy(T* dlogits,             // (N, K)
                             const T* logits,        // (N, K)
                             const int64_t* targets, // (N,), each in [0, K)
                             int64_t N, int64_t K);

// optim.cpp: in place over P parameters
template <typename T>
void adam_update(T* param, T* m, T* v, // (P,) each, updated in place
                 const T* grad,        // (P,)
                 int64_t P, int64_t step, double lr, double beta1, double beta2, double eps,
                 double weight_decay, bool bias_correction);
template <typename T>
void sgd_update(T* param, T* velocity, // (P,) each, in place; velocity may be nullptr without momentum
                const T* grad,         // (P,)
                int64_t P, double lr, double momentum, double weight_decay, bool nesterov);

// rmsprop.cpp: in place over P parameters
template <typename T>
void rmsprop_update(T* param, T* square_avg,  // (P,) each, updated in place
                    T* grad_avg,              // (P,) in place, or nullptr (not centered)
                    T* momentum_buffer,       // (P,) in place, or nullptr (momentum 0)
                    const T* grad,            // (P,)
                    int64_t P, double lr, double alpha, double eps, double weight_decay, double momentum);

// normalization.cpp: x is (N, C, S), S = H*W (1 for dense features)
template <typename T>
void batchnorm_forward(T* y,             // (N, C, S)
                       T* mean, T* var,  // (C,) each: the batch's statistics (var biased)
                       const T* x,       // (N, C, S)
                       const T* weight,  // (C,) or nullptr
                       const T* bias,    // (C,) or nullptr
                       int64_t N, int64_t C, int64_t S, double eps, bool relu);
template <typename T>
void batchnorm_backward(T* dx,                   // (N, C, S)
                        T* dweight, T* dbias,    // (C,) each, or nullptr (no weight and bias)
                        const T* dy,             // (N, C, S)
                        const T* relu_output,    // (N, C, S) or nullptr: dy * (relu_output > 0) for dy
                        const T* x,              // (N, C, S)
                        const T* weight,         // (C,) or nullptr
                        const T* mean, const T* var,  // (C,) each, from batchnorm_forward
                        int64_t N, int64_t C, int64_t S, double eps);
template <typename T>
void channel_affine(T* y,                    // (N, C, S)
                    const T* x,              // (N, C, S)
                    const T* scale,          // (C,)
                    const T* shift,          // (C,)
                    int64_t N, int64_t C, int64_t S, bool relu);

// dropout.cpp: x is (U, S), U units kept or dropped together
template <typename T>
void dropout_forward(T* y,             // (U, S)
                     uint8_t* mask,    // (U,): 1 where the unit is kept
                     const T* x,       // (U, S)
                     int64_t U, int64_t S, double p, uint64_t seed);
template <typename T>
void dropout_backward(T* dx,               // (U, S)
                      const T* dy,         // (U, S)
                      const uint8_t* mask, // (U,)
                      int64_t U, int64_t S, double p);

// avgpool2d.cpp: P = N*C planes
template <typename T>
void avgpool2d_forward(T* y,           // (P, OH, OW)
                       const T* x,     // (P, H, W)
                       const AvgPoolDims& d);
template <typename T>
void avgpool2d_backward(T* dx,         // (P, H, W)
                        const T* dy,   // (P, OH, OW)
                        const AvgPoolDims& d);

// activation.cpp: element-wise over n values
template <typename T>
void activation_forward(T* y,          // (n,)
                        const T* x,    // (n,)
                        int64_t n, Activation kind, double alpha);
template <typename T>
void activation_backward(T* dx,        // (n,)
                         const T* dy,  // (n,)
                         const T* x,   // (n,): the forward pass's input
                         int64_t n, Activation kind, double alpha);

}  // namespace plain
}  // namespace maqueta
