"""Which implementation of the kernels the layers call: the fast compiled core ("native"), its
plain C++ loops ("plain", :mod:`maqueta.plain`) or the NumPy oracle ("reference").

``set_backend`` changes the process-wide default; ``use_backend`` is a context manager that
overrides it for the current thread only, so a test or a comparison can run one model on the
reference kernels while other threads keep the native ones.
"""
from __future__ import annotations

import contextlib
import threading

from . import ops, plain, reference

__all__ = ["set_backend", "get_backend", "use_backend", "kernels"]

_BACKENDS = {"native": ops, "plain": plain, "reference": reference}
_default = "native"
_local = threading.local()
_overrides = 0          # threads inside use_backend: while 0, the default applies everywhere
_lock = threading.Lock()


def _check(name):
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {sorted(_BACKENDS)}, got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Route every layer's kernels through "native" (fast C++, the default), "plain" (C++ loops in
    the order of the math) or "reference" (NumPy)."""
    global _default
    _default = _check(name)


def get_backend() -> str:
    """The backend in effect for the calling thread."""
    return getattr(_local, "name", None) or _default


@contextlib.contextmanager
def use_backend(name: str):
    """Use backend ``name`` inside a ``with`` block, in this thread only."""
    global _overrides
    _check(name)
    previous = getattr(_local, "name", None)
    _local.name = name
    with _lock:
        _overrides += 1
    try:
        yield
    finally:
        _local.name = previous
        with _lock:
            _overrides -= 1


def kernels():
    """The module of kernel functions for the calling thread's backend."""
    if not _overrides:   # every layer asks, every step: skip the thread-local lookup when possible
        return _BACKENDS[_default]
    return _BACKENDS[get_backend()]
