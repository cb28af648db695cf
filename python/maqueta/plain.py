"""The plain C++ kernels: every function of :mod:`maqueta.ops` again, on loops you can read.

Each function here calls its twin in ``cpp/plain/`` (``conv2d_forward`` -> ``_core.plain_conv2d_forward``
-> ``cpp/plain/conv2d.cpp``): nested loops in the order of the math, one short function per
direction, no SIMD. They are compiled, so a model trains on them in seconds rather than the NumPy
oracle's minutes (``maqueta.set_backend("plain")``), and they are tested three ways: against the
oracle (:mod:`maqueta.reference`), against the fast kernels (:mod:`maqueta.ops`), and by finite
differences.

Same signatures, layouts, checks and errors as :mod:`maqueta.ops`; see its docstrings for the
arguments. Activations (N, C, H, W), conv weights (O, C, KH, KW), dense weights (OUT, IN).
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._args import pair, pool_window
from .ops import _slice_seed, _step

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


# --8<-- [start:conv2d_forward]   (quoted by docs/index.md)
def conv2d_forward(x, w, b=None, stride=1, padding=0, relu=False, out=None, activation=None, alpha=0.0,
                   weight_scale=None):
    """y (N, O, OH, OW) = conv(x (N, C, H, W), w (O, C, KH, KW)) + b (O,): cpp/plain/conv2d.cpp.
    weight_scale (O,): filter o's weights times weight_scale[o]."""
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    return _core.plain_conv2d_forward(x, w, b, sh, sw, ph, pw, bool(relu), out, activation or "none", float(alpha),
                                      weight_scale)


def conv2d_backward(dy, x, w, stride=1, padding=0, need_dx=True, relu_input=False, dx_out=None, dw_out=None,
                    db_out=None):
    """(dx (N, C, H, W) or None, dw (O, C, KH, KW), db (O,)) from dy (N, O, OH, OW): cpp/plain/conv2d.cpp."""
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    return _core.plain_conv2d_backward(dy, x, w, sh, sw, ph, pw, bool(need_dx), bool(relu_input), dx_out, dw_out,
                                       db_out)
# --8<-- [end:conv2d_forward]


def maxpool2d_forward(x, kernel_size, stride=None, out=None, indices_out=None):
    """(y (N, C, OH, OW), int64 indices within each (H, W) plane): cpp/plain/maxpool2d.cpp."""
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", 1)
    return _core.plain_maxpool2d_forward(x, kh, kw, sh, sw, out, indices_out)


def maxpool2d_backward(dy, indices, x_shape, relu_output=None, out=None):
    """dx (x_shape) with dy added at each window's maximum: cpp/plain/maxpool2d.cpp."""
    shape = tuple(x_shape) if isinstance(x_shape, np.ndarray) else x_shape
    return _core.plain_maxpool2d_backward(dy, indices, shape, relu_output, out)


def linear_forward(x, w, b=None, relu=False, out=None, activation=None, alpha=0.0):
    """y (N, OUT) = x (N, IN) @ w (OUT, IN).T + b (OUT,): cpp/plain/linear.cpp."""
    return _core.plain_linear_forward(x, w, b, bool(relu), out, activation or "none", float(alpha))


def linear_backward(dy, x, w, need_dx=True, relu_input=False, dx_out=None, dw_out=None, db_out=None):
    """(dx (N, IN) or None, dw (OUT, IN), db (OUT,)) from dy (N, OUT): cpp/plain/linear.cpp."""
    return _core.plain_linear_backward(dy, x, w, bool(need_dx), bool(relu_input), dx_out, dw_out, db_out)


def adam_update(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                bias_correction=True):
    """One Adam step in place on param, m and v, as :func:`maqueta.ops.adam_update`: cpp/plain/optim.cpp."""
    _core.plain_adam_update(param, grad, m, v, _step(step), float(lr), float(beta1), float(beta2), float(eps),
                            float(weight_decay), bool(bias_correction))


