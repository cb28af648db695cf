"""maqueta: train small convolutional networks on CPUs, fast, with kernels you can read."""
from __future__ import annotations

from . import _core, ops, reference

__version__ = _core._build_info["version"]

__all__ = [
    "__version__",
    "ops",
    "reference",
    "build_info",
    "openmp_enabled",
    "get_num_threads",
    "set_num_threads",
]


def openmp_enabled() -> bool:
    """Whether this build runs its kernels in parallel with OpenMP (else on one thread)."""
    return _core.openmp_enabled()


def get_num_threads() -> int:
    """Threads the kernels use: OMP_NUM_THREADS at import when set, else every core available."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads every kernel uses (n >= 1). A build without OpenMP always uses one."""
    if isinstance(n, bool) or not isinstance(n, int):
        import numbers
        if not isinstance(n, numbers.Integral) or isinstance(n, bool):
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
