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

from ._args import pair

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "linear_forward",
    "linear_backward",
    "adam_update",
    "sgd_update",
    "softmax_cross_entropy",
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


# --8<-- [start:conv2d_forward]
def conv2d_forward(x, w, b=None, stride=1, padding=0, relu=False, out=None):
    """y[n, o, i, j] = b[o] + sum over c, kh, kw of w[o, c, kh, kw] * xpad[n, c, i*sh + kh, j*sw + kw]"""
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
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
    return _into(out, np.maximum(y, 0) if relu else y)
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
def linear_forward(x, w, b=None, relu=False, out=None):
    """y = x @ w.T + b"""
    y = x @ w.T
    if b is not None:
        y = y + b
    return _into(out, np.maximum(y, 0) if relu else y)
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
