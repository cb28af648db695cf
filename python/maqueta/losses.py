"""Losses on a batch of model outputs: each returns (mean loss, gradient with respect to the outputs).

``cross_entropy`` takes logits (it applies softmax itself, in a numerically stable way, exactly as
``torch.nn.CrossEntropyLoss``): never put a Softmax layer before it. ``mse`` is the squared error of
the outputs against one-hot targets, averaged over every element as ``torch.nn.MSELoss``; the
original notebook's cost, sum of squares over 2N, is (K/2) times it for K outputs.
"""
from __future__ import annotations

import numpy as np

from .backend import kernels

__all__ = ["softmax", "cross_entropy", "CrossEntropy", "mse", "get"]


def softmax(logits):
    """Probabilities from logits, ndarray (N, K) -> (N, K), rows summing to 1."""
    with np.errstate(invalid="ignore"):
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits, targets):
    """Mean over the batch of -log softmax(logits)[n, targets[n]].

    logits: ndarray (N, K); targets: int ndarray (N,) of class indices in [0, K).
    Returns (loss, dlogits) with dlogits = (softmax(logits) - onehot(targets)) / N, computed by the
    current backend's softmax_cross_entropy kernel.
    """
    return kernels().softmax_cross_entropy(logits, targets)


class CrossEntropy:
    """Cross-entropy on logits with PyTorch's options, as ``torch.nn.CrossEntropyLoss(weight=,
    label_smoothing=)``: the target of sample n is (1 - label_smoothing) onehot(t_n) +
    label_smoothing / K, class k's terms are weighted by class_weights[k], and the mean divides
    by the sum of the weights of the samples' classes. ``CrossEntropy()`` is ``cross_entropy``."""

    def __init__(self, label_smoothing=0.0, class_weights=None):
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)) \
                or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.class_weights = None
        if class_weights is not None:
            weights = np.asarray(class_weights, dtype=np.float64)
            if weights.ndim != 1 or weights.size == 0 or not np.isfinite(weights).all() or (weights < 0).any() \
                    or weights.sum() == 0:
                raise ValueError(f"class_weights must be a 1-D array of finite non-negative numbers, not all 0, "
                                 f"got {class_weights!r}")
            self.class_weights = weights

    def __repr__(self):
        weights = None if self.class_weights is None else self.class_weights.tolist()
        return f"CrossEntropy(label_smoothing={self.label_smoothing}, class_weights={weights})"

    def check_outputs(self, units):
        """Raise unless this loss fits a model with ``units`` outputs (asked before training starts)."""
        if self.class_weights is not None and len(self.class_weights) != units:
            raise ValueError(f"class_weights has {len(self.class_weights)} entries but the model has {units} outputs")

    def __call__(self, logits, targets):
        if self.label_smoothing == 0 and self.class_weights is None:
            return cross_entropy(logits, targets)
        n, k = logits.shape
        self.check_outputs(k)
        weights = np.ones(k) if self.class_weights is None else self.class_weights
        rows = np.arange(n)
        z = logits.astype(np.float64)
        with np.errstate(invalid="ignore"):   # inf logits give NaN, which training reports itself
            shifted = z - z.max(axis=1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        p = np.exp(log_p)
        eps = self.label_smoothing
        w_t = weights[targets]
        total = w_t.sum()
        if total == 0:
            raise ValueError("every sample of the batch belongs to a class of weight 0: the mean loss is undefined")
        loss = ((1 - eps) * -(w_t * log_p[rows, targets]).sum() + eps * -(log_p * weights).sum() / k) / total
        # d/dz of -w_t log p_t is w_t (p - onehot); of -sum_j w_j log p_j / K it is (p sum_j w_j - w) / K
        grad = (1 - eps) * w_t[:, None] * p
        grad[rows, targets] -= (1 - eps) * w_t
        grad += eps * (p * weights.sum() - weights) / k
        return float(loss), (grad / total).astype(logits.dtype)


def mse(outputs, targets):
    """Mean over all N*K elements of (outputs - onehot(targets))^2; gradient 2 (outputs - onehot) / (N*K)."""
    onehot = np.zeros_like(outputs)
    onehot[np.arange(outputs.shape[0]), targets] = 1
    diff = outputs - onehot
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.mean(diff * diff)), diff * (2.0 / diff.size)


_LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def get(name):
    """The loss function called ``name`` ("cross_entropy" or "mse")."""
    if callable(name):
        return name
    if name not in _LOSSES:
        raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {name!r}")
    return _LOSSES[name]
