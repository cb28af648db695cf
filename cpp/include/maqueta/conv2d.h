// conv2d kernels (kernels/conv2d_forward.cpp, kernels/conv2d_backward.cpp).
//
// Dimension legend
//   N batch        C input channels     H, W input height and width
//   O output channels (filters)         KH, KW kernel height and width
//   SH, SW stride  PH, PW zero padding  OH = (H + 2*PH - KH) / SH + 1,  OW = (W + 2*PW - KW) / SW + 1
// Layouts are PyTorch's: activations NCHW, weights OIHW. Like every kernel (see runtime.h), these
// overwrite their outputs and run on the micro-kernels of the IsaKernels they are given.
#pragma once
#include <cstdint>

#include "maqueta/activation.h"
#include "maqueta/runtime.h"

namespace maqueta {

struct Conv2dDims {
    int64_t N, C, H, W, O, KH, KW, SH, SW, PH, PW, OH, OW;
};

// The convolution algorithms (kernels/conv2d_common.h). Auto chooses by shape and vector width;
// the others force one where it applies, so that tests reach every path.
enum class ConvAlgo { Auto, Direct, Im2col, Pixel, Winograd };

// y = conv(x, w) + b, then the fused activation act (none, max(y, 0), leaky ReLU or ELU: see
// OutputActivation). Cross-correlation with zero padding, as torch.nn.functional.conv2d.
// With wscale, filter o's weights are w[o] * wscale[o] (each product rounded to T): a batch norm
// in evaluation mode folded into the convolution, whose shift the caller has added to b.
template <typename T>
void conv2d_forward(T* y,              // [N, O, OH, OW]
                    const T* x,        // [N, C, H, W]
                    const T* w,        // [O, C, KH, KW]
                    const T* b,        // [O] or nullptr
                    const T* wscale,   // [O] or nullptr
                    const Conv2dDims& d, const OutputActivation& act, const IsaKernels& isa,
                    ConvAlgo algo = ConvAlgo::Auto);

// Gradients of conv2d_forward (without its activation) given dy. dx may be nullptr: the first layer of a
// network needs no input gradient, and skipping it skips its work. With relu_input, x is the
// output of a ReLU and dx is zeroed where x <= 0 (the gradient through that ReLU, fused).
template <typename T>
void conv2d_backward(T* dx,        // [N, C, H, W] or nullptr
                     T* dw,        // [O, C, KH, KW]
                     T* db,        // [O] or nullptr
                     const T* dy,  // [N, O, OH, OW]
                     const T* x,   // [N, C, H, W]
                     const T* w,   // [O, C, KH, KW]
                     const Conv2dDims& d, bool relu_input, const IsaKernels& isa, ConvAlgo algo = ConvAlgo::Auto);

}  // namespace maqueta
