"""Dropout and Dropout2D, as PyTorch's: inverted scaling in training, the identity in evaluation."""
from __future__ import annotations

import numpy as np

from ..backend import kernels
from .base import Layer, format_shape

__all__ = ["Dropout", "Dropout2D"]


class Dropout(Layer):
    """In training mode, zeroes each value with probability p and scales the rest by 1 / (1 - p),
    as ``torch.nn.Dropout``; in evaluation mode passes its input through. The masks come from the
    model's generator (one seed per batch, then a hash of each value's index), so the model's seed
    fixes a run, the thread count does not change it, and a resumed run draws the same masks. In
    data-parallel training every process draws the same seed and hashes its values' indices in
    the global batch (``call.batch_offset``), so the processes together draw the masks one process
    would draw for the global batch."""

    channelwise = False
    per_batch_in_training = True

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def get_config(self):
        return {"p": self.p}

    def allocate(self, call, n, in_shape, out_shape, dtype):
        if call.training:
            call.out = np.empty((n, *out_shape), dtype)
            call.indices = np.empty((n, *out_shape[:1]) if self.channelwise else (n, *out_shape), np.uint8)
            if call.need_dx:
                call.dx = np.empty((n, *in_shape), dtype)

    def forward(self, x, call):
        if not call.training or self.p == 0:
            call.cache = None
            return x
        seed = int(call.rng.integers(0, 2**63))   # drawn even for no samples: the generators stay in step
        if len(x) == 0:   # a data-parallel process whose slice of the global batch is empty
            call.cache = None
            return x
        y, mask = kernels().dropout_forward(x, self.p, seed, self.channelwise, out=call.out, mask_out=call.indices,
                                            offset=call.batch_offset)
        call.cache = mask
        return y

    def backward(self, dy, call):
        if call.cache is None:
            return dy
        return kernels().dropout_backward(dy, call.cache, self.p, out=call.dx)

    def to_onnx(self, graph, x):   # an exported model is for inference: dropout passes values through
        return graph.add_node("Identity", [x], f"{self.index}.dropout")


class Dropout2D(Dropout):
    """Zeroes whole channels of (N, C, H, W) inputs with probability p, as ``torch.nn.Dropout2d``:
    for convolutional features, whose neighbouring values are too alike for per-value dropout."""

    channelwise = True

    def expects(self):
        return "(N, C, H, W)"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {format_shape(input_shape)}")
        return input_shape
