"""Element-wise activations and Softmax. A ReLU after a Conv2D or Dense usually runs inside that
layer's kernel (the executor's plan decides); these classes are what runs when it cannot."""
from __future__ import annotations

import numpy as np

from ..losses import softmax
from .base import Layer, format_shape

__all__ = ["ReLU", "Sigmoid", "Tanh", "Softmax"]


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
