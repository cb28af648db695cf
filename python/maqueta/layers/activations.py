"""Element-wise activations and Softmax. A ReLU after a Conv2D or Dense usually runs inside that
layer's kernel (the executor's plan decides); these classes are what runs when it cannot."""
from __future__ import annotations

import numpy as np

from ..backend import kernels
from ..losses import softmax
from .base import Layer, format_shape

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax", "LeakyReLU", "ELU", "GELU"]


class ReLU(Layer):
    """max(x, 0); its gradient passes where the output is positive (as PyTorch's)."""

    activation = "relu"

    def forward(self, x, call):
        y = np.maximum(x, 0)
        call.cache = y
        return y

    def backward(self, dy, call):
        return dy * (call.cache > 0)

    def to_onnx(self, graph, x):
        return graph.add_node("Relu", [x], f"{self.index}.relu")


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed without overflow for any x."""

    activation = "sigmoid"

    def forward(self, x, call):
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        call.cache = y
        return y

    def backward(self, dy, call):
        y = call.cache
        return dy * y * (1 - y)

    def to_onnx(self, graph, x):
        return graph.add_node("Sigmoid", [x], f"{self.index}.sigmoid")


class Tanh(Layer):
    """tanh(x)."""

    activation = "tanh"

    def forward(self, x, call):
        y = np.tanh(x)
        call.cache = y
        return y

    def backward(self, dy, call):
        y = call.cache
        return dy * (1 - y * y)

    def to_onnx(self, graph, x):
        return graph.add_node("Tanh", [x], f"{self.index}.tanh")


class Softmax(Layer):
    """softmax over the features of (N, K) inputs. For inference only: ``loss="cross_entropy"``
    applies softmax itself, so a model trained with it must end with logits, not with this layer."""

    activation = "softmax"

    def expects(self):
        return "(N, K)"

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.describe()} expects input of shape (N, K), but receives "
                             f"{format_shape(input_shape)}")
        return input_shape

    def forward(self, x, call):
        y = softmax(x)
        call.cache = y
        return y

    def backward(self, dy, call):
        y = call.cache
        return y * (dy - np.sum(dy * y, axis=1, keepdims=True))

    def to_onnx(self, graph, x):
        return graph.add_node("Softmax", [x], f"{self.index}.softmax", axis=1)

class _Elementwise(Layer):
    """An activation computed by the activation kernels: ``kind`` names it there."""

    kind = None

    def _alpha(self):
        return 0.0

    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        if call.need_dx:
            call.dx = np.empty((n, *in_shape), dtype)

    def forward(self, x, call):
        call.cache = x
        return kernels().activation_forward(x, self.kind, self._alpha(), out=call.out)

    def backward(self, dy, call):
        return kernels().activation_backward(dy, call.cache, self.kind, self._alpha(), out=call.dx)


class LeakyReLU(_Elementwise):
    """x where x > 0, else negative_slope * x; as ``torch.nn.LeakyReLU``."""

    activation = kind = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = _finite(negative_slope, "negative_slope")

    def _alpha(self):
        return self.negative_slope

    def get_config(self):
        return {"negative_slope": self.negative_slope}

    def to_onnx(self, graph, x):
        return graph.add_node("LeakyRelu", [x], f"{self.index}.leakyrelu", alpha=self.negative_slope)


class ELU(_Elementwise):
    """x where x > 0, else alpha (e^x - 1); as ``torch.nn.ELU``."""

    activation = kind = "elu"

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = _finite(alpha, "alpha")

    def _alpha(self):
        return self.alpha

    def get_config(self):
        return {"alpha": self.alpha}

    def to_onnx(self, graph, x):
        return graph.add_node("Elu", [x], f"{self.index}.elu", alpha=self.alpha)


class GELU(_Elementwise):
    """x Phi(x), Phi the standard normal CDF; approximate="tanh" uses PyTorch's tanh form. As
    ``torch.nn.GELU``."""

    activation = "gelu"

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.kind = "gelu" if approximate == "none" else "gelu_tanh"

    def get_config(self):
        return {"approximate": self.approximate}

    def to_onnx(self, graph, x):
        """x/2 (1 + erf(x / sqrt 2)), or the tanh form, from standard operators (Gelu itself only
        came with opset 20)."""
        name, const = f"{self.index}.gelu", lambda stem, v: graph.add_initializer(f"{self.index}.{stem}", np.array(v))
        if self.approximate == "none":
            inner = graph.add_node("Erf", [graph.add_node("Mul", [x, const("inv_sqrt2", 0.7071067811865476)], name)],
                                   name)
        else:
            cube = graph.add_node("Mul", [graph.add_node("Mul", [x, x], name), x], name)
            poly = graph.add_node("Add", [x, graph.add_node("Mul", [cube, const("k", 0.044715)], name)], name)
            inner = graph.add_node("Tanh", [graph.add_node("Mul", [poly, const("sqrt_2_over_pi",
                                                                                 0.7978845608028654)], name)], name)
        half_x = graph.add_node("Mul", [x, const("half", 0.5)], name)
        return graph.add_node("Mul", [half_x, graph.add_node("Add", [inner, const("one", 1.0)], name)], name)


def _finite(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
