"""The oracle: every kernel of :mod:`maqueta.ops` again, in plain NumPy, written to be read.

These functions are the ground truth the compiled kernels are tested against, and a backend a model
can train on (``maqueta.set_backend("reference")``). They loop over output positions and say the
math of each operation in one or two lines; they are slow, and meant to be.

Same signatures, layouts and semantics as :mod:`maqueta.ops`:
activations (N, C, H, W), conv weights (O, C, KH, KW), dense weights (OUT, IN).

The ``# --8<--`` lines mark the sections the guide (docs/) quotes, so that it shows this code.
"""
from __future__ import annotations

import numpy as np

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


def _output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _into(out, value):
    """Return value, copied into out when the caller gave one (as the native kernels write there)."""
    if out is None:
        return value
    out[...] = value
    return out


def _output_activation(y, relu, activation, alpha):
    """The activation a conv2d or linear forward applies to its output: relu (max(y, 0)), or
    activation "relu", "leaky_relu" or "elu" with alpha, as activation_forward computes them."""
    if activation not in (None, "none", "relu", "leaky_relu", "elu"):
        raise ValueError(f"activation must be 'none', 'relu', 'leaky_relu' or 'elu', got {activation!r}")
    if relu and activation not in (None, "none", "relu"):
        raise ValueError(f"relu=True and activation={activation!r} ask for two activations")
    if relu or activation == "relu":
        return np.maximum(y, 0)
    if activation in ("leaky_relu", "elu"):
        return activation_forward(y, activation, alpha)
    return y


# --8<-- [start:conv2d_forward]
def conv2d_forward(x, w, b=None, stride=1, padding=0, relu=False, out=None, activation=None, alpha=0.0,
                   weight_scale=None):
    """y[n, o, i, j] = b[o] + sum over c, kh, kw of w[o, c, kh, kw] * xpad[n, c, i*sh + kh, j*sw + kw]
    With weight_scale, each w[o] is first multiplied by weight_scale[o] (a batch norm folded in)."""
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    if weight_scale is not None:
        w = w * weight_scale[:, None, None, None]
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = _output_size(H, KH, sh, ph), _output_size(W, KW, sw, pw)
    xpad = _pad(x, ph, pw)
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            window = xpad[:, :, i * sh:i * sh + KH, j * sw:j * sw + KW]          # (N, C, KH, KW)
            y[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))  # (N, O)
    if b is not None:
        y += b[None, :, None, None]
    return _into(out, _output_activation(y, relu, activation, alpha))
# --8<-- [end:conv2d_forward]


# --8<-- [start:conv2d_backward]
def conv2d_backward(dy, x, w, stride=1, padding=0, need_dx=True, relu_input=False, dx_out=None, dw_out=None,
                    db_out=None):
    """Each output y[n, o, i, j] saw one window of xpad through w, so it sends dy[n, o, i, j] back
    to that window through w (giving dx) and to w through that window (giving dw). With
    relu_input, x came out of a ReLU, whose gradient passes only where x > 0."""
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    _, _, OH, OW = dy.shape
    xpad = _pad(x, ph, pw)
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    for i in range(OH):
        for j in range(OW):
            rows, cols = slice(i * sh, i * sh + KH), slice(j * sw, j * sw + KW)
            g = dy[:, :, i, j]                                                     # (N, O)
            dw += np.tensordot(g, xpad[:, :, rows, cols], axes=([0], [0]))       # (O, C, KH, KW)
            if need_dx:
                dxpad[:, :, rows, cols] += np.tensordot(g, w, axes=([1], [0]))   # (N, C, KH, KW)
    db = dy.sum(axis=(0, 2, 3))
    dx = None
    if need_dx:
        dx = dxpad[:, :, ph:ph + H, pw:pw + W].copy()
        if relu_input:
            dx[~(x > 0)] = 0
        dx = _into(dx_out, dx)
    return dx, _into(dw_out, dw), _into(db_out, db)
# --8<-- [end:conv2d_backward]


