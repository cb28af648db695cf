"""Conv2D: 2-D convolution with PyTorch's layout and defaults, in NCHW and in the batch-lane layout."""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._args import pair
from ..backend import kernels
from .activations import fused_activation_gradient
from .base import Layer, format_shape, positive_int

__all__ = ["Conv2D"]


class Conv2D(Layer):
    """2-D convolution (cross-correlation), as ``torch.nn.Conv2d``: weight (O, I, KH, KW), bias (O,).
    Its kernel applies a following ReLU, LeakyReLU or ELU itself (see Layer.epilogue), and its
    backward the gradient of a ReLU before it (and of its own fused ReLU when the layer after that
    cannot: a global average pool)."""

    fusable_activations = ("relu", "leaky_relu", "elu")
    applies_relu_gradient = True
    relu_gradient_from_output = True
    lane_fusable_activations = ("relu",)   # the lane kernel applies a ReLU only
    lane_worth_packing = True
    absorbs_channel_affine = True          # evaluation: a batch norm after it folds into its weights and bias

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.has_bias = bool(bias)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid', an int or a pair, got {padding!r}")
            self.same = padding == "same"
            self.padding = (0, 0)     # "same" resolves per input size: see pads()
        else:
            self.same = False
            self.padding = pair(padding, "padding", 0)

    weight = property(lambda self: self._get_param("weight"), lambda self, v: self._set_param("weight", v))
    bias = property(lambda self: self._get_param("bias"), lambda self, v: self._set_param("bias", v))

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": "same" if self.same else list(self.padding), "bias": self.has_bias}

    def pads(self, h, w):
        """(top, bottom, left, right) zero padding for an (h, w) input. "same" is Keras's: the
        output is ceil(h / stride) high, and an odd total pads one more row (column) at the bottom
        (right), as TensorFlow and PyTorch's padding='same' do."""
        if not self.same:
            (ph, pw) = self.padding
            return ph, ph, pw, pw
        out = []
        for size, k, s in ((h, self.kernel_size[0], self.stride[0]), (w, self.kernel_size[1], self.stride[1])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)

    def __repr__(self):
        extra = ""
        if self.stride != (1, 1):
            extra += f", stride={self.stride}"
        if self.same:
            extra += ", padding='same'"
        elif self.padding != (0, 0):
            extra += f", padding={self.padding}"
        if not self.has_bias:
            extra += ", bias=False"
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={k}{extra})"

    def parameter_shapes(self):
        shapes = {"weight": (self.out_channels, self.in_channels, *self.kernel_size), "bias": (self.out_channels,)}
        if not self.has_bias:
            del shapes["bias"]
        return shapes

    def initial_parameters(self, rng):
        # PyTorch: kaiming_uniform(a=sqrt(5)) for the weight and U(-1/sqrt(fan_in), ..) for the bias,
        # both the same bound 1/sqrt(fan_in).
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        return {name: rng.uniform(-bound, bound, shape) for name, shape in self.parameter_shapes().items()}

    def expects(self):
        return f"(N, {self.in_channels}, H, W)"

    def input_template(self):
        return (self.in_channels, None, None)

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or (input_shape[0] is not None and input_shape[0] != self.in_channels):
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {format_shape(input_shape)}")
        _, h, w = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if h is None or w is None:
            return (self.out_channels, None, None)
        top, bottom, left, right = self.pads(h, w)
        if kh > h + top + bottom or kw > w + left + right:
            raise ValueError(f"{self.describe()}: kernel {self.kernel_size} is larger than its padded input "
                             f"{(h + top + bottom, w + left + right)} (input shape {format_shape(input_shape)})")
        return (self.out_channels, (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1)

    # ---- NCHW. The kernels pad symmetrically; an uneven "same" padding is made explicitly.
    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        if call.epilogue is not None and call.training:
            call.epilogue_dy = np.empty((n, *out_shape), dtype)
        top, bottom, left, right = self.pads(*in_shape[1:])
        if call.need_dx and top == bottom and left == right:
            call.dx = np.empty((n, *in_shape), dtype)

    # --8<-- [start:conv2d_layer]
    def forward(self, x, call):
        top, bottom, left, right = self.pads(*x.shape[2:])
        crop = None
        if top != bottom or left != right:
            crop = (top, left, *x.shape[2:])
            x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
            top = left = 0
        kind, alpha = call.epilogue or (None, 0.0)
        bias, weight_scale = self._params.get("bias"), None
        if call.folded is not None:   # evaluation: the layer after it runs here, as w * scale and b * scale + shift
            weight_scale, shift = call.folded.inference_affine()
            bias = shift if bias is None else bias * weight_scale + shift
        y = kernels().conv2d_forward(x, self._params["weight"], bias, self.stride, (top, left), relu=call.relu,
                                     out=call.out, activation=kind, alpha=alpha, weight_scale=weight_scale)
        call.cache = (x, (top, left), crop, y)
        return y

    def backward(self, dy, call):
        x, padding, crop, y = call.cache
        if call.epilogue is not None:   # the gradient of the activation this kernel applied
            dy = fused_activation_gradient(dy, y, call.epilogue, out=call.epilogue_dy)
        dx, _, _ = kernels().conv2d_backward(dy, x, self._params["weight"], self.stride, padding, call.need_dx,
                                             call.relu_input, dx_out=call.dx, dw_out=call.grads["weight"],
                                             db_out=call.grads.get("bias", call.scratch))
        if crop is None or dx is None:
            return dx
        top, left, h, w = crop
        return dx[:, :, top:top + h, left:left + w]
    # --8<-- [end:conv2d_layer]   (docs/index.md quotes forward and backward)

    # ---- batch lanes: stride 1 without padding; a 2x2 max-pool after it runs inside its kernel,
    # so the full-size output (and the gradient there) never exists for the whole batch
    def has_lane_kernel(self):
        return self.stride == (1, 1) and self.padding == (0, 0) and not self.same

    def lane_input_padding(self):
        if self.stride != (1, 1):
            return None
        if not self.same:
            ph, pw = self.padding
            return ph, ph, pw, pw
        (kh, kw) = self.kernel_size   # "same" at stride 1 pads k - 1 whatever the size (see pads)
        return (kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2

    def lane_absorbs(self, following):
        return following.lane_pool2x2

    def allocate_lanes(self, call, lanes, in_shape, out_shape):
        if not self.has_bias:   # the lane backward always sums the bias gradient
            call.scratch = np.empty(self.out_channels, call.layer._params["weight"].dtype)
        if call.absorbed is None:
            call.out = lanes(out_shape)
        if call.need_dx:
            call.dx = lanes(in_shape)

    def forward_lanes(self, x, call):
        call.cache = x
        pool = call.absorbed
        if pool is None:
            _core._lanes_conv2d_forward(x, self._params["weight"], self._params.get("bias"), call.relu, call.out)
            return call.out
        _core._lanes_conv2d_forward(x, self._params["weight"], self._params.get("bias"), call.relu, pool.out, pool.indices)
        return pool.out

    def backward_lanes(self, dy, call):
        pool = call.absorbed
        if pool is None:
            _core._lanes_conv2d_backward(dy, call.cache, self._params["weight"], call.relu_input, call.dx,
                                         call.grads["weight"], call.grads.get("bias", call.scratch))
        else:   # dy arrives at the pool's output: the kernel takes it back through the pool first
            _core._lanes_conv2d_backward(dy, call.cache, self._params["weight"], call.relu_input, call.dx,
                                         call.grads["weight"], call.grads.get("bias", call.scratch), pool.indices,
                                         pool.out if pool.relu_input else None)
        return call.dx

    def to_onnx(self, graph, x):
        inputs = [x, graph.add_initializer(f"{self.index}.weight", self.weight)]   # OIHW, as ONNX's
        if self.has_bias:
            inputs.append(graph.add_initializer(f"{self.index}.bias", self.bias))
        (ph, pw) = self.padding
        padding = {"auto_pad": "SAME_UPPER"} if self.same else {"pads": [ph, pw, ph, pw]}   # SAME_UPPER: Keras's rule
        return graph.add_node("Conv", inputs, f"{self.index}.conv", kernel_shape=list(self.kernel_size),
                              strides=list(self.stride), **padding)
