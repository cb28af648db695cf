"""Layers of a :class:`maqueta.Sequential` model, with PyTorch's layouts and defaults.

Shapes below leave out the batch: a Conv2D maps (C, H, W) to (O, OH, OW). A trainable layer's
``weight`` and ``bias`` are NumPy arrays once the layer belongs to a model (views into the model's
one parameter buffer); assigning to them copies the values in, after checking the shape.

Every layer runs forward as ``forward(x, training) -> (y, cache)`` and backward as
``backward(dy, cache, grads, need_dx) -> dx``: whatever backward needs travels in the cache the
caller keeps, never on the layer, so inference from several threads at once is safe.
"""
from __future__ import annotations

import math

import numpy as np

from ._args import pair
from .backend import kernels

__all__ = ["Layer", "Conv2D", "MaxPool2D", "Dense", "Flatten", "ReLU", "Sigmoid", "Tanh", "Softmax", "LAYERS"]


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class Layer:
    """Base class: a stateless layer with no parameters."""

    def __init__(self):
        self._params = {}     # name -> view into the owning model's parameter buffer
        self._model = None    # the Sequential that owns this layer
        self.index = None     # position in that model (the key prefix of its state_dict)

    # ---- description
    def get_config(self) -> dict:
        """The constructor arguments, JSON-ready: ``type(self)(**layer.get_config())`` rebuilds it."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def describe(self) -> str:
        where = f"layer {self.index} " if self.index is not None else ""
        return f"{where}({self!r})"

    # ---- parameters
    def parameter_shapes(self) -> dict:
        """{name: shape} of the trainable parameters, in state_dict order."""
        return {}

    def initial_parameters(self, rng) -> dict:
        """{name: float64 array} drawn as PyTorch's defaults draw them."""
        return {}

    def _get_param(self, name):
        if self._model is None:
            return None
        return self._params[name]

    def _set_param(self, name, value):
        if self._model is None:
            raise RuntimeError(f"{self!r} has no parameters until it is part of a Sequential model")
        target = self._params[name]
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"{name} of {self.describe()} must have shape {target.shape}, got {value.shape}")
        target[...] = value

    # ---- computation
    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one output for one input of ``input_shape``; raises ValueError when incompatible.
        Unknown sizes are None (before the model has seen data)."""
        return input_shape

    def expects(self) -> str:
        return "any shape"

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy, cache, grads, need_dx=True):
        raise NotImplementedError

    # ---- export
    def to_onnx(self, graph, x: str) -> str:
        """Add this layer's ONNX nodes to ``graph`` (a maqueta.onnx.OnnxGraph), reading the value
        named ``x``; return the name of its output. This default refuses: a layer with no ONNX form."""
        from .onnx import ONNXExportError
        raise ONNXExportError(f"{self.describe()} cannot be exported to ONNX: {type(self).__name__} "
                              f"defines no to_onnx method")


class Conv2D(Layer):
    """2-D convolution (cross-correlation), as ``torch.nn.Conv2d``: weight (O, I, KH, KW), bias (O,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
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

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or (input_shape[0] is not None and input_shape[0] != self.in_channels):
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {_fmt(input_shape)}")
        _, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h is None or w is None:
            return (self.out_channels, None, None)
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(f"{self.describe()}: kernel {self.kernel_size} is larger than its padded input "
                             f"{(h + 2 * ph, w + 2 * pw)} (input shape {_fmt(input_shape)})")
        return (self.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    def forward(self, x, training=False, relu=False, out=None):
        y = kernels().conv2d_forward(x, self.weight, self.bias, self.stride, self.padding, relu=relu, out=out)
        return y, x

    def backward(self, dy, cache, grads, need_dx=True, relu_input=False, dx_out=None):
        dx, _, _ = kernels().conv2d_backward(dy, cache, self.weight, self.stride, self.padding, need_dx, relu_input,
                                             dx_out=dx_out, dw_out=grads["weight"], db_out=grads["bias"])
        return dx

    def to_onnx(self, graph, x):
        weight = graph.add_initializer(f"{self.index}.weight", self.weight)   # OIHW, as ONNX's
        bias = graph.add_initializer(f"{self.index}.bias", self.bias)
        (ph, pw) = self.padding
        return graph.add_node("Conv", [x, weight, bias], f"{self.index}.conv", kernel_shape=list(self.kernel_size),
                              strides=list(self.stride), pads=[ph, pw, ph, pw])


class MaxPool2D(Layer):
    """Max-pooling, as ``torch.nn.MaxPool2d`` (ceil_mode=False); stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)

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
                             f"but receives {_fmt(input_shape)}")
        c, h, w = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if h is None or w is None:
            return (c, None, None)
        if kh > h or kw > w:
            raise ValueError(f"{self.describe()}: window {self.kernel_size} is larger than its input "
                             f"{_fmt(input_shape)}")
        return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)

    def forward(self, x, training=False, out=None, indices_out=None):
        y, indices = kernels().maxpool2d_forward(x, self.kernel_size, self.stride, out=out, indices_out=indices_out)
        return y, (indices, x.shape, y)

    def backward(self, dy, cache, grads, need_dx=True, relu_input=False, dx_out=None):
        indices, shape, y = cache
        return kernels().maxpool2d_backward(dy, indices, shape, relu_output=y if relu_input else None, out=dx_out)

    def to_onnx(self, graph, x):   # no padding, floor mode: ONNX's defaults
        return graph.add_node("MaxPool", [x], f"{self.index}.maxpool", kernel_shape=list(self.kernel_size),
                              strides=list(self.stride))


class Dense(Layer):
    """Fully connected layer y = x W^T + b, as ``torch.nn.Linear``: weight (out, in), bias (out,)."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")

    weight = property(lambda self: self._get_param("weight"), lambda self, v: self._set_param("weight", v))
    bias = property(lambda self: self._get_param("bias"), lambda self, v: self._set_param("bias", v))

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features}

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features})"

    def parameter_shapes(self):
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def initial_parameters(self, rng):
        bound = 1.0 / math.sqrt(self.in_features)
        return {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features)),
                "bias": rng.uniform(-bound, bound, self.out_features)}

    def expects(self):
        return f"(N, {self.in_features})"

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, but receives "
                             f"{_fmt(input_shape)}: put a Flatten() before it")
        if input_shape[0] is not None and input_shape[0] != self.in_features:
            raise ValueError(f"{self.describe()} expects {self.in_features} input features, but receives "
                             f"{input_shape[0]} (input shape {_fmt(input_shape)})")
        return (self.out_features,)

    def forward(self, x, training=False, relu=False, out=None):
        return kernels().linear_forward(x, self.weight, self.bias, relu=relu, out=out), x

    def backward(self, dy, cache, grads, need_dx=True, relu_input=False, dx_out=None):
        dx, _, _ = kernels().linear_backward(dy, cache, self.weight, need_dx, relu_input, dx_out=dx_out,
                                             dw_out=grads["weight"], db_out=grads["bias"])
        return dx

    def to_onnx(self, graph, x):   # y = x W^T + b: Gemm with transB, weight kept (out, in)
        weight = graph.add_initializer(f"{self.index}.weight", self.weight)
        bias = graph.add_initializer(f"{self.index}.bias", self.bias)
        return graph.add_node("Gemm", [x, weight, bias], f"{self.index}.gemm", transB=1)


