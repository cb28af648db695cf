"""What a model accepts as data: input shapes and values, labels and the classes they map through."""
from __future__ import annotations


import numpy as np
import pytest

import maqueta as mq
from conftest import small_data


def test_any_integer_labels_map_through_sorted_classes():
    rng = np.random.default_rng(0)
    X = rng.random((30, 4)).astype(np.float32)
    y = rng.choice([-5, 7, 100], 30)
    model = mq.Sequential([mq.Dense(4, 3)])
    model.fit(X, y, epochs=5, verbose=0, optimizer=mq.Adam(0.05))
    np.testing.assert_array_equal(model.classes_, [-5, 7, 100])
    assert set(model.predict(X)) <= {-5, 7, 100}
    assert model.predict_proba(X).shape == (30, 3)


def test_labels_within_outputs_keep_their_meaning():
    X, y = small_data(10)
    model = mq.models.lenet5()
    model.fit(X, np.full(10, 3), verbose=0)
    np.testing.assert_array_equal(model.classes_, np.arange(10))


def test_wrong_input_shape_names_layer_and_shapes():
    model = mq.models.lenet5()
    with pytest.raises(ValueError) as info:
        model.predict(np.zeros((4, 3, 32, 32), np.float32))
    message = str(info.value)
    assert "(4, 3, 32, 32)" in message and "layer 0" in message and "Conv2D(1, 6, kernel_size=5)" in message
    assert "(N, 1, H, W)" in message
    with pytest.raises(ValueError, match=r"X has shape \(4, 1, 28, 28\).*layer 7 \(Dense\(400, 120\)\) expects 400 "
                                         r"input features, but receives 256"):
        model.predict(np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"X has shape \(1, 32, 32\): layer 0 .* but receives \(N, 32, 32\)"):
        model.predict(np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="batch dimension"):
        mq.Sequential([mq.Dense(3, 2)]).predict(np.zeros(3))


def test_label_errors():
    X, y = small_data(10)
    model = mq.models.lenet5()
    with pytest.raises(ValueError, match="X has 10 samples but y has 9 labels"):
        model.fit(X, y[:9], verbose=0)
    with pytest.raises(ValueError, match="y has 11 distinct labels .* but the model's last layer has 10 outputs"):
        model.fit(np.concatenate([X, X[:1]]), np.arange(11) * 3, verbose=0)
    with pytest.raises(ValueError, match="one-hot"):
        model.fit(X, np.eye(10)[y], verbose=0)
    with pytest.raises(ValueError, match="non-integer"):
        model.fit(X, y + 0.5, verbose=0)
    model.fit(X, y, verbose=0)
    with pytest.raises(ValueError, match=r"y holds labels outside the model's classes .*: e.g. 12 at position 3"):
        model.evaluate(X, np.where(np.arange(10) == 3, 12, y))
    mapped = mq.Sequential([mq.Dense(4, 3)])
    mapped.fit(np.ones((3, 4)), [10, 20, 30], verbose=0)
    with pytest.raises(ValueError, match="e.g. 25"):
        mapped.evaluate(np.ones((2, 4)), [10, 25])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_rejected(bad):
    X, y = small_data(10)
    X[6, 0, 3, 4] = bad
    model = mq.models.lenet5()
    for call in (lambda: model.fit(X, y, verbose=0), lambda: model.predict(X), lambda: model.evaluate(X, y)):
        with pytest.raises(ValueError, match="contains NaN or Inf .first in sample 6"):
            call()


def test_second_input_size_is_refused_before_any_kernel():
    model = mq.Sequential([mq.Conv2D(1, 2, 3), mq.ReLU(), mq.MaxPool2D(2)])
    model(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"takes samples of shape \(N, 1, 8, 8\), got \(N, 1, 10, 10\)"):
        model(np.zeros((2, 1, 10, 10), np.float32))
