"""Element-wise activations and Softmax. A ReLU, LeakyReLU or ELU after a Conv2D or Dense usually
runs inside that layer's kernel (the executor's plan decides, from each layer's ``epilogue``);
these classes are what runs when it cannot."""
from __future__ import annotations

import numpy as np

from ..backend import kernels
from ..losses import softmax
from .base import Layer, format_shape

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax", "LeakyReLU", "ELU", "GELU", "fused_activation_gradient"]


def fused_activation_gradient(dy, y, epilogue, out=None):
    """dy times the derivative of the activation ``epilogue`` = (kind, alpha) that a layer's kernel
    fused into its output y, computed from y (the layer keeps no pre-activation), by the
    activation kernels:
      relu: 1 where y > 0, else 0: leaky_relu's gradient with slope 0, the ReLU layer's
        dy * (y > 0) bit for bit (NaN and -0 included).
      leaky_relu, alpha > 0: 1 where y > 0, else alpha. y > 0 exactly where the input was, so this is
        the activation layer's gradient bit for bit.
      elu, alpha > 0: 1 where y > 0, else y + alpha (= alpha e^x, as PyTorch's in-place ELU computes
        it: the kernels' "elu_from_output"). The ELU layer computes alpha e^x from x, so the two
        differ in rounding: by about an ulp of alpha, relatively more only where e^x is below the
        precision of alpha (x far below 0).
    """
    kind, alpha = epilogue
    if kind == "relu":
        kind, alpha = "leaky_relu", 0.0
    elif kind not in ("leaky_relu", "elu"):
        raise ValueError(f"no gradient from the output for a fused {kind!r}")
    return kernels().activation_backward(dy, y, "elu_from_output" if kind == "elu" else kind, alpha, out=out)


class ReLU(Layer):
    """max(x, 0); its gradient passes where the output is positive (as PyTorch's)."""

    activation = "relu"
    epilogue = ("relu", 0.0)

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

    @property
    def epilogue(self):
        """Fusable only with a positive slope: then y > 0 exactly where x > 0, so the gradient
        follows from the output. With slope <= 0 the output's sign does not give the input's."""
        return ("leaky_relu", self.negative_slope) if self.negative_slope > 0 else None

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

    @property
    def epilogue(self):
        """Fusable only with alpha > 0: then y > 0 exactly where x > 0 and the derivative alpha e^x
        is y + alpha. With alpha <= 0 the output does not give the derivative."""
        return ("elu", self.alpha) if self.alpha > 0 else None

    def get_config(self):
        return {"alpha": self.alpha}

    def to_onnx(self, graph, x):
        return graph.add_node("Elu", [x], f"{self.index}.elu", alpha=self.alpha)


class GELU(_Elementwise):
    """x Phi(x), Phi the standard normal CDF; approximate="tanh" uses PyTorch's tanh form. As
    ``torch.nn.GELU``."""

    activation = "gelu"
    # epilogue stays None: GELU's derivative needs the pre-activation x, which a kernel that fused
    # it would not keep (GELU is not monotonic, so its output does not give x back)

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
