"""The same model trains the same under the native kernels and the NumPy oracle."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import maqueta as mq


def test_native_and_reference_train_identically():
    rng = np.random.default_rng(0)
    X = rng.random((24, 1, 32, 32))
    y = rng.integers(0, 10, 24)
    results = {}
    for backend in ("native", "reference"):
        model = mq.models.lenet5(dtype="float64", seed=4)
        with mq.use_backend(backend):
            history = model.fit(X, y, epochs=3, batch_size=8, optimizer=mq.Adam(1e-2), verbose=0)
        results[backend] = (history.history["loss"], model.get_flat_parameters().copy())
    np.testing.assert_allclose(results["native"][0], results["reference"][0], rtol=1e-12)
    native, ref = results["native"][1], results["reference"][1]
    assert np.abs(native - ref).max() <= 1e-10 * np.abs(ref).max()


def test_backend_selection():
    assert mq.get_backend() == "native"
    with mq.use_backend("reference"):
        assert mq.get_backend() == "reference"
        seen = []
        t = threading.Thread(target=lambda: seen.append(mq.get_backend()))
        t.start()
        t.join()
        assert seen == ["native"]   # the override is for this thread only
    assert mq.get_backend() == "native"
    mq.set_backend("reference")
    try:
        assert mq.get_backend() == "reference"
    finally:
        mq.set_backend("native")
    with pytest.raises(ValueError, match="backend must be one of"):
        mq.set_backend("cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        with mq.use_backend("gpu"):
            pass
