"""The same model trains the same under the native kernels, the plain C++ loops and the NumPy oracle."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import maqueta as mq


def train_lenet5(backend, dtype, X, y, epochs=3):
    model = mq.models.lenet5(dtype=dtype, seed=4)
    with mq.use_backend(backend):
        history = model.fit(X, y, epochs=epochs, batch_size=8, optimizer=mq.Adam(1e-2), verbose=0)
    return history.history["loss"], model.get_flat_parameters().copy()


@pytest.fixture(scope="module")
def trained():
    """LeNet-5 trained for 3 epochs of 24 random images in float64 on each backend."""
    rng = np.random.default_rng(0)
    X = rng.random((24, 1, 32, 32))
    y = rng.integers(0, 10, 24)
    return {backend: train_lenet5(backend, "float64", X, y) for backend in ("native", "plain", "reference")}


@pytest.mark.parametrize("backend,other", [("native", "reference"), ("plain", "reference"), ("plain", "native")])
def test_lenet5_trains_identically(trained, backend, other):
    (loss, params), (loss_other, params_other) = trained[backend], trained[other]
    np.testing.assert_allclose(loss, loss_other, rtol=1e-12)
    assert np.abs(params - params_other).max() <= 1e-10 * np.abs(params_other).max()


def test_lenet5_trains_on_plain_in_float32():
    """float32: plain and native sum in other orders, so they agree to rounding, not bit for bit;
    the plain model learns (its loss falls) and stays within float32 noise of the native one."""
    rng = np.random.default_rng(1)
    X = rng.random((32, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    loss_plain, params_plain = train_lenet5("plain", "float32", X, y, epochs=4)
    loss_native, params_native = train_lenet5("native", "float32", X, y, epochs=4)
    assert loss_plain[-1] < loss_plain[0]
    np.testing.assert_allclose(loss_plain, loss_native, rtol=1e-4)
    assert np.abs(params_plain - params_native).max() <= 1e-3 * np.abs(params_native).max()


def all_layers_model(dtype="float64"):
    """Every layer the plain tier's later kernels run (batch norm, both dropouts, both average
    poolings, LeakyReLU, ELU, both GELUs) between convolutions, pooling and dense layers."""
    return mq.Sequential([
        mq.Conv2D(2, 4, 3, padding=1, bias=False), mq.BatchNorm2D(4), mq.LeakyReLU(0.1),
        mq.Dropout2D(0.25), mq.AvgPool2D(2),
        mq.Conv2D(4, 6, 3, padding=1), mq.ELU(), mq.AvgPool2D(3, stride=1, padding=1),
        mq.GELU(), mq.Dropout(0.2), mq.MaxPool2D(2), mq.GlobalAvgPool2D(),
        mq.Dense(6, 8, bias=False), mq.BatchNorm1D(8), mq.GELU("tanh"), mq.Dense(8, 3),
    ], seed=5, dtype=dtype, input_shape=(2, 8, 8))


def test_model_with_every_layer_trains_alike_on_plain_and_native():
    """float64, RMSprop (centered, with momentum): the same losses, weights and evaluation-mode
    predictions (batch norm's running statistics) on the plain loops as on the fast kernels."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((24, 2, 8, 8))
    y = (X[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 1].mean(axis=(1, 2)) > 0)   # learnable
    runs = {}
    for backend in ("plain", "native"):
        model = all_layers_model()
        with mq.use_backend(backend):
            loss = model.fit(X, y, epochs=3, batch_size=8, optimizer=mq.RMSprop(1e-2, momentum=0.5, centered=True),
                             verbose=0).history["loss"]
            runs[backend] = loss, model.get_flat_parameters().copy(), model.predict_proba(X)   # evaluation mode too
    (loss, params, proba), (loss_fast, params_fast, proba_fast) = runs["plain"], runs["native"]
    assert loss[-1] < loss[0]
    np.testing.assert_allclose(loss, loss_fast, rtol=1e-10)
    assert np.abs(params - params_fast).max() <= 1e-10 * np.abs(params_fast).max()
    assert np.abs(proba - proba_fast).max() <= 1e-10


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
    with mq.use_backend("plain"):
        assert mq.get_backend() == "plain" and mq.backend.kernels() is mq.plain
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
