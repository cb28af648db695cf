// Batch-lane kernels (kernels/lanes.cpp; micro-kernels in isa/lanes.inc). Tensors are stored
// [B][C][H][W][V], V images per vector, with V = isa.lanes<T>() of the instruction set the call
// runs on (the binding checks the arrays against that same isa). The conv segment of a network can
// run in this layout: no multiply-add is wasted on layout, whatever the channel counts and image
// sizes. Convolutions here need stride 1 and no padding; pooling is 2x2, stride 2, with a per-lane
// code (0..3) of each window's maximum instead of plane indices. Dims count blocks in d.N.
#pragma once
#include <cstdint>

#include "maqueta/conv2d.h"
#include "maqueta/maxpool2d.h"
#include "maqueta/runtime.h"

namespace maqueta {

template <typename T>
void lanes_pack(T* lanes,        // [B][E][V]
                const T* flat,   // [N][E]
                int64_t N, int64_t E, const IsaKernels& isa);

template <typename T>
void lanes_unpack(T* flat,          // [N][E]
                  const T* lanes,   // [B][E][V]
                  int64_t N, int64_t E, const IsaKernels& isa);

// With code, the output goes through a 2x2 / stride-2 max-pool on the way out (as
// lanes_maxpool2x2_forward would, bit for bit): y and code are then the pool's output and codes,
// and the convolution's own output is never stored.
template <typename T>
void lanes_conv2d_forward(T* y,                               // [B][O][OH][OW][V], pooled [B][O][OH/2][OW/2][V]
                          typename LaneCode<T>::type* code,   // nullptr, or pooled [B][O][OH/2][OW/2][V]
                          const T* x,                         // [B][C][H][W][V]
                          const T* w,                         // [O, C, KH, KW]
                          const T* b,                         // [O] or nullptr
                          const Conv2dDims& d, bool relu, const IsaKernels& isa);

// With code, dy is the gradient at the output of a 2x2 / stride-2 max-pool over this convolution
// (relu_y: that pool's output, when a ReLU sits between them), taken back through the pool a block
// at a time: the full-size gradient never exists for the whole batch. dx comes out bit for bit as
// after lanes_maxpool2x2_backward; dw and db may differ in the last bits (summed block by block).
template <typename T>
void lanes_conv2d_backward(T* dx,                                     // [B][C][H][W][V] or nullptr
                           T* dw,                                     // [O, C, KH, KW]
                           T* db,                                     // [O]
                           int64_t* bad_codes,                        // [1]: > 0 if a code lies outside 0..3
                           const T* dy,                               // [B][O][OH][OW][V], pooled [..][OH/2][OW/2][V]
                           const typename LaneCode<T>::type* code,    // nullptr, or pooled [B][O][OH/2][OW/2][V]
                           const T* relu_y,                           // nullptr, or pooled [B][O][OH/2][OW/2][V]
                           const T* x,                                // [B][C][H][W][V]
                           const T* w,                                // [O, C, KH, KW]
                           const Conv2dDims& d, bool relu_input, const IsaKernels& isa);

template <typename T>
void lanes_maxpool2x2_forward(T* y,                               // [B][C][OH][OW][V]
                              typename LaneCode<T>::type* code,   // [B][C][OH][OW][V]
                              const T* x,                         // [B][C][H][W][V]
                              const Pool2dDims& d, const IsaKernels& isa);

// A code outside 0..3 passes no gradient; *bad_codes > 0 reports one (from lanes_conv2d_backward too).
template <typename T>
void lanes_maxpool2x2_backward(T* dx,                                  // [B][C][H][W][V]
                               int64_t* bad_codes,                     // [1]
                               const T* dy,                            // [B][C][OH][OW][V]
                               const typename LaneCode<T>::type* code, // [B][C][OH][OW][V]
                               const T* relu_y,                        // [B][C][OH][OW][V] or nullptr
                               const Pool2dDims& d, const IsaKernels& isa);

}  // namespace maqueta
