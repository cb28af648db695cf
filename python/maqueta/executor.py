"""How a Sequential model runs its layers: which of them fuse, which run in the batch-lane layout,
the arrays a batch size reuses, and the walk forward and back through the layers' own methods.

Fusion is what the layers declare (see ``maqueta.layers.base``): a layer whose kernel can apply
the activation that follows it (a Conv2D, Dense or batch norm before a ReLU) does so. The ReLU's
gradient then goes where it costs least: into whoever sends the gradient back into that output,
if it can apply it (a MaxPool2D, Dense or Conv2D, possibly through a Flatten), or else into the
layer's own backward, from its output (``relu_gradient_from_output``: before a global average
pool or a Dropout). A ReLU after a layer that cannot apply it stays a layer of its own. Either
way the arithmetic is the same as running every layer separately. An activation whose gradient
follows from its output (a LeakyReLU with a positive slope, an ELU with a positive alpha: their
``epilogue``) fuses into such a kernel whatever comes after it: the fused layer applies that
gradient itself. The leaky ReLU is then exactly the separate layer; the ELU's gradient, taken as
y + alpha rather than alpha e^x, differs in rounding (see layers.activations.fused_activation_gradient).

Evaluation mode runs a plan of its own (``Plan(..., inference=True)``): an activation fuses
whenever the layer before it can apply it, as no gradient will follow, and a layer that
``folds_into_previous`` (a batch norm, there a per-channel affine) runs inside the convolution
before it (``absorbs_channel_affine``): the convolution scales each filter's weights as it packs
them and adds the shift to its bias, so the batch norm's pass over the activations disappears.
The folded weights round differently from the two layers run apart (within the float tolerance).

With the native kernels, the leading run of layers that have a lane kernel (convolutions with
stride 1 and no padding, 2x2 max-pools) runs in the batch-lane layout [blocks][C][H][W][V] once a
batch fills a vector of V images: images sit in the vector lanes, so no multiply-add is wasted
on layout. The input is packed into lanes once and the segment's output unpacked for the layer
after it; gradients cross back the same way. A convolution followed by a 2x2 pool runs both in
one kernel each way. The first layer may be a padded convolution (LeNet-5 on 28x28 images,
padding 2): its padding goes around the input as it is packed, and its unpadded lane kernel runs
on that (its input gradient, which would need the padding cut off, is never wanted).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from . import _core
from .backend import get_backend
from .layers.base import Call

__all__ = ["Plan", "Step", "Run", "Executor"]


@dataclass
class Step:
    index: int          # the layer this step runs
    relu: bool          # the layer's kernel applies the ReLU after it (layer index + 1)
    relu_input: bool    # the step's input is a fused ReLU's output: its backward applies that gradient
    last: int           # the last layer the step covers (its output is that layer's)
    absorbs: bool = False   # lane layout: this step's kernel also runs the next step
    epilogue: tuple = None  # (kind, alpha): the layer's kernel applies this other activation after it,
                            # and its backward that activation's gradient
    folds: int = None       # evaluation: the index of the layer after it, folded into its kernel

    def fused_activation(self):
        """The kind of activation the step's kernel applies after its layer, or None."""
        return "relu" if self.relu else self.epilogue[0] if self.epilogue else None


class Plan:
    """The steps a model's layers run as, in training or (inference) evaluation mode. fuse, lanes,
    fuse_pools and fold turn each kind of fusion off (the tests compare every combination)."""

    def __init__(self, layers, fuse=True, lanes=True, fuse_pools=True, fold=True, inference=False):
        n = len(layers)

        def masks_gradient(j):   # can what comes after a fused ReLU apply its gradient?
            if j >= n:
                return False
            return layers[j].applies_relu_gradient or (layers[j].moves_no_values and masks_gradient(j + 1))

        def fusion(i):   # the activation after layer i that its kernel applies, (kind, alpha) or None,
            # and whether layer i applies its gradient too
            form = layers[i + 1].epilogue if fuse and i + 1 < n else None
            if form is None or form[0] not in layers[i].fusable_activations:
                return None, False
            if form[0] != "relu":   # layer i applies its gradient, from its own output
                return form, True
            if inference or masks_gradient(i + 2):   # the layer after it applies the ReLU's gradient
                return form, False
            if layers[i].relu_gradient_from_output:   # or layer i does, or nobody can
                return form, True
            return None, False

        self.steps = []
        i = 0
        while i < n:
            form, own_gradient = fusion(i)
            self.steps.append(Step(i, form is not None and not own_gradient, False, i + 1 if form else i,
                                   epilogue=tuple(form) if own_gradient else None))
            i += 2 if form else 1
        for k, step in enumerate(self.steps):
            if layers[step.index].moves_no_values:
                continue
            j = k - 1
            while j >= 0 and layers[self.steps[j].index].moves_no_values:
                j -= 1
            step.relu_input = j >= 0 and self.steps[j].relu
        # the leading steps that can run in the batch-lane layout, worth it if one of them saves work;
        # the first layer's may need its input padded as it is packed (lane_input_pads)
        def lane_step(step, first):   # (the lane kernels apply no activation's gradient from the output)
            layer, kind = layers[step.index], step.fused_activation()
            runs = layer.lane_input_padding() is not None if first else layer.has_lane_kernel()
            return runs and step.epilogue is None and (kind is None or kind in layer.lane_fusable_activations)

        count = 0
        while lanes and count < len(self.steps) and lane_step(self.steps[count], count == 0):
            count += 1
        pads = layers[0].lane_input_padding() if count else (0, 0, 0, 0)
        if any(pads) and count == 1:   # one padded layer alone does not pay for the packing (CIFAR's first convs)
            count = 0
        if not any(layers[s.index].lane_worth_packing for s in self.steps[:count]):
            count = 0
        self.lane_steps = count
        self.lane_input_pads = pads if count else (0, 0, 0, 0)
        k = 0
        while fuse_pools and k + 1 < count:
            step = self.steps[k]
            step.absorbs = layers[step.index].lane_absorbs(layers[self.steps[k + 1].index])
            k += 2 if step.absorbs else 1
        if inference and fold:
            self.steps = self.steps[:count] + folded(layers, self.steps[count:])


