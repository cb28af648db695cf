"""How a Sequential model runs its layers: which ReLUs fuse into the kernel before them, and the
buffers a training step reuses.

A Conv2D or Dense followed by a ReLU computes the ReLU in its own kernel. The ReLU's gradient
then has to be applied by whoever sends the gradient back into that output: a MaxPool2D (only
windows whose maximum is positive pass it), a Dense or Conv2D (zero where their input is not
positive), possibly through a Flatten. Where the next layer can do neither, the ReLU stays a layer
of its own. Either way the arithmetic is the same as running every layer separately.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

__all__ = ["Plan", "Buffers"]


@dataclass
class Step:
    index: int          # the layer this step runs (its ReLU, when fused, is index + 1)
    fused_relu: bool    # the layer's kernel applies the following ReLU
    relu_input: bool    # the step's input is a fused ReLU's output: its backward applies that gradient
    last: int           # index of the last layer the step covers (its output is that layer's)


class Plan:
    def __init__(self, layers, fuse=True):
        n = len(layers)

        def masks_gradient(j):
            if j >= n:
                return False
            if isinstance(layers[j], (MaxPool2D, Dense, Conv2D)):
                return True
            return isinstance(layers[j], Flatten) and masks_gradient(j + 1)

        self.steps = []
        i = 0
        while i < n:
            fused = (fuse and isinstance(layers[i], (Conv2D, Dense)) and i + 1 < n and isinstance(layers[i + 1], ReLU)
                     and masks_gradient(i + 2))
            self.steps.append(Step(i, fused, False, i + 1 if fused else i))
            i += 2 if fused else 1
        for k, step in enumerate(self.steps):
            if isinstance(layers[step.index], Flatten):
                continue
            j = k - 1
            while j >= 0 and isinstance(layers[self.steps[j].index], Flatten):
                j -= 1
            step.relu_input = j >= 0 and self.steps[j].fused_relu


class Buffers:
    """Arrays one batch size reuses from step to step: each step's output (and max-pool indices)
    and, for training, each input gradient. Owned by one caller at a time."""

    def __init__(self, model, n, training):
        shapes = model._shapes(model.input_shape)
        self.n = n
        self.batch = np.empty((n, *model.input_shape), model.dtype) if training else None
        self.forward = []
        self.backward = []
        for step in model._plan.steps:
            layer = model.layers[step.index]
            out_shape = (n, *shapes[step.last])
            in_shape = (n, *(shapes[step.index - 1] if step.index else model.input_shape))
            forward, backward = {}, {}
            if isinstance(layer, (Conv2D, Dense)):
                forward["out"] = np.empty(out_shape, model.dtype)
                if step.fused_relu:
                    forward["relu"] = True
            elif isinstance(layer, MaxPool2D):
                forward["out"] = np.empty(out_shape, model.dtype)
                forward["indices_out"] = np.empty(out_shape, np.int64)
            if training and isinstance(layer, (Conv2D, Dense, MaxPool2D)):
                if step.relu_input:
                    backward["relu_input"] = True
                if step.index > model._first_trainable:
                    backward["dx_out"] = np.empty(in_shape, model.dtype)
            self.forward.append(forward)
            self.backward.append(backward)
