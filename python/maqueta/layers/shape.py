"""Flatten: layers that only change the shape of their input."""
from __future__ import annotations

import numpy as np

from .base import Layer

__all__ = ["Flatten"]


class Flatten(Layer):
    """(C, H, W) -> (C*H*W,) in C order, as ``torch.nn.Flatten``."""

    moves_no_values = True

    def output_shape(self, input_shape):
        if any(s is None for s in input_shape):
            return (None,)
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def forward(self, x, call):
        call.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, call):
        return dy.reshape(call.cache)

    def to_onnx(self, graph, x):
        return graph.add_node("Flatten", [x], f"{self.index}.flatten", axis=1)
