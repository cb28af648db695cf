"""What a model accepts as data: input arrays checked against its layers, and class labels mapped
to the indices 0..K-1 of its outputs through the sorted labels it keeps in ``classes_``."""
from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["check_input", "classes_for", "encode_labels"]

CHUNK = 4096  # samples per chunk when scanning or predicting, to bound temporary memory


def check_input(model, X, name="X", finite=True):
    """X as a C-contiguous array of the model's dtype, its shape checked against the layers."""
    if isinstance(X, (str, bytes)) or X is None:
        raise TypeError(f"{name} must be an array of samples, got {type(X).__name__}")
    try:
        array = np.asarray(X)
    except Exception as error:  # e.g. ragged nested lists
        raise TypeError(f"{name} could not be read as an array: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.ndim < 2:
        raise ValueError(f"{name} must have a batch dimension first, got shape {array.shape}; "
                         f"for a single sample use {name}[None]")
    if array.shape[0] == 0:
        raise ValueError(f"{name} holds no samples: shape {array.shape}")
    try:
        model.layer_shapes(array.shape[1:])
    except ValueError as error:
        raise ValueError(f"{name} has shape {array.shape}: {error}") from None
    array = np.ascontiguousarray(array, dtype=model.dtype)
    if finite and not _core.all_finite(array):   # one native pass; NumPy only to find the culprit
        for start in range(0, len(array), CHUNK):
            chunk = array[start:start + CHUNK]
            if not np.isfinite(chunk).all():
                bad = start + int(np.argmax(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)))
                raise ValueError(f"{name} contains NaN or Inf (first in sample {bad})")
    return array


def _as_labels(y, n):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of class labels, got shape {y.shape}"
                         + ("; for one-hot targets pass y.argmax(axis=1)" if y.ndim == 2 else ""))
    if len(y) != n:
        raise ValueError(f"X has {n} samples but y has {len(y)} labels")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise ValueError("y must hold class labels (integers); it holds non-integer or non-finite values")
        if np.any(np.abs(y) >= 2.0**63):   # would wrap around in int64
            raise ValueError("y holds labels beyond the range of 64-bit integers")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise TypeError(f"y must hold integer (or string) class labels, got dtype {y.dtype}")
    return y


def classes_for(y, units):
    """The sorted class labels a fresh model learns from y: 0..K-1 when y holds such ints."""
    classes = np.unique(y)
    if y.dtype.kind in "biu" and classes[0] >= 0 and classes[-1] < units:
        return np.arange(units, dtype=np.int64)
    if len(classes) != units:
        shown = ", ".join(map(str, classes[:12].tolist())) + (", ..." if len(classes) > 12 else "")
        raise ValueError(f"y has {len(classes)} distinct labels ({shown}) but the model's last layer has "
                         f"{units} outputs: labels must be 0..{units - 1}, or exactly {units} distinct values")
    return classes


def encode_labels(model, y, n, input_shape, classes=None):
    """(class indices in [0, K) for labels y, the classes they were mapped through). The classes
    are ``classes`` when given, else the model's, else (a model that has none yet) those y
    implies; the caller decides whether to keep them, so that a refused call changes nothing."""
    y = _as_labels(y, n)
    units = model.output_units(input_shape)
    classes = model.classes_ if classes is None else classes
    if classes is None:
        classes = classes_for(y, units)
    at = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    unknown = classes[at] != y
    if unknown.any():
        first = int(np.argmax(unknown))
        raise ValueError(f"y holds labels outside the model's classes {classes[:12].tolist()}"
                         f"{' ...' if len(classes) > 12 else ''}: e.g. {y[first].item()!r} at position {first}")
    return at.astype(np.intp), classes
