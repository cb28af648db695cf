"""Pooling: MaxPool2D (in NCHW, and 2x2 stride 2 in the batch-lane layout), AvgPool2D and
GlobalAvgPool2D, as PyTorch's."""
from __future__ import annotations

import numpy as np

from .. import _core
from .._args import pair
from ..backend import kernels
from .base import Layer, format_shape

__all__ = ["MaxPool2D", "AvgPool2D", "GlobalAvgPool2D"]


class _Pool2D(Layer):
    """What the windowed poolings share: kernel_size, stride (default kernel_size), padding (at
    most half the kernel, as PyTorch's), their config and output shape."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self.padding = _pool_padding(padding, self.kernel_size)

    def get_config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}

    def __repr__(self):
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        extra = "" if self.stride == self.kernel_size else f", stride={self.stride}"
        extra += "" if self.padding == (0, 0) else f", padding={self.padding}"
        return f"{type(self).__name__}({k}{extra})"

    def expects(self):
        return "(N, C, H, W)"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {format_shape(input_shape)}")
        c, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h is None or w is None:
            return (c, None, None)
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(f"{self.describe()}: window {self.kernel_size} is larger than its padded input "
                             f"{(h + 2 * ph, w + 2 * pw)} (input shape {format_shape(input_shape)})")
        return (c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


class MaxPool2D(_Pool2D):
    """Max-pooling, as ``torch.nn.MaxPool2d`` (ceil_mode=False); stride defaults to kernel_size.
    Only windows whose maximum is positive pass a gradient, so it applies a fused ReLU's gradient."""

    applies_relu_gradient = True

    @property
    def lane_pool2x2(self):
        return self.kernel_size == (2, 2) and self.stride == (2, 2) and self.padding == (0, 0)

    # ---- NCHW; padding is -inf, so a padded place is never a window's maximum (as PyTorch's)
    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        call.indices = np.empty((n, *out_shape), np.int64)
        if call.need_dx and self.padding == (0, 0):
            call.dx = np.empty((n, *in_shape), dtype)

    def forward(self, x, call):
        padded = x
        if self.padding != (0, 0):
            (ph, pw), (h, w) = self.padding, x.shape[2:]
            padded = np.full((*x.shape[:2], h + 2 * ph, w + 2 * pw), -np.inf, x.dtype)
            padded[:, :, ph:ph + h, pw:pw + w] = x
        y, indices = kernels().maxpool2d_forward(padded, self.kernel_size, self.stride, out=call.out,
                                                 indices_out=call.indices)
        call.cache = (indices, padded.shape, y)
        return y

    def backward(self, dy, call):
        indices, shape, y = call.cache
        dx = kernels().maxpool2d_backward(dy, indices, shape, relu_output=y if call.relu_input else None,
                                          out=call.dx)
        if self.padding != (0, 0):
            (ph, pw), (h, w) = self.padding, (shape[2] - 2 * self.padding[0], shape[3] - 2 * self.padding[1])
            dx = dx[:, :, ph:ph + h, pw:pw + w]
        return dx

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

    def to_onnx(self, graph, x):   # floor mode, as ONNX's default; ONNX pads max-pools with -inf too
        (ph, pw) = self.padding
        return graph.add_node("MaxPool", [x], f"{self.index}.maxpool", kernel_shape=list(self.kernel_size),
                              strides=list(self.stride), pads=[ph, pw, ph, pw])

class AvgPool2D(_Pool2D):
    """Average pooling, as ``torch.nn.AvgPool2d`` (ceil_mode=False, count_include_pad=True: zero
    padding counts in each window's average); stride defaults to kernel_size."""

    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        if call.need_dx:
            call.dx = np.empty((n, *in_shape), dtype)

    def forward(self, x, call):
        call.cache = x.shape
        return kernels().avgpool2d_forward(x, self.kernel_size, self.stride, self.padding, out=call.out)

    def backward(self, dy, call):
        return kernels().avgpool2d_backward(dy, call.cache, self.kernel_size, self.stride, self.padding, out=call.dx)

    def to_onnx(self, graph, x):
        (ph, pw) = self.padding
        return graph.add_node("AveragePool", [x], f"{self.index}.avgpool", kernel_shape=list(self.kernel_size),
                              strides=list(self.stride), pads=[ph, pw, ph, pw], count_include_pad=1)


class GlobalAvgPool2D(Layer):
    """The average of each channel: (C, H, W) -> (C,), as Keras's GlobalAveragePooling2D (PyTorch:
    AdaptiveAvgPool2d(1) then Flatten)."""

    def expects(self):
        return "(N, C, H, W)"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {format_shape(input_shape)}")
        return input_shape[:1]

    def forward(self, x, call):
        call.cache = x.shape
        window = x.shape[2:]
        return kernels().avgpool2d_forward(x, window, window, 0).reshape(x.shape[:2])

    def backward(self, dy, call):
        shape = call.cache
        return kernels().avgpool2d_backward(dy.reshape(*dy.shape, 1, 1), shape, shape[2:], shape[2:], 0)

    def to_onnx(self, graph, x):
        pooled = graph.add_node("GlobalAveragePool", [x], f"{self.index}.globalavgpool")
        return graph.add_node("Flatten", [pooled], f"{self.index}.flatten", axis=1)


def _pool_padding(padding, kernel_size):
    padding = pair(padding, "padding", 0)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(f"padding {padding} must be at most half the kernel_size {kernel_size}, as PyTorch's")
    return padding
