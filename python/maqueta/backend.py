"""Which implementation of the kernels the layers call: the compiled core or the NumPy oracle.

``set_backend`` changes the process-wide default; ``use_backend`` is a context manager that
overrides it for the current thread only, so a test or a comparison can run one model on the
reference kernels while other threads keep the native ones.
"""
from __future__ import annotations

import contextlib
import threading

from . import ops, reference

__all__ = ["set_backend", "get_backend", "use_backend", "kernels"]

_BACKENDS = {"native": ops, "reference": reference}
_default = "native"
_local = threading.local()


def _check(name):
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {sorted(_BACKENDS)}, got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Route every layer's kernels through "native" (C++, the default) or "reference" (NumPy)."""
    global _default
    _default = _check(name)


def get_backend() -> str:
    """The backend in effect for the calling thread."""
    return getattr(_local, "name", None) or _default


@contextlib.contextmanager
def use_backend(name: str):
    """Use backend ``name`` inside a ``with`` block, in this thread only."""
    _check(name)
    previous = getattr(_local, "name", None)
    _local.name = name
    try:
        yield
    finally:
        _local.name = previous


def kernels():
    """The module of kernel functions for the calling thread's backend."""
    return _BACKENDS[get_backend()]
