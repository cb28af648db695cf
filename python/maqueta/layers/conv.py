"""Conv2D: 2-D convolution with PyTorch's layout and defaults, in NCHW and in the batch-lane layout."""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._args import pair
from ..backend import kernels
from .base import Layer, format_shape, positive_int

__all__ = ["Conv2D"]


class Conv2D(Layer):
    """2-D convolution (cross-correlation), as ``torch.nn.Conv2d``: weight (O, I, KH, KW), bias (O,).
    Its kernel applies a following ReLU itself, and its backward the gradient of a ReLU before it."""

    fusable_activations = ("relu",)
    applies_relu_gradient = True
    lane_worth_packing = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)

    weight = property(lambda self: self._get_param("weight"), lambda self, v: self._set_param("weight", v))
    bias = property(lambda self: self._get_param("bias"), lambda self, v: self._set_param("bias", v))

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}

    def __repr__(self):
        extra = ""
        if self.stride != (1, 1):
            extra += f", stride={self.stride}"
        if self.padding != (0, 0):
            extra += f", padding={self.padding}"
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={k}{extra})"

    def parameter_shapes(self):
        return {"weight": (self.out_channels, self.in_channels, *self.kernel_size), "bias": (self.out_channels,)}

    def initial_parameters(self, rng):
        # PyTorch: kaiming_uniform(a=sqrt(5)) for the weight and U(-1/sqrt(fan_in), ..) for the bias,
        # both the same bound 1/sqrt(fan_in).
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        shapes = self.parameter_shapes()
        return {"weight": rng.uniform(-bound, bound, shapes["weight"]), "bias": rng.uniform(-bound, bound, shapes["bias"])}

    def expects(self):
        return f"(N, {self.in_channels}, H, W)"

    def input_template(self):
        return (self.in_channels, None, None)

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or (input_shape[0] is not None and input_shape[0] != self.in_channels):
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {format_shape(input_shape)}")
        _, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h is None or w is None:
            return (self.out_channels, None, None)
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(f"{self.describe()}: kernel {self.kernel_size} is larger than its padded input "
                             f"{(h + 2 * ph, w + 2 * pw)} (input shape {format_shape(input_shape)})")
        return (self.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    # ---- NCHW
    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        if call.need_dx:
            call.dx = np.empty((n, *in_shape), dtype)

    def forward(self, x, call):
        call.cache = x
        return kernels().conv2d_forward(x, self._params["weight"], self._params["bias"], self.stride, self.padding,
                                        relu=call.relu, out=call.out)

    def backward(self, dy, call):
        dx, _, _ = kernels().conv2d_backward(dy, call.cache, self._params["weight"], self.stride, self.padding,
                                             call.need_dx, call.relu_input, dx_out=call.dx,
                                             dw_out=call.grads["weight"], db_out=call.grads["bias"])
        return dx

    # ---- batch lanes: stride 1 without padding; a 2x2 max-pool after it runs inside its kernel,
    # so the full-size output (and the gradient there) never exists for the whole batch
    def has_lane_kernel(self):
        return self.stride == (1, 1) and self.padding == (0, 0)

    def lane_absorbs(self, following):
        return following.lane_pool2x2

    def allocate_lanes(self, call, lanes, in_shape, out_shape):
        if call.absorbed is None:
            call.out = lanes(out_shape)
        if call.need_dx:
            call.dx = lanes(in_shape)

    def forward_lanes(self, x, call):
        call.cache = x
        pool = call.absorbed
        if pool is None:
            _core._lanes_conv2d_forward(x, self._params["weight"], self._params["bias"], call.relu, call.out)
            return call.out
        _core._lanes_conv2d_forward(x, self._params["weight"], self._params["bias"], call.relu, pool.out, pool.indices)
        return pool.out

    def backward_lanes(self, dy, call):
        pool = call.absorbed
        if pool is None:
            _core._lanes_conv2d_backward(dy, call.cache, self._params["weight"], call.relu_input, call.dx,
                                         call.grads["weight"], call.grads["bias"])
        else:   # dy arrives at the pool's output: the kernel takes it back through the pool first
            _core._lanes_conv2d_backward(dy, call.cache, self._params["weight"], call.relu_input, call.dx,
                                         call.grads["weight"], call.grads["bias"], pool.indices,
                                         pool.out if pool.relu_input else None)
        return call.dx

    def to_onnx(self, graph, x):
        weight = graph.add_initializer(f"{self.index}.weight", self.weight)   # OIHW, as ONNX's
        bias = graph.add_initializer(f"{self.index}.bias", self.bias)
        (ph, pw) = self.padding
        return graph.add_node("Conv", [x, weight, bias], f"{self.index}.conv", kernel_shape=list(self.kernel_size),
                              strides=list(self.stride), pads=[ph, pw, ph, pw])
