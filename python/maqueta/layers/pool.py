"""MaxPool2D: max-pooling as PyTorch's, in NCHW and (2x2, stride 2) in the batch-lane layout."""
from __future__ import annotations

import numpy as np

from .. import _core
from .._args import pair
from ..backend import kernels
from .base import Layer, format_shape

__all__ = ["MaxPool2D"]


class MaxPool2D(Layer):
    """Max-pooling, as ``torch.nn.MaxPool2d`` (ceil_mode=False); stride defaults to kernel_size.
    Only windows whose maximum is positive pass a gradient, so it applies a fused ReLU's gradient."""

    applies_relu_gradient = True

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)

    @property
    def lane_pool2x2(self):
        return self.kernel_size == (2, 2) and self.stride == (2, 2)

    def get_config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}

    def __repr__(self):
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return f"MaxPool2D({k})" if self.stride == self.kernel_size else f"MaxPool2D({k}, stride={self.stride})"

    def expects(self):
        return "(N, C, H, W)"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {format_shape(input_shape)}")
        c, h, w = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if h is None or w is None:
            return (c, None, None)
        if kh > h or kw > w:
            raise ValueError(f"{self.describe()}: window {self.kernel_size} is larger than its input "
                             f"{format_shape(input_shape)}")
        return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)

    # ---- NCHW
    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        call.indices = np.empty((n, *out_shape), np.int64)
        if call.need_dx:
            call.dx = np.empty((n, *in_shape), dtype)

    def forward(self, x, call):
        y, indices = kernels().maxpool2d_forward(x, self.kernel_size, self.stride, out=call.out,
                                                 indices_out=call.indices)
        call.cache = (indices, x.shape, y)
        return y

    def backward(self, dy, call):
        indices, shape, y = call.cache
        return kernels().maxpool2d_backward(dy, indices, shape, relu_output=y if call.relu_input else None,
                                            out=call.dx)

    # ---- batch lanes: each output keeps a 2-bit code of where its window's maximum was
    def has_lane_kernel(self):
        return self.lane_pool2x2

    def allocate_lanes(self, call, lanes, in_shape, out_shape):
        call.out = lanes(out_shape)
        call.indices = lanes(out_shape, code=True)
        if call.need_dx:
            call.dx = lanes(in_shape)

    def forward_lanes(self, x, call):
        _core._lanes_maxpool2x2_forward(x, call.out, call.indices)
        return call.out

    def backward_lanes(self, dy, call):
        _core._lanes_maxpool2x2_backward(dy, call.indices, call.out if call.relu_input else None, call.dx)
        return call.dx

    def to_onnx(self, graph, x):   # no padding, floor mode: ONNX's defaults
        return graph.add_node("MaxPool", [x], f"{self.index}.maxpool", kernel_shape=list(self.kernel_size),
                              strides=list(self.stride))
