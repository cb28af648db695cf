"""Dense: the fully connected layer, as ``torch.nn.Linear``."""
from __future__ import annotations

import math

import numpy as np

from ..backend import kernels
from .activations import fused_activation_gradient
from .base import Layer, format_shape, positive_int

__all__ = ["Dense"]


class Dense(Layer):
    """Fully connected layer y = x W^T + b, as ``torch.nn.Linear``: weight (out, in), bias (out,).
    Its kernel applies a following ReLU, LeakyReLU or ELU itself (see Layer.epilogue), and its
    backward the gradient of a ReLU before it (and of its own fused ReLU when the layer after that
    cannot: a Dropout)."""

    fusable_activations = ("relu", "leaky_relu", "elu")
    applies_relu_gradient = True
    relu_gradient_from_output = True

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.has_bias = bool(bias)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")

    weight = property(lambda self: self._get_param("weight"), lambda self, v: self._set_param("weight", v))
    bias = property(lambda self: self._get_param("bias"), lambda self, v: self._set_param("bias", v))

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.has_bias}

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features}{'' if self.has_bias else ', bias=False'})"

    def parameter_shapes(self):
        shapes = {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}
        if not self.has_bias:
            del shapes["bias"]
        return shapes

    def initial_parameters(self, rng):
        bound = 1.0 / math.sqrt(self.in_features)
        return {name: rng.uniform(-bound, bound, shape) for name, shape in self.parameter_shapes().items()}

    def expects(self):
        return f"(N, {self.in_features})"

    def input_template(self):
        return (self.in_features,)

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, but receives "
                             f"{format_shape(input_shape)}: put a Flatten() before it")
        if input_shape[0] is not None and input_shape[0] != self.in_features:
            raise ValueError(f"{self.describe()} expects {self.in_features} input features, but receives "
                             f"{input_shape[0]} (input shape {format_shape(input_shape)})")
        return (self.out_features,)

    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        if call.epilogue is not None and call.training:
            call.epilogue_dy = np.empty((n, *out_shape), dtype)
        if call.need_dx:
            call.dx = np.empty((n, *in_shape), dtype)

    def forward(self, x, call):
        kind, alpha = call.epilogue or (None, 0.0)
        y = kernels().linear_forward(x, self._params["weight"], self._params.get("bias"), relu=call.relu, out=call.out,
                                     activation=kind, alpha=alpha)
        call.cache = (x, y)
        return y

    def backward(self, dy, call):
        x, y = call.cache
        if call.epilogue is not None:   # the gradient of the activation this kernel applied
            dy = fused_activation_gradient(dy, y, call.epilogue, out=call.epilogue_dy)
        dx, _, _ = kernels().linear_backward(dy, x, self._params["weight"], call.need_dx, call.relu_input,
                                             dx_out=call.dx, dw_out=call.grads["weight"], db_out=call.grads.get("bias"))
        return dx

    def to_onnx(self, graph, x):   # y = x W^T + b: Gemm with transB, weight kept (out, in)
        inputs = [x, graph.add_initializer(f"{self.index}.weight", self.weight)]
        if self.has_bias:
            inputs.append(graph.add_initializer(f"{self.index}.bias", self.bias))
        return graph.add_node("Gemm", inputs, f"{self.index}.gemm", transB=1)