class Flatten(Layer):
    """(C, H, W) -> (C*H*W,) in C order, as ``torch.nn.Flatten``."""

    def output_shape(self, input_shape):
        if any(s is None for s in input_shape):
            return (None,)
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def forward(self, x, training=False):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dy, cache, grads, need_dx=True):
        return dy.reshape(cache)

    def to_onnx(self, graph, x):
        return graph.add_node("Flatten", [x], f"{self.index}.flatten", axis=1)


class ReLU(Layer):
    """max(x, 0); its gradient passes where the output is positive (as PyTorch's)."""

    def forward(self, x, training=False):
        y = np.maximum(x, 0)
        return y, y

    def backward(self, dy, cache, grads, need_dx=True):
        return dy * (cache > 0)

    def to_onnx(self, graph, x):
        return graph.add_node("Relu", [x], f"{self.index}.relu")


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed without overflow for any x."""

    def forward(self, x, training=False):
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return y, y

    def backward(self, dy, cache, grads, need_dx=True):
        return dy * cache * (1 - cache)

    def to_onnx(self, graph, x):
        return graph.add_node("Sigmoid", [x], f"{self.index}.sigmoid")


class Tanh(Layer):
    """tanh(x)."""

    def forward(self, x, training=False):
        y = np.tanh(x)
        return y, y

    def backward(self, dy, cache, grads, need_dx=True):
        return dy * (1 - cache * cache)

    def to_onnx(self, graph, x):
        return graph.add_node("Tanh", [x], f"{self.index}.tanh")


class Softmax(Layer):
    """softmax over the features of (N, K) inputs. For inference only: ``loss="cross_entropy"``
    applies softmax itself, so a model trained with it must end with logits, not with this layer."""

    def expects(self):
        return "(N, K)"

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.describe()} expects input of shape (N, K), but receives {_fmt(input_shape)}")
        return input_shape

    def forward(self, x, training=False):
        shifted = x - x.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        y = e / e.sum(axis=1, keepdims=True)
        return y, y

    def backward(self, dy, cache, grads, need_dx=True):
        return cache * (dy - np.sum(dy * cache, axis=1, keepdims=True))

    def to_onnx(self, graph, x):
        return graph.add_node("Softmax", [x], f"{self.index}.softmax", axis=1)


def _fmt(shape):
    return "(N, " + ", ".join("?" if s is None else str(s) for s in shape) + ")"


LAYERS = {cls.__name__: cls for cls in (Conv2D, MaxPool2D, Dense, Flatten, ReLU, Sigmoid, Tanh, Softmax)}