# --8<-- [start:maxpool2d_forward]
def maxpool2d_forward(x, kernel_size, stride=None, out=None, indices_out=None):
    """y[n, c, i, j] = max of the (KH, KW) window at (i*sh, j*sw); indices = where, within the
    (H, W) plane. np.argmax returns the first maximum, and the first NaN when there is one."""
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", 1)
    N, C, H, W = x.shape
    if kh > H or kw > W:
        raise ValueError(f"kernel_size {(kh, kw)} is larger than the input {(H, W)}")
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    indices = np.empty((N, C, OH, OW), dtype=np.int64)
    for i in range(OH):
        for j in range(OW):
            window = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(N, C, kh * kw)
            k = np.argmax(window, axis=2)                                        # (N, C)
            y[:, :, i, j] = np.take_along_axis(window, k[..., None], axis=2)[..., 0]
            indices[:, :, i, j] = (i * sh + k // kw) * W + (j * sw + k % kw)
    return _into(out, y), _into(indices_out, indices)
# --8<-- [end:maxpool2d_forward]


# --8<-- [start:maxpool2d_backward]
def maxpool2d_backward(dy, indices, x_shape, relu_output=None, out=None):
    """dx is zero except at each window's maximum, which receives that window's dy (summed when
    overlapping windows share a maximum). With relu_output (the forward y of a ReLU'd input), a
    window passes its gradient only if y > 0: the ReLU's gradient at the maximum."""
    N, C, H, W = (int(s) for s in x_shape)
    if indices.size and (indices.min() < 0 or indices.max() >= H * W):
        raise ValueError(f"indices must lie in [0, {H * W}) for x_shape {tuple(x_shape)}")
    if relu_output is not None:
        dy = np.where(relu_output > 0, dy, 0)
    dx = np.zeros((N, C, H * W), dtype=dy.dtype)
    for n in range(N):
        for c in range(C):
            np.add.at(dx[n, c], indices[n, c].ravel(), dy[n, c].ravel())
    return _into(out, dx.reshape(N, C, H, W))
# --8<-- [end:maxpool2d_backward]


# --8<-- [start:linear_forward]
def linear_forward(x, w, b=None, relu=False, out=None, activation=None, alpha=0.0):
    """y = x @ w.T + b, then the activation (as conv2d_forward)"""
    y = x @ w.T
    if b is not None:
        y = y + b
    return _into(out, _output_activation(y, relu, activation, alpha))
# --8<-- [end:linear_forward]


# --8<-- [start:linear_backward]
def linear_backward(dy, x, w, need_dx=True, relu_input=False, dx_out=None, dw_out=None, db_out=None):
    """dx = dy @ w (zero where x <= 0 with relu_input),  dw = dy.T @ x,  db = sum of dy over the batch"""
    dx = None
    if need_dx:
        dx = dy @ w
        if relu_input:
            dx = np.where(x > 0, dx, 0)
        dx = _into(dx_out, dx)
    return dx, _into(dw_out, dy.T @ x), _into(db_out, dy.sum(axis=0))
# --8<-- [end:linear_backward]


# --8<-- [start:adam_update]
def adam_update(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                bias_correction=True):
    """Kingma & Ba (2015), Algorithm 1, in place:
        g = grad + weight_decay * param
        m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t)            v_hat = v / (1 - beta2^t)     (bias correction)
        param = param - lr m_hat / (sqrt(v_hat) + eps)
    """
    g = grad + weight_decay * param if weight_decay else grad
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m, v
    if bias_correction:
        m_hat = m / (1 - beta1 ** step)
        v_hat = v / (1 - beta2 ** step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)
# --8<-- [end:adam_update]


# --8<-- [start:sgd_update]
def sgd_update(param, grad, velocity, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """In place:  g = grad + weight_decay * param;  velocity = momentum * velocity + g;
    param = param - lr * (g + momentum * velocity if nesterov else velocity)   (g alone without momentum)"""
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        velocity[...] = momentum * velocity + g
        g = g + momentum * velocity if nesterov else velocity
    param -= lr * g
# --8<-- [end:sgd_update]


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha=0.99, eps=1e-8, weight_decay=0.0,
                   momentum=0.0):
    """In place, as torch.optim.RMSprop:  g = grad + weight_decay * param;
        square_avg = alpha square_avg + (1 - alpha) g^2
        centered (grad_avg given): grad_avg += (1 - alpha) (g - grad_avg);  avg = sqrt(square_avg - grad_avg^2) + eps
        else avg = sqrt(square_avg) + eps
        momentum_buffer = momentum momentum_buffer + g / avg;  param -= lr momentum_buffer   (with momentum)
        param -= lr g / avg   (without)"""
    g = grad + weight_decay * param if weight_decay else grad
    square_avg[...] = alpha * square_avg + (1 - alpha) * g * g
    if grad_avg is not None:
        grad_avg += (1 - alpha) * (g - grad_avg)
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum:
        momentum_buffer[...] = momentum * momentum_buffer + g / avg
        param -= lr * momentum_buffer
    else:
        param -= lr * (g / avg)


# --8<-- [start:softmax_cross_entropy]
def softmax_cross_entropy(logits, targets, grad_out=None):
    """loss = mean over n of -log softmax(logits[n])[targets[n]], with softmax shifted by the row
    maximum so that exp never overflows; gradient (softmax - onehot) / N."""
    n = logits.shape[0]
    rows = np.arange(n)
    with np.errstate(invalid="ignore"):   # inf logits give NaN, which training reports itself
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, targets].mean(dtype=np.float64)
    grad = np.exp(log_probs)
    grad[rows, targets] -= 1
    grad /= n
    return float(loss), _into(grad_out, grad)