def folded(layers, steps):
    """steps, with each layer that folds into the previous one merged into that layer's step (and
    the activation fused after it, which the previous layer's kernel must be able to apply)."""
    out, k = [], 0
    while k < len(steps):
        step, after = steps[k], steps[k + 1] if k + 1 < len(steps) else None
        layer = layers[step.index]
        if (after is not None and layer.absorbs_channel_affine and step.last == step.index
                and layers[after.index].folds_into_previous
                and after.fused_activation() in (None, *layer.fusable_activations)):
            out.append(Step(step.index, after.relu, step.relu_input, after.last, epilogue=after.epilogue,
                            folds=after.index))
            k += 2
        else:
            out.append(step)
            k += 1
    return out


class LaneSegment:
    """The arrays and the walk of the plan's lane steps for one batch size."""

    def __init__(self, model, calls, n, width, input_shape, shapes, training, input_pads=(0, 0, 0, 0)):
        blocks = -(-n // width)
        code_dtype = np.int32 if model.dtype == np.float32 else np.int64   # as the lane pool kernels want

        def lanes(shape, code=False):
            return np.empty((blocks, *shape, width), code_dtype if code else model.dtype)

        self.input = lanes(input_shape)
        self.padded = None   # the input with the first layer's padding: zero margins, self.input inside
        top, bottom, left, right = input_pads
        if top or bottom or left or right:
            c, h, w = input_shape
            self.padded = np.zeros((blocks, c, h + top + bottom, w + left + right, width), model.dtype)
            self.interior = self.padded[:, :, top:top + h, left:left + w]
        for call in calls:
            in_shape = shapes[call.index - 1] if call.index else input_shape
            call.layer.allocate_lanes(call, lanes, in_shape, shapes[call.index])
        absorbed = {id(call.absorbed) for call in calls if call.absorbed is not None}
        self.calls = [call for call in calls if id(call) not in absorbed]
        self.backward_calls = [call for call in reversed(self.calls) if call.index >= model.first_trainable]
        last = calls[-1].index
        self.flat_out = np.empty((n, *shapes[last]), model.dtype)      # the segment's output, NCHW
        self.grad_in = lanes(shapes[last]) if training else None      # the gradient arriving there

    def forward(self, x):
        _core._lanes_pack(x, self.input)
        a = self.input
        if self.padded is not None:
            np.copyto(self.interior, self.input)
            a = self.padded
        for call in self.calls:
            a = call.layer.forward_lanes(a, call)
        _core._lanes_unpack(a, self.flat_out)
        return self.flat_out

    def backward(self, d):
        _core._lanes_pack(np.ascontiguousarray(d), self.grad_in)
        d = self.grad_in
        for call in self.backward_calls:
            d = call.layer.backward_lanes(d, call)


def lane_width(model, plan, n):
    """V when a batch of n should run the plan's lane segment, else 0."""
    if not plan.lane_steps or get_backend() != "native":
        return 0
    width = _core._lanes_width(model.dtype)
    return width if n >= width else 0


class Run:
    """Everything one batch size needs to run through the layers: a Call per step and, when
    ``allocate``, the arrays each step writes (reused from batch to batch). One caller at a time."""

    def __init__(self, model, plan, n, input_shape, training, allocate=True):
        shapes = model.layer_shapes(input_shape)
        self.n = n
        self.dtype = model.dtype
        self.shapes = [tuple(input_shape), *shapes]   # the input of layer i, the output of layer i - 1
        width = lane_width(model, plan, n) if allocate else 0
        self.key = (n, width)
        self.batch = np.empty((n, *input_shape), model.dtype) if training else None
        calls = []
        for step in plan.steps:
            layer = model.layers[step.index]
            call = Call(layer, step.index, training)
            call.relu, call.relu_input, call.epilogue = step.relu, step.relu_input, step.epilogue
            call.folded = None if step.folds is None else model.layers[step.folds]
            call.need_dx = training and step.index > model.first_trainable
            call.rng = model.state.layer_rng
            calls.append(call)
        for k, step in enumerate(plan.steps[:plan.lane_steps] if width else ()):
            if step.absorbs:
                calls[k].absorbed = calls[k + 1]
                calls[k + 1].need_dx = False   # its input gradient never exists: the kernel before it makes it
        split = plan.lane_steps if width else 0
        self.lanes = LaneSegment(model, calls[:split], n, width, input_shape, shapes, training,
                                 plan.lane_input_pads) if split else None
        self.calls = calls[split:]
        if allocate:
            for call, step in zip(self.calls, plan.steps[split:]):
                in_shape = shapes[step.index - 1] if step.index else input_shape
                call.layer.allocate(call, n, in_shape, shapes[step.last], model.dtype)
        self.backward_calls = [call for call in reversed(self.calls) if call.index >= model.first_trainable]
        self.backward_lanes = self.lanes is not None and bool(self.lanes.backward_calls)
        self.all_calls = calls

    def share(self, offset=0, allreduce=None):
        """Data-parallel training: this batch starts at sample ``offset`` of the global batch, and
        ``allreduce`` sums an array over the processes (None: one process holds the whole batch).
        Told to every layer's Call; see Call.allreduce_sum."""
        for call in self.all_calls:
            call.batch_offset, call.allreduce = offset, allreduce

    def forward(self, x):
        if self.lanes is not None:
            x = self.lanes.forward(x)
        for call in self.calls:
            x = call.layer.forward(x, call)
        return x

    def backward(self, d):
        """Send d, the loss's gradient at the outputs, back through the layers, which write their
        parameter gradients into the model's gradient buffer. Nothing before the first trainable
        layer needs a gradient."""
        for call in self.backward_calls:
            d = call.layer.backward(d, call)
        if self.backward_lanes:
            self.lanes.backward(d)

    def release(self):
        """Drop what forward left for backward (inputs, outputs), so that none of it outlives the call."""
        for call in self.all_calls:
            call.cache = None

    def take_part_without_samples(self):
        """Data-parallel training, on a process whose slice of the global batch is empty: the
        layers that work per batch (``per_batch_in_training``) run forward and back on no samples,
        in the order of a step, so that this process takes part in their reductions and draws as
        the others do; the other layers do nothing. Needs a Run made for n = 0."""
        for call in self.all_calls:
            if call.layer.per_batch_in_training:
                call.layer.forward(np.empty((0, *self.shapes[call.index]), self.dtype), call)
        for call in self.backward_calls:
            if call.layer.per_batch_in_training:
                call.layer.backward(np.empty((0, *self.shapes[call.index + 1]), self.dtype), call)


class Executor:
    """A model's plan and the runs it keeps for training (a few batch sizes: the full and the last
    partial batch), used by the training thread only."""

    def __init__(self, model, **plan_options):
        self.model = model
        self.plan = Plan(model.layers, **plan_options)
        self.inference_plan = Plan(model.layers, inference=True, **plan_options)
        self.training_runs = {}
        self._kept = threading.local()   # per thread: the last evaluation Run of forward()

    def run(self, n, input_shape, training=False, allocate=True):
        """A fresh Run: the caller owns it (inference from several threads gets one each)."""
        return Run(self.model, self.plan if training else self.inference_plan, n, input_shape, training, allocate)

    def forward(self, x, training):
        """model(x), through a Run without arrays (each kernel returns a fresh output). In
        evaluation mode each thread keeps its last Run for the next call of the same shape (for a
        single image, making one costs as much as a small layer) and releases its caches after
        every call; training mode makes a fresh Run, as its layers draw from the model's state."""
        if training:
            return self.run(len(x), x.shape[1:], training=True, allocate=False).forward(x)
        key = (len(x), x.shape[1:])
        kept = getattr(self._kept, "run", None)
        if kept is None or kept[0] != key:
            kept = self._kept.run = (key, self.run(len(x), x.shape[1:], allocate=False))
        try:
            return kept[1].forward(x)
        finally:
            kept[1].release()

    def training_run(self, n):
        run = self.training_runs.get(n)
        if run is None or run.key != (n, lane_width(self.model, self.plan, n)):   # the backend or ISA may change
            if len(self.training_runs) >= 4:
                self.training_runs.clear()
            run = self.training_runs[n] = self.run(n, self.model.input_shape, training=True)
        return run

    def gradients(self, xb, tb, loss_fn, offset=0, allreduce=None):
        """Forward and backward on one batch, leaving the gradients in the model's buffer; returns
        (loss, outputs). The outputs live in reused arrays: read them before the next call.
        offset, allreduce: xb is a slice of a global batch spread over processes (see Run.share)."""
        run = self.training_run(len(xb))
        run.share(offset, allreduce)
        outputs = run.forward(xb)
        value, d = loss_fn(outputs, tb)
        run.backward(d)
        return value, outputs

    def take_part_without_samples(self, allreduce):
        """Data-parallel training with an empty slice: see Run.take_part_without_samples."""
        run = self.training_run(0)
        run.share(0, allreduce)
        run.take_part_without_samples()
