"""Losses on a batch of model outputs: each returns (mean loss, gradient with respect to the outputs).

``cross_entropy`` takes logits (it applies softmax itself, in a numerically stable way, exactly as
``torch.nn.CrossEntropyLoss``): never put a Softmax layer before it. ``mse`` is the squared error of
the outputs against one-hot targets, averaged over every element as ``torch.nn.MSELoss``; the
original notebook's cost, sum of squares over 2N, is (K/2) times it for K outputs.
"""
from __future__ import annotations

import numpy as np

from .backend import kernels

__all__ = ["softmax", "cross_entropy", "mse", "get"]


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
