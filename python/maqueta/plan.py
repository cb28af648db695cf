"""How a Sequential model runs its layers: which ReLUs fuse into the kernel before them, and the
buffers a training step reuses.

A Conv2D or Dense followed by a ReLU computes the ReLU in its own kernel. The ReLU's gradient
then has to be applied by whoever sends the gradient back into that output: a MaxPool2D (only
windows whose maximum is positive pass it), a Dense or Conv2D (zero where their input is not
positive), possibly through a Flatten. Where the next layer can do neither, the ReLU stays a layer
of its own. Either way the arithmetic is the same as running every layer separately.

With the native kernels, the leading run of convolutions (stride 1, no padding) and 2x2 max-pools
runs in the batch-lane layout when a batch fills at least one block of V images (V the vector
width): images sit in the vector lanes, so no multiply-add is wasted on layout. The input is
packed into lanes once and the run's output unpacked for the layer after it (usually a Flatten);
gradients cross back the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from .backend import get_backend
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

__all__ = ["Plan", "Buffers", "LaneSegment"]


@dataclass
class Step:
    index: int          # the layer this step runs (its ReLU, when fused, is index + 1)
    fused_relu: bool    # the layer's kernel applies the following ReLU
    relu_input: bool    # the step's input is a fused ReLU's output: its backward applies that gradient
    last: int           # index of the last layer the step covers (its output is that layer's)


def lane_eligible(layer):
    if isinstance(layer, Conv2D):
        return layer.stride == (1, 1) and layer.padding == (0, 0)
    return isinstance(layer, MaxPool2D) and layer.kernel_size == (2, 2) and layer.stride == (2, 2)


class Plan:
    def __init__(self, layers, fuse=True, lanes=True):
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
        # the leading steps that can run in the batch-lane layout (worth it if one is a convolution)
        count = 0
        while lanes and count < len(self.steps) and lane_eligible(layers[self.steps[count].index]):
            count += 1
        if not any(isinstance(layers[s.index], Conv2D) for s in self.steps[:count]):
            count = 0
        self.lane_steps = count


def lane_width(model, n):
    """V when a batch of n should run the plan's lane segment, else 0."""
    if not model._plan.lane_steps or get_backend() != "native":
        return 0
    width = _core._lanes_width(model.dtype)
    return width if n >= width else 0


class Buffers:
    """Arrays one batch size reuses from step to step: each step's output (and max-pool indices)
    and, for training, each input gradient. Owned by one caller at a time."""

    def __init__(self, model, n, training):
        shapes = model._shapes(model.input_shape)
        self.n = n
        self.key = (n, lane_width(model, n))
        self.lanes = LaneSegment(model, n, training, self.key[1], shapes) if self.key[1] else None
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


class LaneSegment:
    """The plan's first lane_steps steps, run in the batch-lane layout [B][C][H][W][V].

    A convolution followed by a 2x2 pool runs as one kernel each way: its output is pooled on the
    way out, and the gradient goes back through the pool a block of images at a time inside the
    convolution's backward, so neither the convolution's output nor the gradient there ever
    exists at full size for the whole batch."""

    fuse_pools = True   # testing aid: False runs every pool as its own kernel

    def __init__(self, model, n, training, width, shapes):
        plan = model._plan
        self.steps = plan.steps[:plan.lane_steps]
        blocks = -(-n // width)
        code_dtype = np.int32 if model.dtype == np.float32 else np.int64
        lanes = lambda shape: np.empty((blocks, *shape, width), model.dtype)
        kinds = [model.layers[step.index] for step in self.steps]
        # pooled[k]: step k is a convolution whose kernel also runs step k + 1's pool
        self.pooled = [self.fuse_pools and isinstance(kinds[k], Conv2D) and isinstance(kinds[k + 1], MaxPool2D)
                       for k in range(len(kinds) - 1)] + [False]
        self.input = lanes(model.input_shape)
        self.out, self.code, self.dx = [], [], []
        for k, step in enumerate(self.steps):
            out_shape = shapes[step.last]
            in_shape = shapes[step.index - 1] if step.index else model.input_shape
            self.out.append(None if self.pooled[k] else lanes(out_shape))
            self.code.append(np.empty((blocks, *out_shape, width), code_dtype)
                             if isinstance(kinds[k], MaxPool2D) else None)
            self.dx.append(lanes(in_shape) if training and step.index > model._first_trainable else None)
        for k in range(len(self.steps)):   # a pool run inside its convolution has no buffers of its own
            if self.pooled[k]:
                self.dx[k + 1] = None
        last = self.steps[-1].last
        self.flat_out = np.empty((n, *shapes[last]), model.dtype)      # the segment's output, NCHW
        self.grad_in = lanes(shapes[last]) if training else None      # the gradient arriving there

    def forward(self, model, x, caches):
        """Run the segment on x (NCHW); returns its output in NCHW, caching each step's input
        (None for a pool run inside its convolution)."""
        _core._lanes_pack(x, self.input)
        a = self.input
        k = 0
        while k < len(self.steps):
            step = self.steps[k]
            layer = model.layers[step.index]
            caches[k] = a
            if self.pooled[k]:
                caches[k + 1] = None
                _core._lanes_conv2d_forward(a, layer.weight, layer.bias, step.fused_relu, self.out[k + 1],
                                            self.code[k + 1])
                k += 1
            elif isinstance(layer, Conv2D):
                _core._lanes_conv2d_forward(a, layer.weight, layer.bias, step.fused_relu, self.out[k])
            else:
                _core._lanes_maxpool2x2_forward(a, self.out[k], self.code[k])
            a = self.out[k]
            k += 1
        _core._lanes_unpack(a, self.flat_out)
        return self.flat_out

    def backward(self, model, d, caches):
        """Send the gradient d (NCHW, at the segment's output) back through it, writing the
        layers' parameter gradients."""
        _core._lanes_pack(np.ascontiguousarray(d), self.grad_in)
        d = self.grad_in
        k = len(self.steps) - 1
        while k >= 0:
            step = self.steps[k]
            layer = model.layers[step.index]
            if step.index < model._first_trainable:
                break
            relu_output = self.out[k] if step.relu_input else None
            if k and self.pooled[k - 1]:   # this pool runs inside its convolution's backward
                k -= 1
                conv = model.layers[self.steps[k].index]
                grads = model._layer_grads[self.steps[k].index]
                _core._lanes_conv2d_backward(d, caches[k], conv.weight, self.steps[k].relu_input, self.dx[k],
                                             grads["weight"], grads["bias"], self.code[k + 1], relu_output)
                d = self.dx[k]
                k -= 1
                continue
            if isinstance(layer, Conv2D):
                grads = model._layer_grads[step.index]
                _core._lanes_conv2d_backward(d, caches[k], layer.weight, step.relu_input, self.dx[k],
                                             grads["weight"], grads["bias"])
            else:
                _core._lanes_maxpool2x2_backward(d, self.code[k], relu_output, self.dx[k])
            d = self.dx[k]
            k -= 1
