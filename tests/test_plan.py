"""ReLU fusion: which layers fuse, and that fused training computes exactly what separate layers do."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta.plan import Plan
from test_layers import numeric_gradient


def summary(model):
    return [(model.layers[s.index].__class__.__name__, s.fused_relu, s.relu_input) for s in model._plan.steps]


def test_lenet5_plan():
    assert summary(mq.models.lenet5()) == [
        ("Conv2D", True, False), ("MaxPool2D", False, True), ("Conv2D", True, False), ("MaxPool2D", False, True),
        ("Flatten", False, False), ("Dense", True, False), ("Dense", True, True), ("Dense", False, True)]


@pytest.mark.parametrize("layers,expected", [
    # the ReLU's consumer cannot apply its gradient: keep it a layer
    (lambda: [mq.Dense(4, 5), mq.ReLU(), mq.Sigmoid(), mq.Dense(5, 3)],
     [("Dense", False, False), ("ReLU", False, False), ("Sigmoid", False, False), ("Dense", False, False)]),
    (lambda: [mq.Dense(4, 3), mq.ReLU()], [("Dense", False, False), ("ReLU", False, False)]),
    # through a Flatten into a Dense
    (lambda: [mq.Conv2D(1, 2, 3), mq.ReLU(), mq.Flatten(), mq.Dense(32, 3)],
     [("Conv2D", True, False), ("Flatten", False, False), ("Dense", False, True)]),
    (lambda: [mq.Conv2D(1, 2, 3), mq.ReLU(), mq.Conv2D(2, 2, 3), mq.ReLU(), mq.ReLU(), mq.Flatten(), mq.Dense(8, 3)],
     [("Conv2D", True, False), ("Conv2D", False, True), ("ReLU", False, False), ("ReLU", False, False),
      ("Flatten", False, False), ("Dense", False, False)]),
])
def test_fusion_only_where_the_gradient_can_follow(layers, expected):
    assert summary(mq.Sequential(layers())) == expected


def unfused(model):
    model._plan = Plan(model.layers, fuse=False)
    model._train_buffers.clear()
    return model


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_fused_training_equals_separate_layers(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 20)
    fused, plain = mq.models.lenet5(seed=1), unfused(mq.models.lenet5(seed=1))
    assert all(not s.fused_relu for s in plain._plan.steps)
    with mq.use_backend(backend):
        for model in (fused, plain):
            model.fit(X, y, epochs=2, batch_size=8, verbose=0, optimizer=mq.Adam(1e-2))
    np.testing.assert_array_equal(fused.get_flat_parameters(), plain.get_flat_parameters())
    np.testing.assert_array_equal(fused.predict_proba(X), plain.predict_proba(X))


def make_fd_models():
    return [
        mq.models.lenet5(dtype="float64", seed=2),
        mq.Sequential([mq.Conv2D(1, 3, 3, padding=1), mq.ReLU(), mq.Conv2D(3, 2, 3, stride=2), mq.ReLU(),
                       mq.Flatten(), mq.Dense(2 * 4 * 4, 5), mq.ReLU(), mq.Dense(5, 3)], dtype="float64", seed=1,
                      input_shape=(1, 10, 10)),
        mq.Sequential([mq.Flatten(), mq.Dense(64, 6), mq.ReLU(), mq.Sigmoid(), mq.Dense(6, 4), mq.Tanh(),
                       mq.Dense(4, 3)], dtype="float64", seed=1, input_shape=(1, 8, 8)),
    ]


@pytest.mark.parametrize("index", range(3), ids=["lenet5", "conv-relu-conv", "relu-sigmoid"])
def test_fused_gradients_match_finite_differences(index):
    """The model's own training path (fusion and all) against central differences of its loss."""
    model = make_fd_models()[index]
    rng = np.random.default_rng(0)
    x = rng.random((4, *model.input_shape))
    targets = np.array([1, 2, 0, 2])
    model._gradients(x, targets, mq.losses.cross_entropy)
    analytic = model._grads.copy()
    params = model.get_flat_parameters()
    coords = rng.choice(params.size, size=min(40, params.size), replace=False)
    numeric = numeric_gradient(lambda: mq.losses.cross_entropy(model.forward(x), targets)[0], params, h=1e-5,
                               coords=[(int(c),) for c in coords])
    for c in coords:
        assert abs(analytic[c] - numeric[c]) <= 1e-7 + 1e-5 * abs(numeric[c]), (c, analytic[c], numeric[c])
