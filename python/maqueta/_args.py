"""Normalisation of the int-or-pair arguments shared by the native ops and the reference."""
from __future__ import annotations

import operator

__all__ = ["pair"]


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """Return ``value`` as a pair of ints >= ``minimum``; an int stands for (value, value)."""
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int \
            and value[0] >= minimum and value[1] >= minimum:
        return value   # already normalised (layers keep theirs so): the common case, kept cheap
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        items = value
    else:
        items = (value, value)
    out = []
    for item in items:
        if isinstance(item, bool):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        try:
            number = operator.index(item)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        out.append(number)
    return out[0], out[1]


def pool_window(kernel_size, stride=None, padding=0) -> tuple[int, int, int, int, int, int]:
    """(kh, kw, sh, sw, ph, pw) of a pooling window; the stride defaults to the kernel size."""
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    return kh, kw, sh, sw, ph, pw
