"""Batch normalisation, as PyTorch's BatchNorm2d and BatchNorm1d."""
from __future__ import annotations

import numpy as np

from ..backend import kernels
from .base import Layer, format_shape, positive_int

__all__ = ["BatchNorm2D", "BatchNorm1D"]


class BatchNorm2D(Layer):
    """Normalises each channel of (N, C, H, W) inputs, as ``torch.nn.BatchNorm2d``.

    Training mode uses the batch's mean and (biased) variance over N, H and W, and updates the
    running statistics: running = (1 - momentum) running + momentum batch, with the unbiased
    variance, and counts num_batches_tracked (momentum=None: a cumulative average over that
    count). Evaluation mode uses the running statistics. affine: learn a per-channel weight and
    bias (initially 1 and 0). state_dict keys: weight, bias, running_mean, running_var,
    num_batches_tracked.

    In data-parallel training (``call.synchronised``) the statistics are those of the global
    batch, as PyTorch's SyncBatchNorm computes them: the processes sum each channel's values and
    count, then its squared deviations from the global mean, and in the backward pass the sums of
    dy and dy * xhat; every process updates its running statistics with the same numbers.
    """

    rank = 3   # per-sample input (C, H, W)
    fusable_activations = ("relu",)   # its kernels apply a following ReLU; the layer after it, that ReLU's gradient,
    relu_gradient_from_output = True  # or this layer's backward, where y > 0, when the layer after cannot
    folds_into_previous = True        # evaluation mode: a convolution before it runs it (inference_affine)
    per_batch_in_training = True

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.num_features = positive_int(num_features, "num_features")
        self.eps = _real(eps, "eps", positive=True)
        self.momentum = None if momentum is None else _real(momentum, "momentum", upper=1.0)
        self.affine = bool(affine)

    weight = property(lambda self: self._get_param("weight"), lambda self, v: self._set_param("weight", v))
    bias = property(lambda self: self._get_param("bias"), lambda self, v: self._set_param("bias", v))

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum, "affine": self.affine}

    def parameter_shapes(self):
        return {"weight": (self.num_features,), "bias": (self.num_features,)} if self.affine else {}

    def initial_parameters(self, rng):
        if not self.affine:
            return {}
        return {"weight": np.ones(self.num_features), "bias": np.zeros(self.num_features)}

    def buffer_shapes(self):
        c = (self.num_features,)
        return {"running_mean": (c, None), "running_var": (c, None), "num_batches_tracked": ((), np.int64)}

    def initial_buffers(self):
        return {"running_mean": 0.0, "running_var": 1.0, "num_batches_tracked": 0}

    def expects(self):
        return f"(N, {self.num_features}, H, W)" if self.rank == 3 else f"(N, {self.num_features})"

    def output_shape(self, input_shape):
        if len(input_shape) != self.rank or (input_shape[0] is not None and input_shape[0] != self.num_features):
            raise ValueError(f"{self.describe()} expects input of shape {self.expects()}, "
                             f"but receives {format_shape(input_shape)}")
        return input_shape

    def allocate(self, call, n, in_shape, out_shape, dtype):
        call.out = np.empty((n, *out_shape), dtype)
        if call.need_dx:
            call.dx = np.empty((n, *in_shape), dtype)

    def inference_affine(self):
        """Evaluation mode's (scale, shift): y = x * scale + shift per channel, from the running statistics."""
        weight, bias = self._params.get("weight"), self._params.get("bias")
        buffers = self._buffers
        invstd = 1.0 / np.sqrt(buffers["running_var"] + self.eps)
        scale = invstd if weight is None else weight * invstd
        shift = -buffers["running_mean"] * scale + (0 if bias is None else bias)
        dtype = buffers["running_var"].dtype
        return scale.astype(dtype, copy=False), shift.astype(dtype, copy=False)

    # --8<-- [start:batchnorm_layer_forward]   (quoted by docs/batchnorm.md)
    def forward(self, x, call):
        relu = call.relu or call.epilogue is not None   # a fused ReLU: its gradient after it, or here (epilogue)
        if not call.training:   # (a convolution before it may run this instead, folded: see inference_affine)
            scale, shift = self.inference_affine()
            return kernels().channel_affine(x, scale, shift, out=call.out, relu=relu)
        weight, bias = self._params.get("weight"), self._params.get("bias")
        buffers = self._buffers
        if call.synchronised:
            y, mean, var, count = self._synchronised_forward(x, weight, bias, relu, call)
        else:
            count = x.size // x.shape[1]
            self._check_count(count, x)
            y, mean, var = kernels().batchnorm_forward(x, weight, bias, self.eps, out=call.out, relu=relu)
        buffers["num_batches_tracked"] += 1
        momentum = 1.0 / int(buffers["num_batches_tracked"]) if self.momentum is None else self.momentum
        buffers["running_mean"] *= 1 - momentum
        buffers["running_mean"] += momentum * mean
        buffers["running_var"] *= 1 - momentum
        buffers["running_var"] += momentum * var * (count / (count - 1))
        call.cache = (x, mean, var, count, y if call.epilogue is not None else None)
        return y
    # --8<-- [end:batchnorm_layer_forward]

    def backward(self, dy, call):
        if call.cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward pass in training mode")
        x, mean, var, count, relu_output = call.cache
        if call.synchronised:
            if relu_output is not None:   # the fused ReLU's gradient, as the kernels apply it
                dy = dy * (relu_output > 0)
            return self._synchronised_backward(dy, x, mean, var, count, call)
        dx, _, _ = kernels().batchnorm_backward(dy, x, self._params.get("weight"), mean, var, self.eps,
                                                dx_out=call.dx, dw_out=call.grads.get("weight"),
                                                db_out=call.grads.get("bias"), relu_output=relu_output)
        return dx

    def _check_count(self, count, x):
        if count < 2:
            raise ValueError(f"{self.describe()} needs more than one value per channel in training mode "
                             f"(input shape {x.shape}), as PyTorch's does")

    # ---- data-parallel training: statistics of the global batch (NumPy, the kernels' arithmetic:
    # float64 sums, two passes, the same formulas), reduced over the processes by call.allreduce_sum
    def _synchronised_forward(self, x, weight, bias, relu, call):
        """(y, mean, var, count) with the global batch's statistics; x may hold no sample."""
        axes, shape = _channel_axes(x)
        channels = x.shape[1]
        sums = np.empty(channels + 1)
        x.sum(axis=axes, dtype=np.float64, out=sums[:channels])
        sums[channels] = x.size // channels
        call.allreduce_sum(sums)
        count = int(sums[channels])
        self._check_count(count, x)
        mean = sums[:channels] / count
        centred = x - mean.reshape(shape)   # float64, as the kernel computes
        var = call.allreduce_sum(np.square(centred).sum(axis=axes)) / count
        scale = (1.0 if weight is None else weight) / np.sqrt(var + self.eps)
        centred *= scale.reshape(shape)
        if bias is not None:
            centred += bias.reshape(shape)
        y = np.empty_like(x) if call.out is None else call.out
        y[...] = centred
        if relu:
            np.maximum(y, 0, out=y)
        return y, mean.astype(x.dtype), var.astype(x.dtype), count

    def _synchronised_backward(self, dy, x, mean, var, count, call):
        """dx through the global batch's statistics; writes this process's own sums of dy and
        dy * xhat as the bias and weight gradients (the gradient allreduce adds the others')."""
        axes, shape = _channel_axes(x)
        channels = x.shape[1]
        invstd = 1.0 / np.sqrt(var.astype(np.float64) + self.eps)
        xhat = (x - mean.astype(np.float64).reshape(shape)) * invstd.reshape(shape)
        sums = np.empty(2 * channels)   # sum of dy, then of dy * xhat
        dy.sum(axis=axes, dtype=np.float64, out=sums[:channels])
        np.sum(dy * xhat, axis=axes, out=sums[channels:])
        if "weight" in call.grads:
            call.grads["bias"][...] = sums[:channels]
            call.grads["weight"][...] = sums[channels:]
        if not call.need_dx:   # the same on every process: none of them reduces
            return None
        call.allreduce_sum(sums)
        weight = self._params.get("weight")
        scale = invstd if weight is None else weight * invstd
        xhat *= (sums[channels:] / count).reshape(shape)
        centred = dy - (sums[:channels] / count).reshape(shape)   # float64, in the kernel's order
        centred -= xhat
        centred *= scale.reshape(shape)
        dx = np.empty_like(x) if call.dx is None else call.dx
        dx[...] = centred
        return dx


    def to_onnx(self, graph, x):   # evaluation mode: the running statistics
        ones, zeros = np.ones(self.num_features), np.zeros(self.num_features)
        inputs = [x, graph.add_initializer(f"{self.index}.weight", self.weight if self.affine else ones),
                  graph.add_initializer(f"{self.index}.bias", self.bias if self.affine else zeros),
                  graph.add_initializer(f"{self.index}.running_mean", self._buffers["running_mean"]),
                  graph.add_initializer(f"{self.index}.running_var", self._buffers["running_var"])]
        return graph.add_node("BatchNormalization", inputs, f"{self.index}.batchnorm", epsilon=self.eps)


class BatchNorm1D(BatchNorm2D):
    """Normalises each feature of (N, C) inputs, as ``torch.nn.BatchNorm1d`` (on dense features)."""

    rank = 1


def _channel_axes(x):
    """The axes a channel's statistics run over, and the shape that broadcasts (C,) against x."""
    return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


def _real(value, name, positive=False, upper=None):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number < 0 or (positive and number == 0) or (upper is not None and number > upper):
        bound = f"in [0, {upper}]" if upper is not None else "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return number