# --8<-- [end:softmax_cross_entropy]


# --8<-- [start:batchnorm_forward]
def batchnorm_forward(x, weight=None, bias=None, eps=1e-5, out=None, relu=False):
    """Batch normalisation with the batch's statistics, per channel c (axis 1) over every other axis:
        mean_c = average of x[:, c]        var_c = average of (x[:, c] - mean_c)^2   (biased)
        y[:, c] = (x[:, c] - mean_c) / sqrt(var_c + eps) * weight_c + bias_c
    x: (N, C) or (N, C, H, W). Returns (y, mean (C,), var (C,)) in float64 statistics' precision
    of x's dtype; without weight and bias the scale is 1 and the shift 0. relu: then max(y, 0) (a
    following ReLU, fused)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    y = y.astype(x.dtype, copy=False)
    return _into(out, np.maximum(y, 0) if relu else y), mean, var
# --8<-- [end:batchnorm_forward]


# --8<-- [start:batchnorm_backward]
def batchnorm_backward(dy, x, weight, mean, var, eps=1e-5, dx_out=None, dw_out=None, db_out=None, relu_output=None):
    """Gradients of batchnorm_forward. With xhat = (x - mean) / sqrt(var + eps) and M values per
    channel, every y of a channel depends on every x of it through mean and var:
        dbias_c = sum of dy[:, c]        dweight_c = sum of dy[:, c] * xhat[:, c]
        dx[:, c] = weight_c / sqrt(var_c + eps) * (dy - dbias_c / M - xhat * dweight_c / M)
    relu_output: the forward's output when it applied a ReLU; dy * (relu_output > 0), that ReLU's
    gradient, takes dy's place. Returns (dx, dweight, dbias); dweight and dbias are None without weight."""
    if relu_output is not None:
        dy = dy * (relu_output > 0)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    count = x.size // x.shape[1]
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    dbias = dy.sum(axis=axes)
    dweight = (dy * xhat).sum(axis=axes)
    scale = invstd if weight is None else weight * invstd
    dx = scale.reshape(shape) * (dy - (dbias / count).reshape(shape) - xhat * (dweight / count).reshape(shape))
    dx = _into(dx_out, dx.astype(x.dtype, copy=False))
    if weight is None:
        return dx, None, None
    return dx, _into(dw_out, dweight.astype(x.dtype, copy=False)), _into(db_out, dbias.astype(x.dtype, copy=False))
# --8<-- [end:batchnorm_backward]


