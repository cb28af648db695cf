"""What a careless or unlucky caller does to a model: non-finite or ill-typed weights, labels that
wrap, two threads training one model, an update that overflows. Each is refused with a clear
error before it changes anything (or, for the overflow, said as it is)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import maqueta as mq


def small_model(dtype="float32"):
    return mq.Sequential([mq.Dense(4, 3)], seed=0, dtype=dtype)


@pytest.mark.parametrize("value,error,message", [
    (np.full((3, 4), 1e39), ValueError, "NaN or Inf once converted to float32"),   # finite in float64 only
    (np.ones((3, 4), bool), TypeError, "not bool"),
    (np.full((3, 4), np.nan), ValueError, "NaN or Inf"),
    (np.array([["a"] * 4] * 3), TypeError, "dtype <U1"),
])
def test_weights_that_would_change_meaning_are_refused_everywhere(value, error, message):
    model = small_model()
    before = model.get_flat_parameters().copy()
    state = dict(model.state_dict(), **{"0.weight": value})
    with pytest.raises(error, match=message):
        model.load_state_dict(state)
    with pytest.raises(error, match=message):
        model.layers[0].weight = value
    flat = np.concatenate([np.broadcast_to(value, (3, 4)).ravel(), np.zeros(3)]) if value.dtype.kind != "U" else None
    if flat is not None:
        with pytest.raises(error):
            model.set_flat_parameters(flat.astype(value.dtype))
    np.testing.assert_array_equal(model.get_flat_parameters(), before)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=15, max_size=15))
def test_set_flat_parameters_takes_finite_float32_values_only(values):
    model = small_model()
    values = np.array(values)
    with np.errstate(over="ignore"):
        fits = np.isfinite(values.astype(np.float32)).all()
    if fits:
        model.set_flat_parameters(values)
        np.testing.assert_array_equal(model.get_flat_parameters(), values.astype(np.float32))
    else:
        before = model.get_flat_parameters().copy()
        with pytest.raises(ValueError, match="NaN or Inf"):
            model.set_flat_parameters(values)
        np.testing.assert_array_equal(model.get_flat_parameters(), before)


@pytest.mark.parametrize("labels", [np.array([1e19, 0.0, 1.0]), np.array([-1e19, 0.0, 1.0])])
def test_float_labels_beyond_int64_are_refused(labels):
    model = small_model()
    with pytest.raises(ValueError, match="beyond the range of 64-bit integers"):
        model.fit(np.ones((3, 4), np.float32), labels, verbose=0)
    assert model.classes_ is None


def test_two_threads_cannot_train_one_model_at_once():
    model = small_model()
    X, y = np.ones((64, 4), np.float32), np.arange(64) % 3
    inside, release = threading.Event(), threading.Event()

    class Pause(mq.Callback):
        def on_batch_end(self, batch, logs=None):
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=model.fit, args=(X, y), kwargs={"epochs": 1, "batch_size": 64, "verbose": 0,
                                                                      "callbacks": [Pause()]})
    worker.start()
    try:
        assert inside.wait(10)
        with pytest.raises(RuntimeError, match="already training"):
            model.fit(X, y, verbose=0)
        with pytest.raises(RuntimeError, match="already training"):
            model.train_on_batch(X, y)
        model.predict(X)   # inference from another thread stays allowed
    finally:
        release.set()
        worker.join()
    model.fit(X, y, epochs=1, verbose=0)   # free again


def test_an_overflowing_update_is_reported_as_such():
    model = small_model()
    X, y = np.full((8, 4), 1e10, np.float32), np.arange(8) % 3   # finite loss and gradients, huge steps
    with pytest.raises(FloatingPointError, match="the update overflowed, so the weights now hold NaN or Inf"):
        model.fit(X, y, optimizer=mq.SGD(1e30), verbose=0, epochs=3)
