"""Every layer's backward against finite differences (float64), and LeNet-5's whole gradient."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from conftest import assert_close
from maqueta.layers import Call


def call_for(layer, training=True):
    """A Call as the executor makes one for an unfused layer that must return its input gradient."""
    call = Call(layer, layer.index or 0, training)
    call.need_dx = True
    return call


def numeric_gradient(f, array, h=1e-6, coords=None):
    grad = np.zeros_like(array)
    for i in coords if coords is not None else np.ndindex(array.shape):
        saved = array[i]
        array[i] = saved + h
        up = f()
        array[i] = saved - h
        down = f()
        array[i] = saved
        grad[i] = (up - down) / (2 * h)
    return grad


LAYER_CASES = [
    (lambda: mq.Conv2D(2, 3, 3), (2, 2, 6, 5)),
    (lambda: mq.Conv2D(2, 3, (2, 3), stride=2, padding=1), (2, 2, 7, 6)),
    (lambda: mq.MaxPool2D(2), (2, 3, 6, 6)),
    (lambda: mq.MaxPool2D(3, stride=2), (2, 2, 7, 7)),
    (lambda: mq.Dense(7, 4), (3, 7)),
    (lambda: mq.Flatten(), (2, 3, 2, 2)),
    (lambda: mq.ReLU(), (4, 9)),
    (lambda: mq.Sigmoid(), (4, 9)),
    (lambda: mq.Tanh(), (4, 9)),
    (lambda: mq.Softmax(), (4, 6)),
]


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("make,shape", LAYER_CASES, ids=lambda v: repr(v()) if callable(v) else str(v))
def test_layer_backward_matches_finite_differences(make, shape, backend):
    rng = np.random.default_rng(3)
    layer = make()
    model = mq.Sequential([layer], dtype="float64", seed=1)
    # distinct values, away from ReLU's kink and max-pool ties
    x = rng.permutation(np.linspace(-2, 2, int(np.prod(shape)))).reshape(shape) + 1e-3
    with mq.use_backend(backend):
        call = call_for(layer)
        y = layer.forward(x, call)
        r = rng.standard_normal(y.shape)

        def loss():
            return float(np.sum(layer.forward(x, call_for(layer, training=False)) * r))

        dx = layer.backward(r, call)
        assert_close(dx, numeric_gradient(loss, x), rtol=1e-6, what="dx")
        state = model.state_dict()
        for name, grad in call.grads.items():
            param = getattr(layer, name)
            assert_close(grad, numeric_gradient(loss, param), rtol=1e-6, what=name)
            assert np.array_equal(state[f"0.{name}"], param)


def test_lenet5_gradient_matches_finite_differences():
    """d loss / d parameter through the whole network, on a few coordinates of each parameter."""
    rng = np.random.default_rng(0)
    model = mq.models.lenet5(dtype="float64", seed=2)
    x = rng.random((4, 1, 32, 32))
    targets = np.array([1, 7, 3, 0])
    calls = [call_for(layer) for layer in model.layers]   # every layer on its own, nothing fused
    a = x
    for layer, call in zip(model.layers, calls):
        a = layer.forward(a, call)
    _, d = mq.losses.cross_entropy(a, targets)
    for layer, call in zip(reversed(model.layers), reversed(calls)):
        d = layer.backward(d, call)

    def loss():
        return mq.losses.cross_entropy(model.forward(x), targets)[0]

    for layer, call in zip(model.layers, calls):
        for name, analytic in call.grads.items():
            param = getattr(layer, name)
            coords = [tuple(rng.integers(0, s) for s in param.shape) for _ in range(4)]
            numeric = numeric_gradient(loss, param, h=1e-5, coords=coords)
            key = f"{layer.index}.{name}"
            for c in coords:
                assert abs(analytic[c] - numeric[c]) <= 1e-7 + 1e-5 * abs(numeric[c]), (key, c, analytic[c], numeric[c])


def test_losses_match_finite_differences():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 4)) * 3
    targets = np.array([0, 3, 2, 2, 1])
    for loss_fn in (mq.losses.cross_entropy, mq.losses.mse):
        _, grad = loss_fn(logits, targets)
        assert_close(grad, numeric_gradient(lambda: loss_fn(logits, targets)[0], logits), rtol=1e-7)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]])
    loss, grad = mq.losses.cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(1e5 / 2)


def test_sigmoid_does_not_overflow():
    layer = mq.Sigmoid()
    y = layer.forward(np.array([[-1e4, 0.0, 1e4]]), call_for(layer))
    np.testing.assert_array_equal(y, [[0.0, 0.5, 1.0]])
