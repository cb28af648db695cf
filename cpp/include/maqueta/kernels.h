// maqueta kernels: the operations a convnet trains with, on raw contiguous buffers.
//
// Dimension legend
//   N batch        C input channels     H, W input height and width
//   O output channels (filters)         KH, KW kernel height and width
//   SH, SW stride  PH, PW zero padding  OH = (H + 2*PH - KH) / SH + 1,  OW = (W + 2*PW - KW) / SW + 1
//   IN, OUT features of a dense layer   P parameters of an optimizer step
// Layouts are PyTorch's: activations NCHW, conv weights OIHW, dense weights [OUT, IN].
// Arguments go outputs, inputs, weights, dims. Every kernel overwrites its outputs; the caller owns
// accumulation and buffers. All kernels exist for float and double.
#pragma once
#include <cstdint>

#include "maqueta/microkernels.h"

namespace maqueta {

struct Conv2dDims {
    int64_t N, C, H, W, O, KH, KW, SH, SW, PH, PW, OH, OW;
};

struct Pool2dDims {
    int64_t N, C, H, W, KH, KW, SH, SW, OH, OW;
};

// y = conv(x, w) + b, then max(y, 0) when relu is set. Cross-correlation with zero padding,
// as torch.nn.functional.conv2d.
template <typename T>
void conv2d_forward(T* y,         // [N, O, OH, OW]
                    const T* x,   // [N, C, H, W]
                    const T* w,   // [O, C, KH, KW]
                    const T* b,   // [O] or nullptr
                    const Conv2dDims& d, bool relu);

// Gradients of conv2d_forward (without relu) given dy. dx may be nullptr: the first layer of a
// network needs no input gradient, and skipping it skips its work. With relu_input, x is the
// output of a ReLU and dx is zeroed where x <= 0 (the gradient through that ReLU, fused).
template <typename T>
void conv2d_backward(T* dx,        // [N, C, H, W] or nullptr
                     T* dw,        // [O, C, KH, KW]
                     T* db,        // [O] or nullptr
                     const T* dy,  // [N, O, OH, OW]
                     const T* x,   // [N, C, H, W]
                     const T* w,   // [O, C, KH, KW]
                     const Conv2dDims& d, bool relu_input);

// y = max over each window; idx = the argmax's offset inside its (H, W) plane, as PyTorch returns it.
// Windows that do not fit are dropped (ceil_mode=False). The first maximum wins ties; NaN wins over
// any number (the first NaN of the window), so NaN propagates.
template <typename T>
void maxpool2d_forward(T* y,          // [N, C, OH, OW]
                       int64_t* idx,  // [N, C, OH, OW]
                       const T* x,    // [N, C, H, W]
                       const Pool2dDims& d);

// dx[plane][idx] += dy, over a zeroed dx. An idx outside [0, H*W) is skipped and counted in the
// return value (the binding checks them first; this guards against their changing meanwhile).
// With relu_y (the pooled output of a ReLU'd input), only windows whose maximum y > 0 pass their
// gradient: the ReLU's own gradient at the argmax, fused.
template <typename T>
int64_t maxpool2d_backward(T* dx,            // [N, C, H, W]
                        const T* dy,         // [N, C, OH, OW]
                        const int64_t* idx,  // [N, C, OH, OW]
                        const T* relu_y,     // [N, C, OH, OW] or nullptr
                        const Pool2dDims& d);

// y = x w^T + b, then max(y, 0) when relu is set (a torch.nn.Linear).
template <typename T>
void linear_forward(T* y,         // [N, OUT]
                    const T* x,   // [N, IN]
                    const T* w,   // [OUT, IN]
                    const T* b,   // [OUT] or nullptr
                    int64_t N, int64_t IN, int64_t OUT, bool relu);

// Gradients of linear_forward (without relu); relu_input as for conv2d_backward.
template <typename T>
void linear_backward(T* dx,        // [N, IN] or nullptr
                     T* dw,        // [OUT, IN]
                     T* db,        // [OUT] or nullptr
                     const T* dy,  // [N, OUT]
                     const T* x,   // [N, IN]
                     const T* w,   // [OUT, IN]
                     int64_t N, int64_t IN, int64_t OUT, bool relu_input);

// Adam (Kingma & Ba 2015, Algorithm 1) computed as torch.optim.Adam does: eps is added after the
// square root of the bias-corrected second moment; weight_decay is L2 added to the gradient.
// Without bias correction it is the update the original notebook used.
template <typename T>
void adam_update(T* param, T* m, T* v,  // [P] each, updated in place
                 const T* grad,         // [P]
                 int64_t P, int64_t step, double lr, double beta1, double beta2, double eps,
                 double weight_decay, bool bias_correction);

// SGD with optional momentum (torch.optim.SGD, dampening 0): velocity = momentum*velocity + g,
// param -= lr * (nesterov ? g + momentum*velocity : velocity). Without momentum velocity is unused.
template <typename T>
void sgd_update(T* param, T* velocity,  // [P] each, updated in place (velocity may be nullptr if momentum == 0)
                const T* grad,          // [P]
                int64_t P, double lr, double momentum, double weight_decay, bool nesterov);

// ---- Batch-lane layout: [B][C][H][W][V] with V = lane_width<T>() images per vector (lanes.inc)
// The conv segment of a network can run in it: no multiply-add is wasted on layout, whatever the
// channel counts and image sizes. Convolutions here need stride 1 and no padding; pooling is 2x2,
// stride 2, with a per-lane code (0..3) of each window's maximum instead of plane indices.
template <typename T>
int lane_width();

// Every lane kernel takes the lane width V its arrays were checked for and returns false,
// touching nothing, if the active instruction set's width differs (it was switched meanwhile).
template <typename T>
bool lanes_pack(T* lanes,        // [B][E][V]
                const T* flat,   // [N][E]
                int64_t N, int64_t E, int64_t V);

template <typename T>
bool lanes_unpack(T* flat,          // [N][E]
                  const T* lanes,   // [B][E][V]
                  int64_t N, int64_t E, int64_t V);

// With code, the output goes through a 2x2 / stride-2 max-pool on the way out (as
// lanes_maxpool2x2_forward would, bit for bit): y and code are then the pool's output and codes,
// and the convolution's own output is never stored.
template <typename T>
bool lanes_conv2d_forward(T* y,                               // [B][O][OH][OW][V], pooled [B][O][OH/2][OW/2][V]
                          typename LaneCode<T>::type* code,   // nullptr, or pooled [B][O][OH/2][OW/2][V]
                          const T* x,                         // [B][C][H][W][V]
                          const T* w,                         // [O, C, KH, KW]
                          const T* b,                         // [O] or nullptr
                          const Conv2dDims& d, bool relu, int64_t V);   // d.N counts blocks here

// With code, dy is the gradient at the output of a 2x2 / stride-2 max-pool over this convolution
// (relu_y: that pool's output, when a ReLU sits between them), taken back through the pool a block
// at a time: the full-size gradient never exists for the whole batch. dx comes out bit for bit as
// after lanes_maxpool2x2_backward; dw and db may differ in the last bits (summed block by block).
template <typename T>
bool lanes_conv2d_backward(T* dx,                                     // [B][C][H][W][V] or nullptr
                           T* dw,                                     // [O, C, KH, KW]
                           T* db,                                     // [O]
                           int64_t* bad_codes,                        // [1]: > 0 if a code lies outside 0..3
                           const T* dy,                               // [B][O][OH][OW][V], pooled [..][OH/2][OW/2][V]
                           const typename LaneCode<T>::type* code,    // nullptr, or pooled [B][O][OH/2][OW/2][V]
                           const T* relu_y,                           // nullptr, or pooled [B][O][OH/2][OW/2][V]
                           const T* x,                                // [B][C][H][W][V]
                           const T* w,                                // [O, C, KH, KW]
                           const Conv2dDims& d, bool relu_input, int64_t V);

template <typename T>
bool lanes_maxpool2x2_forward(T* y,                             // [B][C][OH][OW][V]
                              typename LaneCode<T>::type* code,   // [B][C][OH][OW][V]
                              const T* x,                       // [B][C][H][W][V]
                              const Pool2dDims& d, int64_t V);  // d.N counts blocks here

// A code outside 0..3 passes no gradient; *bad_codes > 0 reports one (from lanes_conv2d_backward too).
template <typename T>
bool lanes_maxpool2x2_backward(T* dx,                                  // [B][C][H][W][V]
                               int64_t* bad_codes,                     // [1]
                               const T* dy,                            // [B][C][OH][OW][V]
                               const typename LaneCode<T>::type* code, // [B][C][OH][OW][V]
                               const T* relu_y,                        // [B][C][OH][OW][V] or nullptr
                               const Pool2dDims& d, int64_t V);

// Whether every value of x is finite.
template <typename T>
bool all_finite(const T* x,  // [n]
                int64_t n);

// Softmax cross-entropy on logits, averaged over the batch, and its gradient
// dlogits = (softmax(logits) - onehot(targets)) / N. Returns the loss (computed in double).
template <typename T>
double softmax_cross_entropy(T* dlogits,             // [N, K]
                             const T* logits,        // [N, K]
                             const int64_t* targets, // [N], each in [0, K)
                             int64_t N, int64_t K);

}  // namespace maqueta
