"""The layer protocol: what every layer of a :class:`maqueta.Sequential` declares and implements.

A layer is one class. It declares
  - its configuration (``get_config``: the constructor arguments) and its output shape;
  - its trainable parameters (``parameter_shapes``, ``initial_parameters``) and its buffers, the
    non-trainable state that is saved and loaded with it (``buffer_shapes``, ``initial_buffers``);
  - what may fuse with it (the class attributes below), so the executor needs no list of types;
and implements ``forward(x, call) -> y`` and ``backward(dy, call) -> dx`` for the NCHW layout, plus
``forward_lanes``/``backward_lanes`` when it has a kernel for the batch-lane layout.

Shapes below leave out the batch: a Conv2D maps (C, H, W) to (O, OH, OW). Once a layer belongs to
a model, ``weight`` and ``bias`` are views into the model's one parameter buffer (assigning copies
the values in, after checking them).
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Layer", "Call", "positive_int", "format_shape"]


def positive_int(value, name):
    """value as an int >= 1; TypeError for anything but an integer (bool included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def format_shape(shape):
    """A per-sample shape as the batched shape users see: (N, 6, 28, 28); '?' for unknown sizes."""
    return "(N, " + ", ".join("?" if s is None else str(s) for s in shape) + ")"


class Call:
    """One layer's part in running batches of one size: what the plan decided for it, the arrays
    it writes into, and what its forward leaves for its backward.

    The executor makes one per step and per batch size; only the owning layer reads its fields,
    and one caller uses a Call at a time (inference from several threads gets a Call each), so
    nothing a forward pass needs ever lives on the layer itself.
    """

    __slots__ = ("layer", "index", "training", "relu", "epilogue", "relu_input", "need_dx", "absorbed", "folded",
                 "grads", "out", "indices", "dx", "cache", "rng", "scratch", "epilogue_dy", "batch_offset",
                 "allreduce")

    def __init__(self, layer, index, training):
        self.layer = layer
        self.index = index            # the layer's position in the model
        self.training = training      # training mode: batch statistics, dropout masks, caches kept
        self.relu = False             # the layer's kernel also applies the ReLU that follows it
        self.epilogue = None          # (kind, alpha): the layer's kernel also applies this activation that
                                      # follows it (leaky ReLU, ELU), and its backward that activation's
                                      # gradient, from the output it keeps
        self.relu_input = False       # the input is a fused ReLU's output: backward applies its gradient
        self.need_dx = False          # backward must produce the input gradient
        self.absorbed = None          # lane layout: the following layer's Call, run inside this kernel
        self.folded = None            # evaluation: the following layer (a per-channel affine, such as a
                                      # batch norm), folded into this layer's kernel: see absorbs_channel_affine
        self.grads = layer._grads     # {name: view into the model's gradient buffer}
        self.out = None               # preallocated output (None: the kernel allocates)
        self.indices = None           # preallocated argmax indices or lane codes of a pool
        self.dx = None                # preallocated input gradient
        self.cache = None             # what forward keeps for backward
        self.rng = None               # the model's generator for layers that draw (dropout)
        self.scratch = None           # an array a kernel must write but nobody reads
        self.epilogue_dy = None       # the gradient through a fused epilogue activation (its backward writes it)
        # Data-parallel training (see maqueta.data_parallel), where each process holds a slice of
        # the global batch; set by the training code, the same on every process but for the offset.
        self.batch_offset = 0         # the index of this batch's first sample in the global batch
        self.allreduce = None         # sums a float64 array in place over the processes; None: one process

    @property
    def synchronised(self) -> bool:
        """Whether this batch is a slice of a global batch whose other slices are on other
        processes: a layer whose training forward mixes samples must then reduce its sums with
        :meth:`allreduce_sum` (every process calls it alike, in the same order)."""
        return self.allreduce is not None

    def allreduce_sum(self, array):
        """``array`` (float64, C-contiguous), summed in place over the processes that share the
        global batch and returned; the identity on one process. Every process gets the same sums."""
        if self.allreduce is not None:
            self.allreduce(array)
        return array


class Layer:
    """Base class: a layer with no parameters that passes values through unchanged."""

    # ---- what may fuse with what (read by the executor's plan; no type checks elsewhere)
    activation = None              # the activation this layer is ("relu"), for fusing into the layer before
    epilogue = None                # an activation, as configured: (kind, alpha) that a kernel before it may
                                   # apply to its own output (kind in that layer's fusable_activations), or
                                   # None when it cannot fuse. A fused "relu" leaves its gradient to the layer
                                   # after it (applies_relu_gradient) or, when that cannot, to the fused layer
                                   # (relu_gradient_from_output); any other kind's gradient must follow from
                                   # the activation's output alone: the fused layer applies it itself
    fusable_activations = ()       # activations this layer's kernel can apply to its own output
    lane_fusable_activations = ()  # those its lane kernel can apply too
    applies_relu_gradient = False  # its backward can apply the gradient of a ReLU fused before it
    relu_gradient_from_output = False  # with a ReLU fused after it and no layer after that to apply the
                                   # ReLU's gradient, its backward applies it from its own output
                                   # (the executor passes the ReLU as its epilogue, ("relu", 0.0))
    moves_no_values = False        # a reshape: a fused ReLU's gradient passes through it to the next layer
    lane_pool2x2 = False           # a 2x2, stride-2 max-pool: a lane convolution can run it in its kernel
    lane_worth_packing = False     # its lane kernel saves more than packing images into lanes costs
    absorbs_channel_affine = False # in evaluation mode, its kernel can fold in the per-channel affine of the
                                   # layer after it (scaling each output channel's weights, shifting its bias)
    folds_into_previous = False    # in evaluation mode it is y = x * scale + shift per channel (axis 1), with
                                   # (scale, shift) from inference_affine(): a layer before it that
                                   # absorbs_channel_affine runs it inside its own kernel
    per_batch_in_training = False  # training mode mixes a batch's samples or draws per batch (statistics,
                                   # masks): in data-parallel training such a layer reads call.batch_offset
                                   # and call.allreduce_sum, and also runs, forward and back, on a process
                                   # whose slice is empty (x with 0 samples), so that every process takes
                                   # part in the same reductions and draws

    def __init__(self):
        self._params = {}     # name -> view into the owning model's parameter buffer
        self._grads = {}      # name -> view into the owning model's gradient buffer
        self._buffers = {}    # name -> the model's array of this non-trainable state
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

    def expects(self) -> str:
        return "any shape"

    def input_template(self):
        """The per-sample input shape this layer fixes by itself, with None for free sizes
        ((C, None, None) for a convolution), or None when it fixes nothing."""
        return None

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one output for one input of ``input_shape``; raises ValueError when incompatible.
        Unknown sizes are None (before the model has seen data)."""
        return input_shape

    # ---- state
    def parameter_shapes(self) -> dict:
        """{name: shape} of the trainable parameters, in state_dict order."""
        return {}

    def initial_parameters(self, rng) -> dict:
        """{name: float64 array} drawn as PyTorch's defaults draw them."""
        return {}

    def buffer_shapes(self) -> dict:
        """{name: (shape, dtype or None for the model's dtype)} of the non-trainable state kept in
        state_dict after the parameters, as PyTorch keeps running statistics."""
        return {}

    def initial_buffers(self) -> dict:
        """{name: array} starting values of the buffers."""
        return {}

    def _get_param(self, name):
        return self._params.get(name)   # None before the layer joins a model, or without such a parameter

    def _set_param(self, name, value):
        if self._model is None:
            raise RuntimeError(f"{self!r} has no parameters until it is part of a Sequential model")
        if name not in self._params:
            raise AttributeError(f"{self.describe()} has no {name}")
        from ..state import checked_values   # state imports nothing of layers; this keeps it so
        target = self._params[name]
        target[...] = checked_values(value, target, f"{name} of {self.describe()}", "it must have shape")

    def inference_affine(self):
        """(scale, shift), arrays of one value per channel in the model's dtype, when
        ``folds_into_previous``: what evaluation mode computes, x * scale + shift."""
        raise NotImplementedError(f"{type(self).__name__} is not a per-channel affine")

    # ---- computation (NCHW)
    def allocate(self, call, n, in_shape, out_shape, dtype):
        """Give ``call`` the arrays this layer writes for batches of n (none by default: NumPy allocates)."""

    def forward(self, x, call):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy, call):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    # ---- computation in the batch-lane layout [blocks][C][H][W][V] (see maqueta.executor)
    def has_lane_kernel(self) -> bool:
        """Whether this layer, as configured, runs in the batch-lane layout."""
        return False

    def lane_input_padding(self):
        """As the model's first layer: the zero padding (top, bottom, left, right) that, added to
        the input as it is packed into lanes, lets this layer's lane kernel run it unpadded; None
        if it has no such kernel. (Only the first layer's input can be padded that way: its input
        gradient is never wanted.)"""
        return (0, 0, 0, 0) if self.has_lane_kernel() else None

    def lane_absorbs(self, following) -> bool:
        """Whether this layer's lane kernel can also run ``following`` (the next layer)."""
        return False

    def allocate_lanes(self, call, lanes, in_shape, out_shape):
        """Give ``call`` its lane-layout arrays; ``lanes(shape, dtype=None)`` makes one."""

    def forward_lanes(self, x, call):
        raise NotImplementedError(f"{type(self).__name__} has no lane kernel")

    def backward_lanes(self, dy, call):
        raise NotImplementedError(f"{type(self).__name__} has no lane kernel")

    # ---- export
    def to_onnx(self, graph, x: str) -> str:
        """Add this layer's ONNX nodes to ``graph`` (a maqueta.onnx.OnnxGraph), reading the value
        named ``x``; return the name of its output. This default refuses: a layer with no ONNX form."""
        from ..onnx import ONNXExportError
        raise ONNXExportError(f"{self.describe()} cannot be exported to ONNX: {type(self).__name__} "
                              f"defines no to_onnx method")