def sgd_update(param, grad, velocity, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step in place, as :func:`maqueta.ops.sgd_update`: cpp/plain/optim.cpp."""
    _core.plain_sgd_update(param, grad, velocity, float(lr), float(momentum), float(weight_decay), bool(nesterov))


def softmax_cross_entropy(logits, targets, grad_out=None):
    """(mean loss, gradient (softmax - onehot) / N) for logits (N, K) and targets (N,): cpp/plain/loss.cpp."""
    return _core.plain_softmax_cross_entropy(logits, targets, grad_out)


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha=0.99, eps=1e-8, weight_decay=0.0,
                   momentum=0.0):
    """One RMSprop step in place, as :func:`maqueta.ops.rmsprop_update`: cpp/plain/rmsprop.cpp."""
    _core.plain_rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, float(lr), float(alpha),
                               float(eps), float(weight_decay), float(momentum))


def batchnorm_forward(x, weight=None, bias=None, eps=1e-5, out=None, relu=False):
    """(y, mean (C,), var (C,)) of x (N, C) or (N, C, H, W) normalised by the batch's statistics
    (then max(y, 0) when relu): cpp/plain/normalization.cpp."""
    return _core.plain_batchnorm_forward(x, weight, bias, float(eps), out, bool(relu))


def batchnorm_backward(dy, x, weight, mean, var, eps=1e-5, dx_out=None, dw_out=None, db_out=None, relu_output=None):
    """(dx, dweight or None, dbias or None) through the batch statistics, with dy * (relu_output > 0)
    for dy when relu_output is given: cpp/plain/normalization.cpp."""
    return _core.plain_batchnorm_backward(dy, x, weight, mean, var, float(eps), dx_out, dw_out, db_out, relu_output)


def channel_affine(x, scale, shift, out=None, relu=False):
    """y[:, c] = x[:, c] * scale[c] + shift[c], then max(y, 0) when relu (batch norm in evaluation):
    cpp/plain/normalization.cpp."""
    return _core.plain_channel_affine(x, scale, shift, out, bool(relu))


def dropout_forward(x, p, seed, channelwise=False, out=None, mask_out=None, offset=0):
    """(y, uint8 mask) of inverted dropout, the mask bit for bit the fast kernel's (offset: as
    :func:`maqueta.ops.dropout_forward`): cpp/plain/dropout.cpp."""
    return _core.plain_dropout_forward(x, float(p), _slice_seed(seed, offset, x, channelwise), bool(channelwise),
                                       out, mask_out)


def dropout_backward(dy, mask, p, out=None):
    """dx = dy * mask / (1 - p): cpp/plain/dropout.cpp."""
    return _core.plain_dropout_backward(dy, mask, float(p), out)


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, out=None):
    """y (N, C, OH, OW): the mean of each window of the zero-padded x: cpp/plain/avgpool2d.cpp."""
    kh, kw, sh, sw, ph, pw = pool_window(kernel_size, stride, padding)
    return _core.plain_avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, out)


def avgpool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, out=None):
    """dx (x_shape): each window's dy shared equally among its pixels: cpp/plain/avgpool2d.cpp."""
    kh, kw, sh, sw, ph, pw = pool_window(kernel_size, stride, padding)
    return _core.plain_avgpool2d_backward(dy, [int(s) for s in x_shape], kh, kw, sh, sw, ph, pw, out)


def activation_forward(x, kind, alpha=0.01, out=None):
    """Element-wise "leaky_relu", "elu", "gelu" or "gelu_tanh": cpp/plain/activation.cpp."""
    return _core.plain_activation_forward(x, kind, float(alpha), out)


def activation_backward(dy, x, kind, alpha=0.01, out=None):
    """dy times the activation's derivative at x: cpp/plain/activation.cpp."""
    return _core.plain_activation_backward(dy, x, kind, float(alpha), out)
