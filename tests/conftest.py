"""Shared fixtures: thread counts, instruction sets, convolution algorithms, tolerances; and how
the example scripts' tests run them."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import maqueta
from maqueta import _core

# Relative tolerances against the NumPy oracle, measured on the largest magnitude of the expected
# result: float64 agrees to rounding (~1e-15); float32 sums of a few hundred products to ~1e-6.
RTOL = {np.float64: 1e-10, np.float32: 1e-4}


def assert_close(actual, expected, dtype=None, rtol=None, what="", scale=0.0):
    """Assert actual matches expected to the tolerance of dtype, relative to expected's scale
    (or to `scale` when larger: for values that cancel towards zero, the scale of their terms)."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    dtype = np.dtype(dtype or expected.dtype).type
    rtol = RTOL[dtype] if rtol is None else rtol
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, scale, 1e-30)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if expected.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs error {err:.3e} exceeds {rtol:g} x scale {scale:.3e}"


@pytest.fixture(params=[1, 3], ids=lambda n: f"threads{n}")
def threads(request):
    """Run the test at 1 thread and at several (3 splits batches unevenly on purpose)."""
    before = maqueta.get_num_threads()
    maqueta.set_num_threads(request.param)
    yield request.param
    maqueta.set_num_threads(before)


@pytest.fixture(params=_core.available_isas())
def each_isa(request):
    """Run the test with each instruction set this CPU and build offer."""
    before = _core.isa()
    _core._set_isa(request.param)
    yield request.param
    _core._set_isa(before)


@contextlib.contextmanager
def forced_conv_algo(name):
    """Convolutions inside use algorithm name ('auto' chooses by shape); the choice before returns after."""
    before = _core._get_conv_algo()
    _core._set_conv_algo(name)
    try:
        yield name
    finally:
        _core._set_conv_algo(before)


@pytest.fixture(params=["direct", "im2col", "pixel", "winograd"])
def each_conv_algo(request):
    """Force each convolution algorithm (direct only applies to stride 1, Winograd to 3x3 stride 1;
    others fall back; pixel-major is forced for any number of filters, though auto picks it only
    when they fill whole vectors, and Winograd for any channel count and size)."""
    with forced_conv_algo(request.param):
        yield request.param


@pytest.fixture(scope="module")
def digits():
    """1,200 of scikit-learn's real handwritten digits as float32 (N, 1, 32, 32), and labels."""
    from digits import real_digits
    X, y, _ = real_digits(1200)
    return X.astype(np.float32), y


def small_data(n=40, seed=0):
    """n random images (N, 1, 32, 32) in [0, 1) and labels 0..9."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)


# ---- the example scripts (examples/*.py), run as a new user would, offline
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def offline_env(tmp_path, **extra):
    """The environment of a fresh user with no network: an empty HOME, downloads off."""
    env = dict(os.environ)
    env.pop("MAQUETA_DATA", None)
    env.update(HOME=str(tmp_path / "home"), MAQUETA_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


@contextlib.contextmanager
def example_module(name):
    """examples/<name>.py imported as a module (to call its functions directly)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))
