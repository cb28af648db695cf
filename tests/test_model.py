"""The Sequential API: construction, prediction, parameters and state_dict, errors, threads."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import maqueta as mq
from conftest import small_data


def test_default_initialisation_matches_pytorch_distribution():
    model = mq.models.lenet5(seed=0)
    for layer in (model.layers[0], model.layers[3], model.layers[7], model.layers[9], model.layers[11]):
        fan_in = int(np.prod(layer.weight.shape[1:]))
        bound = 1 / math.sqrt(fan_in)
        for values in (layer.weight, layer.bias):
            assert values.dtype == np.float32
            assert np.abs(values).max() <= bound
    w = model.layers[7].weight   # 48,000 draws of U(-1/20, 1/20)
    assert abs(w.mean()) < 1e-3
    assert w.var() == pytest.approx((1 / 20) ** 2 / 3, rel=0.03)
    assert np.abs(w).max() > 0.99 / 20


def test_seed_decides_the_weights():
    a, b, c = mq.models.lenet5(seed=3), mq.models.lenet5(seed=3), mq.models.lenet5(seed=4)
    np.testing.assert_array_equal(a.get_flat_parameters(), b.get_flat_parameters())
    assert not np.array_equal(a.get_flat_parameters(), c.get_flat_parameters())


def test_weights_are_writable_views():
    model = mq.models.lenet5()
    conv = model.layers[0]
    assert conv.weight.shape == (6, 1, 5, 5) and model.layers[7].weight.shape == (120, 400)
    conv.weight[0, 0, 0, 0] = 7.0
    conv.bias = np.arange(6)
    assert model.state_dict()["0.weight"][0, 0, 0, 0] == 7.0
    np.testing.assert_array_equal(model.state_dict()["0.bias"], np.arange(6))
    with pytest.raises(ValueError, match=r"weight of layer 0 .* must have shape \(6, 1, 5, 5\)"):
        conv.weight = np.zeros((6, 5, 5))


def test_summary(capsys):
    mq.models.lenet5().summary()
    out = capsys.readouterr().out
    assert "Total parameters: 61,706" in out
    assert "(N, 6, 28, 28)" in out and "(N, 16, 5, 5)" in out and "48,120" in out


def test_float64_model():
    model = mq.models.lenet5(dtype="float64")
    X, y = small_data(8)
    assert model(X).dtype == np.float64
    model.fit(X, y, verbose=0)
    assert model.get_flat_parameters().dtype == np.float64


def test_predict_proba_rows_sum_to_one():
    X, _ = small_data(7)
    p = mq.models.lenet5().predict_proba(X, batch_size=3)
    assert p.shape == (7, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)


def test_dense_mismatch_reported_at_construction():
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(100, 10\)\) expects 100 input features, but receives 4704"):
        mq.Sequential([mq.Conv2D(1, 6, 5), mq.Flatten(), mq.Dense(100, 10)], input_shape=(1, 32, 32))
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(3, 2\)\) expects 3 input features, but receives 5"):
        mq.Sequential([mq.Dense(4, 5), mq.Dense(3, 2)])
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2D\(3, 4, kernel_size=3\)\) expects input of shape \(N, 3, H, W\)"):
        mq.Sequential([mq.Conv2D(1, 6, 3), mq.ReLU(), mq.Conv2D(3, 4, 3)])


def test_dense_mismatch_reported_at_first_call():
    model = mq.Sequential([mq.Flatten(), mq.Dense(100, 10)])
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(100, 10\)\) expects 100 input features, but receives 64"):
        model(np.zeros((2, 1, 8, 8)))


def test_failed_construction_frees_the_layers():
    dense = mq.Dense(100, 10)
    with pytest.raises(ValueError):
        mq.Sequential([mq.Flatten(), dense], input_shape=(1, 8, 8))
    mq.Sequential([mq.Flatten(), dense], input_shape=(1, 10, 10))   # reusable after the failure
    with pytest.raises(ValueError, match="already belongs to another model"):
        mq.Sequential([dense])


def test_argument_errors():
    X, y = small_data(10)
    model = mq.models.lenet5()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.fit(X, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="epochs must be an int >= 0"):
        model.fit(X, y, epochs=-1, verbose=0)
    with pytest.raises(ValueError, match="validation_split must be in"):
        model.fit(X, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        model.fit(X, y, loss="hinge", verbose=0)
    with pytest.raises(TypeError, match="optimizer must be a maqueta optimizer"):
        model.fit(X, y, optimizer="adam", verbose=0)
    with pytest.raises(TypeError, match="must hold numbers"):
        model.predict(np.array([["a"]]))
    with pytest.raises(ValueError, match="dtype must be"):
        mq.Sequential([mq.ReLU()], dtype="int32")
    with pytest.raises(TypeError, match="not a maqueta layer"):
        mq.Sequential([mq.ReLU(), "relu"])
    with pytest.raises(ValueError, match="remove the final Softmax"):
        mq.Sequential([mq.Dense(3, 2), mq.Softmax()]).fit(np.ones((2, 3)), [0, 1], verbose=0)
    with pytest.raises(ValueError, match=r"betas must be"):
        mq.Adam(betas=0.9)
    with pytest.raises(ValueError, match=r"lr must be in"):
        mq.SGD(lr=-1)


def test_load_state_dict_is_all_or_nothing():
    model = mq.models.lenet5()
    good = model.state_dict()
    before = model.get_flat_parameters().copy()
    bad = dict(good)
    bad["11.bias"] = np.zeros(9)
    with pytest.raises(ValueError, match=r"state_dict\['11.bias'\] has shape \(9,\)"):
        model.load_state_dict({k: v + 1 for k, v in bad.items()})
    with pytest.raises(ValueError, match=r"missing keys \['0.weight'\], unexpected keys \['conv.weight'\]"):
        model.load_state_dict({("conv.weight" if k == "0.weight" else k): v for k, v in good.items()})
    nan = dict(good)
    nan["3.weight"] = np.full_like(good["3.weight"], np.nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.load_state_dict(nan)
    np.testing.assert_array_equal(model.get_flat_parameters(), before)


def test_predict_is_thread_safe():
    X, y = small_data(96, seed=3)
    model = mq.models.lenet5(seed=2)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    chunks = [X[i::6] for i in range(6)]
    # the same batch size as the threads use: sizes of a lane block or more sum in another order
    expected = [model.predict_proba(c, batch_size=5 + i) for i, c in enumerate(chunks)]
    results = [[] for _ in chunks]

    def work(i):
        for _ in range(15):
            results[i].append(model.predict_proba(chunks[i], batch_size=5 + i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(expected, results):
        assert len(got) == 15
        for g in got:
            np.testing.assert_array_equal(g, want)


def test_inference_keeps_no_state_on_layers():
    X, y = small_data(16)
    model = mq.models.lenet5()
    before = [dict(vars(layer)) for layer in model.layers]
    model.predict(X)
    model.fit(X, y, verbose=0)
    for layer, attrs in zip(model.layers, before):
        assert set(vars(layer)) == set(attrs)


def test_same_layer_twice_is_refused():
    relu = mq.ReLU()
    with pytest.raises(ValueError, match="layer 3 .* same object as an earlier layer"):
        mq.Sequential([mq.Dense(4, 4), relu, mq.Dense(4, 4), relu, mq.Dense(4, 2)])
    mq.Sequential([mq.Dense(4, 2), relu])   # still free for a corrected model
