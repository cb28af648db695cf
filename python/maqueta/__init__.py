"""maqueta: train small convolutional networks on CPUs, fast, with kernels you can read.

    import maqueta as mq
    model = mq.models.lenet5()
    model.fit(X, y, epochs=10, optimizer=mq.Adam(1e-3))
    model.save("lenet5.maq");  model = mq.load("lenet5.maq")
"""
from __future__ import annotations

import numbers

from . import _core, ops, plain, reference
from . import augment, callbacks, losses, models, schedules
from .backend import get_backend, set_backend, use_backend
from .callbacks import (CSVLogger, Callback, EarlyStopping, History, LearningRateScheduler, ModelCheckpoint,
                        ReduceLROnPlateau, TerminateOnNaN)
from .io import ModelFileError
from .layers import *  # noqa: F401,F403  (every layer class, and Layer)
from .layers import __all__ as _layer_names
from .model import Sequential, load
from .optim import SGD, Adam, AdamW, Optimizer, RMSprop

__version__ = _core._build_info["version"]

__all__ = [
    "__version__", "ops", "plain", "reference", "losses", "models", "callbacks", "augment", "schedules", "datasets",
    "onnx",
    "Sequential", *[name for name in _layer_names if name not in ("Call", "LAYERS")],
    "Optimizer", "Adam", "AdamW", "SGD", "RMSprop", "Callback", "History", "EarlyStopping", "LearningRateScheduler",
    "ReduceLROnPlateau", "ModelCheckpoint", "CSVLogger", "TerminateOnNaN",
    "load", "ModelFileError", "set_backend", "get_backend", "use_backend",
    "build_info", "openmp_enabled", "get_num_threads", "set_num_threads",
]


# Submodules imported on first use, so that `import maqueta` stays fast (datasets pulls in urllib,
# gzip and hashlib; onnx, the optional onnx package) and yet `mq.datasets.load_mnist(...)` and
# `mq.onnx.export(...)` work without importing them by hand.
_LAZY_SUBMODULES = ("datasets", "onnx")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f".{name}", __name__)   # also sets it as an attribute here
    raise AttributeError(f"module 'maqueta' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


def openmp_enabled() -> bool:
    """Whether this build runs its kernels in parallel with OpenMP (else on one thread)."""
    return _core.openmp_enabled()


def get_num_threads() -> int:
    """Threads the kernels use: OMP_NUM_THREADS at import when set, else every core available."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads every kernel uses: n >= 1, at most 4 per available processor (more is
    capped). Raises RuntimeError, keeping the current count, when the system refuses to start that
    many threads (a thread or memory limit). A build without OpenMP always uses one."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads needs an int, got {n!r}")
    _core.set_num_threads(int(n))


def build_info() -> dict:
    """How this copy of maqueta was built and what it runs on: version, compiler, OpenMP, the
    instruction set its micro-kernels use and those available, and the thread count."""
    info = dict(_core._build_info)
    info["isa"] = _core.isa()
    info["available_isas"] = _core.available_isas()
    info["num_threads"] = _core.get_num_threads()
    return info
