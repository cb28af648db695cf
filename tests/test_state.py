"""The model's state: parameters, buffers under PyTorch's names, generators, and the mode."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta.layers.base import Layer


class CountingScale(Layer):
    """A test layer with one parameter and two buffers that behaves differently in training: it
    scales by its weight, and in training mode counts batches and tracks the batch mean."""

    def parameter_shapes(self):
        return {"weight": (1,)}

    def initial_parameters(self, rng):
        return {"weight": np.array([2.0])}

    def buffer_shapes(self):
        return {"running_mean": ((), None), "num_batches_tracked": ((), np.int64)}

    def initial_buffers(self):
        return {"running_mean": 0.0}

    def forward(self, x, call):
        if call.training:
            self._buffers["running_mean"][...] = x.mean()
            self._buffers["num_batches_tracked"][...] += 1
        call.cache = x
        return x * self._params["weight"][0]

    def backward(self, dy, call):
        call.grads["weight"][0] = np.sum(dy * call.cache)
        return dy * self._params["weight"][0]


def make_model():
    return mq.Sequential([mq.Dense(4, 3), CountingScale()], seed=0, dtype="float64")


def test_buffers_follow_parameters_in_state_dict():
    model = make_model()
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.running_mean", "1.num_batches_tracked"]
    assert model.count_params() == 4 * 3 + 3 + 1     # buffers are not parameters
    assert model.state_dict()["1.num_batches_tracked"].dtype == np.int64


def test_training_mode_reaches_layers_and_fit_restores_evaluation_mode():
    model = make_model()
    x = np.ones((5, 4))
    assert not model.training
    model(x)
    assert model.state_dict()["1.num_batches_tracked"] == 0       # evaluation: state untouched
    model.train()(x)
    assert model.state_dict()["1.num_batches_tracked"] == 1
    model.eval()
    model.fit(np.ones((8, 4)), np.arange(8) % 3, epochs=2, batch_size=4, verbose=0)
    assert model.state_dict()["1.num_batches_tracked"] == 1 + 4   # 2 epochs x 2 batches
    assert not model.training
    model.evaluate(np.ones((8, 4)), np.arange(8) % 3)
    model.predict(np.ones((3, 4)))
    assert model.state_dict()["1.num_batches_tracked"] == 5


def test_buffers_load_all_or_nothing_and_round_trip_through_files(tmp_path):
    model = make_model()
    state = model.state_dict()
    state["1.running_mean"] = np.array(0.5)
    state["1.num_batches_tracked"] = np.array(7)
    model.load_state_dict(state)
    bad = dict(state, **{"1.running_mean": np.array(np.nan)})
    with pytest.raises(ValueError, match="1.running_mean"):
        model.load_state_dict(bad)
    assert model.state_dict()["1.running_mean"] == 0.5
    with pytest.raises(ValueError, match="unknown type 'CountingScale'"):   # only the package's layers load
        model.save(tmp_path / "m.maq")
        mq.load(tmp_path / "m.maq")


def test_generators_resume_exactly():
    a = mq.models.lenet5(seed=3)
    a.state.shuffle_rng.permutation(10)
    b = mq.models.lenet5(seed=3)
    b.set_training_state(a.training_state())
    assert np.array_equal(a.state.shuffle_rng.permutation(100), b.state.shuffle_rng.permutation(100))
    assert np.array_equal(a.state.layer_rng.random(5), b.state.layer_rng.random(5))
    with pytest.raises(ValueError, match="epochs_trained"):
        b.set_training_state(dict(a.training_state(), epochs_trained=-1))
