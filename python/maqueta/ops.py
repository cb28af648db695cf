"""The compiled kernels, with NumPy-friendly signatures.

Every function takes float32 or float64 arrays (all operands of one call share the dtype) in
PyTorch's layouts: activations ``(N, C, H, W)``, conv weights ``(O, C, KH, KW)``, dense weights
``(OUT, IN)``. Inputs in any memory layout are accepted (copied when not C-contiguous); the arrays an
optimizer updates in place must be C-contiguous and writeable. Bad arguments raise ``TypeError`` or
``ValueError`` naming the argument and the shapes. The GIL is released while a kernel runs.

Every output can be written into a caller's array instead of a new one (``out``, ``dx_out``,
``dw_out``, ``db_out``, ``indices_out``): C-contiguous, of the exact shape and dtype, sharing no
memory with the inputs. A training loop that reuses them allocates nothing per step.

``maqueta.reference`` holds the same functions written in plain NumPy: the ground truth these are
tested against.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._args import pair, pool_window

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "linear_forward",
    "linear_backward",
    "adam_update",
    "sgd_update",
    "rmsprop_update",
    "softmax_cross_entropy",
    "batchnorm_forward",
    "batchnorm_backward",
    "channel_affine",
    "dropout_forward",
    "dropout_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "activation_forward",
    "activation_backward",
]


def conv2d_forward(x, w, b=None, stride=1, padding=0, relu=False, out=None, activation=None, alpha=0.0,
                   weight_scale=None):
    """2-D cross-correlation with zero padding, as ``torch.nn.functional.conv2d``.

    x: ndarray (N, C, H, W); w: ndarray (O, C, KH, KW); b: ndarray (O,) or None.
    stride, padding: int or (height, width) pair. relu: apply max(y, 0) in the same pass.
    activation: None, "relu", "leaky_relu" (negative slope alpha) or "elu" (alpha), applied in the
    same pass with the arithmetic of :func:`activation_forward` (relu=True is activation="relu").
    weight_scale: ndarray (O,) or None: filter o's weights are taken as ``w[o] * weight_scale[o]``
    (rounded to the dtype), which folds an evaluation-mode batch norm into the convolution (its
    shift goes into b). The scaled weights are formed while the kernel packs w, at no extra cost.
    Returns y: ndarray (N, O, OH, OW) with OH = (H + 2*ph - KH) // sh + 1 (OW likewise).
    """
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    return _core.conv2d_forward(x, w, b, sh, sw, ph, pw, bool(relu), out, activation or "none", float(alpha),
                                weight_scale)


def conv2d_backward(dy, x, w, stride=1, padding=0, need_dx=True, relu_input=False, dx_out=None, dw_out=None,
                    db_out=None):
    """Gradients of :func:`conv2d_forward` (without its activation).

    dy: ndarray (N, O, OH, OW); x and w as given to the forward pass.
    relu_input: x is the output of a ReLU; dx is then zero where x <= 0 (that ReLU's gradient, fused).
    Returns (dx or None, dw, db): dx (N, C, H, W) unless need_dx is false (then its work is skipped),
    dw (O, C, KH, KW), db (O,).
    """
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    return _core.conv2d_backward(dy, x, w, sh, sw, ph, pw, bool(need_dx), bool(relu_input), dx_out, dw_out, db_out)


def maxpool2d_forward(x, kernel_size, stride=None, out=None, indices_out=None):
    """Max-pooling over (KH, KW) windows, as ``torch.nn.functional.max_pool2d(..., return_indices=True)``.

    x: ndarray (N, C, H, W); kernel_size: int or pair; stride defaults to kernel_size.
    Windows that do not fit are dropped (ceil_mode=False). The first maximum of a window wins ties;
    a NaN wins over any number, so NaN propagates.
    Returns (y, indices): y (N, C, OH, OW) and int64 indices of each maximum within its (H, W) plane.
    """
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", 1)
    return _core.maxpool2d_forward(x, kh, kw, sh, sw, out, indices_out)


def maxpool2d_backward(dy, indices, x_shape, relu_output=None, out=None):
    """Gradient of :func:`maxpool2d_forward`: dx (x_shape) with dy added at each window's maximum.

    dy: ndarray (N, C, OH, OW); indices: int64 ndarray from the forward pass; x_shape: (N, C, H, W).
    relu_output: the forward output y when x was the output of a ReLU: only windows with y > 0 pass
    their gradient (that ReLU's gradient at the maximum, fused).
    """
    shape = tuple(x_shape) if isinstance(x_shape, np.ndarray) else x_shape
    return _core.maxpool2d_backward(dy, indices, shape, relu_output, out)


def linear_forward(x, w, b=None, relu=False, out=None, activation=None, alpha=0.0):
    """Dense layer y = x @ w.T + b, as ``torch.nn.functional.linear``.

    x: ndarray (N, IN); w: ndarray (OUT, IN); b: ndarray (OUT,) or None. Returns y (N, OUT).
    """
    return _core.linear_forward(x, w, b, bool(relu), out, activation or "none", float(alpha))


def linear_backward(dy, x, w, need_dx=True, relu_input=False, dx_out=None, dw_out=None, db_out=None):
    """Gradients of :func:`linear_forward` (without its activation): (dx (N, IN) or None, dw (OUT, IN), db (OUT,)).
    relu_input as for :func:`conv2d_backward`."""
    return _core.linear_backward(dy, x, w, bool(need_dx), bool(relu_input), dx_out, dw_out, db_out)


def adam_update(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                bias_correction=True):
    """One Adam step, in place on param, m and v (all C-contiguous arrays of one shape and dtype).

    Kingma & Ba (2015), Algorithm 1, computed as ``torch.optim.Adam`` does: eps is added after the
    square root of the bias-corrected second moment; weight_decay adds ``weight_decay * param`` to the
    gradient. ``step`` counts updates including this one (1 for the first). With
    ``bias_correction=False`` the moments are used as they are (the original notebook's variant).
    """
    _core.adam_update(param, grad, m, v, _step(step), float(lr), float(beta1), float(beta2), float(eps),
                      float(weight_decay), bool(bias_correction))


def sgd_update(param, grad, velocity, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step, in place, as ``torch.optim.SGD`` (dampening 0).

    velocity (the momentum buffer, start it at zeros) may be None when momentum is 0.
    """
    _core.sgd_update(param, grad, velocity, float(lr), float(momentum), float(weight_decay), bool(nesterov))


def _step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int, got {step!r}")
    return int(step)


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha=0.99, eps=1e-8, weight_decay=0.0,
                   momentum=0.0):
    """One RMSprop step, in place, as ``torch.optim.RMSprop``: square_avg always; grad_avg (centered)
    and momentum_buffer (momentum > 0) or None. All C-contiguous arrays of param's shape and dtype."""
    _core.rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, float(lr), float(alpha), float(eps),
                         float(weight_decay), float(momentum))


def softmax_cross_entropy(logits, targets, grad_out=None):
    """Mean softmax cross-entropy of logits (N, K) against class indices targets (N,), and its
    gradient (softmax(logits) - onehot(targets)) / N: as torch.nn.CrossEntropyLoss. Returns
    (loss as a Python float, gradient (N, K))."""
    return _core.softmax_cross_entropy(logits, targets, grad_out)


def batchnorm_forward(x, weight=None, bias=None, eps=1e-5, out=None, relu=False):
    """Batch normalisation with the batch's statistics, per channel (axis 1) of x (N, C) or
    (N, C, H, W): y = (x - mean) / sqrt(var + eps) * weight + bias, var biased, then max(y, 0)
    when relu. weight and bias: (C,) or both None. Returns (y, mean (C,), var (C,)); statistics
    are summed in float64."""
    return _core.batchnorm_forward(x, weight, bias, float(eps), out, bool(relu))


def batchnorm_backward(dy, x, weight, mean, var, eps=1e-5, dx_out=None, dw_out=None, db_out=None, relu_output=None):
    """Gradients of :func:`batchnorm_forward` through the batch statistics: (dx, dweight, dbias),
    the last two None when weight is None. relu_output: the forward's output when it applied a
    ReLU (relu=True); dy * (relu_output > 0), that ReLU's gradient, takes dy's place."""
    return _core.batchnorm_backward(dy, x, weight, mean, var, float(eps), dx_out, dw_out, db_out, relu_output)


def channel_affine(x, scale, shift, out=None, relu=False):
    """y[:, c] = x[:, c] * scale[c] + shift[c] (then max(y, 0) when relu): batch normalisation in
    evaluation mode."""
    return _core.channel_affine(x, scale, shift, out, bool(relu))


def dropout_forward(x, p, seed, channelwise=False, out=None, mask_out=None, offset=0):
    """Inverted dropout: y = x * keep / (1 - p); keep per value, or per (n, c) plane when
    channelwise, a hash of the index and ``seed`` (int in [0, 2**64)). ``offset``: the index of
    x's first sample in the whole batch, when x is a slice of it: the mask is then that slice of
    the whole batch's mask. Returns (y, mask uint8)."""
    seed = _slice_seed(seed, offset, x, channelwise)
    return _core.dropout_forward(x, float(p), seed, bool(channelwise), out, mask_out)


def dropout_backward(dy, mask, p, out=None):
    """dx = dy * mask / (1 - p), the mask from :func:`dropout_forward`."""
    return _core.dropout_backward(dy, mask, float(p), out)


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, out=None):
    """Average pooling of x (N, C, H, W) over the zero-padded input, as ``torch.nn.AvgPool2d``
    (count_include_pad=True); stride defaults to kernel_size; padding at most half the kernel."""
    kh, kw, sh, sw, ph, pw = pool_window(kernel_size, stride, padding)
    return _core.avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, out)


