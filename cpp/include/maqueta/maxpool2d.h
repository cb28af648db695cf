// max-pool kernels (kernels/maxpool2d.cpp). NCHW, as PyTorch.
//   OH = (H - KH) / SH + 1,  OW = (W - KW) / SW + 1   (windows that do not fit are dropped)
#pragma once
#include <cstdint>

#include "maqueta/runtime.h"

namespace maqueta {

struct Pool2dDims {
    int64_t N, C, H, W, KH, KW, SH, SW, OH, OW;
};

// y = max over each window; idx = the argmax's offset inside its (H, W) plane, as PyTorch returns it.
// Windows that do not fit are dropped (ceil_mode=False). The first maximum wins ties; NaN wins over
// any number (the first NaN of the window), so NaN propagates.
template <typename T>
void maxpool2d_forward(T* y,          // [N, C, OH, OW]
                       int64_t* idx,  // [N, C, OH, OW]
                       const T* x,    // [N, C, H, W]
                       const Pool2dDims& d, const IsaKernels& isa);

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

}  // namespace maqueta