# --8<-- [start:channel_affine]
def channel_affine(x, scale, shift, out=None, relu=False):
    """y[:, c] = x[:, c] * scale_c + shift_c: batch normalisation in evaluation mode, where scale
    and shift fold the running statistics, weight and bias into one multiply-add; then max(y, 0)
    when relu."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = x * scale.reshape(shape) + shift.reshape(shape)
    return _into(out, np.maximum(y, 0) if relu else y)
# --8<-- [end:channel_affine]


def dropout_keep(shape, p, seed, start=0):
    """Which of ``shape``'s elements dropout keeps (bool array): element i (in C order) is kept
    when u_i >= p, with u_i = splitmix64(seed + (start + i + 1) * golden) / 2**64 in [0, 1): a hash
    of the index, so the mask is the same whatever the thread count or the order of computation.
    ``start``: the index of the first element in a larger mask of which this is a part (a
    process's slice of a global batch), so the parts put together are the whole mask."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    index = np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64(start)
    z = np.uint64(seed) + (index + np.uint64(1)) * golden
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return (u >= p).reshape(shape)


def dropout_forward(x, p, seed, channelwise=False, out=None, mask_out=None, offset=0):
    """Inverted dropout: y = x * keep / (1 - p), keep drawn by dropout_keep from seed, per element
    or (channelwise, for (N, C, H, W)) per (n, c) plane. ``offset``: the index of x's first sample
    in the whole batch (x a slice of it): the mask is that slice of the whole batch's mask.
    Returns (y, mask uint8 of keep)."""
    shape = x.shape[:2] if channelwise else x.shape
    units_per_sample = int(np.prod(shape[1:]))
    mask = dropout_keep(shape, p, seed, offset * units_per_sample).astype(np.uint8)
    full = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    scale = x.dtype.type(0.0 if p >= 1 else 1.0 / (1.0 - p))
    return _into(out, x * full * scale), _into(mask_out, mask)


def dropout_backward(dy, mask, p, out=None):
    """dx = dy * keep / (1 - p): the gradient passes where the forward kept the value."""
    full = mask.reshape(mask.shape + (1,) * (dy.ndim - mask.ndim))
    scale = dy.dtype.type(0.0 if p >= 1 else 1.0 / (1.0 - p))
    return _into(out, dy * full * scale)


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, out=None):
    """y[n, c, i, j] = the sum of the (KH, KW) window at (i*sh - ph, j*sw - pw) of the zero-padded
    input, divided by KH * KW (PyTorch's count_include_pad=True)."""
    kh, kw, sh, sw, ph, pw = pool_window(kernel_size, stride, padding)
    N, C, H, W = x.shape
    OH, OW = _output_size(H, kh, sh, ph), _output_size(W, kw, sw, pw)
    xpad = _pad(x, ph, pw)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            y[:, :, i, j] = xpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].sum(axis=(2, 3)) / (kh * kw)
    return _into(out, y)


def avgpool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, out=None):
    """Each output sends dy / (KH * KW) to every position of its window (padding's share is dropped)."""
    kh, kw, sh, sw, ph, pw = pool_window(kernel_size, stride, padding)
    N, C, H, W = (int(s) for s in x_shape)
    _, _, OH, OW = dy.shape
    dxpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    for i in range(OH):
        for j in range(OW):
            dxpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += (dy[:, :, i, j] / (kh * kw))[:, :, None, None]
    return _into(out, dxpad[:, :, ph:ph + H, pw:pw + W].copy())


def activation_forward(x, kind, alpha=0.01, out=None):
    """kind "leaky_relu": x if x > 0 else alpha x;  "elu": x if x > 0 else alpha (e^x - 1);
    "gelu": x Phi(x) (Phi the standard normal CDF);  "gelu_tanh": PyTorch's tanh approximation
    x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if kind == "leaky_relu":
        y = np.where(x > 0, x, alpha * x)
    elif kind == "elu":
        y = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    elif kind == "gelu":
        y = 0.5 * x * (1 + _erf(x / np.sqrt(2.0)))
    elif kind == "gelu_tanh":
        y = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    else:
        raise ValueError(f"kind must be 'leaky_relu', 'elu', 'gelu' or 'gelu_tanh', got {kind!r}")
    return _into(out, y.astype(x.dtype, copy=False))


def activation_backward(dy, x, kind, alpha=0.01, out=None):
    """dy times the derivative at x: 1 or alpha; 1 or alpha e^x; Phi(x) + x phi(x); and the
    derivative of the tanh form. kind "elu_from_output": x is an ELU's output y, the derivative
    1 or y + alpha."""
    if kind == "leaky_relu":
        d = np.where(x > 0, 1.0, alpha)
    elif kind == "elu":
        d = np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))
    elif kind == "elu_from_output":   # x is ELU's output y (alpha > 0): alpha e^x = y + alpha
        d = np.where(x > 0, 1.0, x + alpha)
    elif kind == "gelu":
        d = 0.5 * (1 + _erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    elif kind == "gelu_tanh":
        k = np.sqrt(2 / np.pi)
        t = np.tanh(k * (x + 0.044715 * x ** 3))
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    else:
        raise ValueError(f"kind must be 'leaky_relu', 'elu', 'gelu' or 'gelu_tanh' (or 'elu_from_output'), got {kind!r}")
    return _into(out, (dy * d).astype(dy.dtype, copy=False))


def _erf(x):
    """erf elementwise (NumPy has none): math.erf on each value, exact to double rounding."""
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(x)