def avgpool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, out=None):
    """Gradient of :func:`avgpool2d_forward`: dx (x_shape)."""
    kh, kw, sh, sw, ph, pw = pool_window(kernel_size, stride, padding)
    return _core.avgpool2d_backward(dy, [int(s) for s in x_shape], kh, kw, sh, sw, ph, pw, out)


def activation_forward(x, kind, alpha=0.01, out=None):
    """Element-wise activation ``kind``: "leaky_relu" (slope alpha), "elu" (alpha), "gelu" or
    "gelu_tanh" (PyTorch's approximate="tanh"); as PyTorch's, in x's precision."""
    return _core.activation_forward(x, kind, float(alpha), out)


def activation_backward(dy, x, kind, alpha=0.01, out=None):
    """dy times the activation's derivative at x."""
    return _core.activation_backward(dy, x, kind, float(alpha), out)


_GOLDEN = 0x9E3779B97F4A7C15   # the increment of dropout's splitmix64 hash (cpp/kernels/dropout.cpp)


def _slice_seed(seed, offset, x, channelwise):
    """The seed under which the dropout kernels draw, for x's first sample at ``offset`` in the
    whole batch, the whole batch's mask bits. The kernels hash seed + (u + 1) * golden for unit u,
    wrapping modulo 2**64, so unit u of the slice hashes as unit offset + u of the whole batch
    under seed + offset * golden per unit."""
    seed = _seed(seed)
    if offset:
        units_per_sample = int(np.prod(x.shape[1:2] if channelwise else x.shape[1:]))
        seed = (seed + _offset(offset) * units_per_sample * _GOLDEN) % 2**64
    return seed


def _offset(offset):
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    return int(offset)


def _seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return int(seed)
