"""Adam and SGD updates against hand-written transcriptions of their formulas."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import ops, reference
from conftest import assert_close

pytestmark = pytest.mark.usefixtures("threads")


def adam_by_hand(p, g, m, v, t, lr, beta1, beta2, eps, wd, bias_correction):
    """Kingma & Ba (2015), Algorithm 1, eps after the square root (torch.optim.Adam)."""
    g = g + wd * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g ** 2
    if bias_correction:
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    else:
        m_hat, v_hat = m, v
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def sgd_by_hand(p, g, buf, lr, momentum, wd, nesterov):
    g = g + wd * p
    if momentum:
        buf = momentum * buf + g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


ADAM_SETTINGS = [
    dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, bias_correction=True),
    dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, bias_correction=True),
    dict(lr=0.01, beta1=0.95, beta2=0.99, eps=1e-7, weight_decay=0.0, bias_correction=False),  # the notebook's
    dict(lr=0.5, beta1=0.3, beta2=0.5, eps=1e-3, weight_decay=0.0, bias_correction=True),       # beta1 < 0.5
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("size", [1, 61706, 300001])
def test_adam_matches_formula(settings, dtype, size, rng):
    p = rng.standard_normal(size).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    ep, em, ev = p.astype(np.float64), np.zeros(size), np.zeros(size)
    rp, rm, rv = p.copy(), m.copy(), v.copy()
    for t in range(1, 8):
        g = rng.standard_normal(size).astype(dtype)
        ops.adam_update(p, g, m, v, t, **settings)
        reference.adam_update(rp, g, rm, rv, t, **settings)
        ep, em, ev = adam_by_hand(ep, g.astype(np.float64), em, ev, t, settings["lr"], settings["beta1"],
                                  settings["beta2"], settings["eps"], settings["weight_decay"],
                                  settings["bias_correction"])
        assert p.dtype == m.dtype == v.dtype == dtype
        # float32 state rounds each step: ~1e-7 relative per step on the moments, amplified
        # near zero by the division; 1e-4 of the parameters' scale bounds it over 7 steps. The
        # moments are sums of terms of the gradients' scale (1) that may cancel: measure on that.
        assert_close(p, ep, dtype, rtol=1e-12 if dtype == np.float64 else 1e-4, what=f"param, step {t}")
        assert_close(m, em, dtype, rtol=1e-12 if dtype == np.float64 else 1e-5, what=f"m, step {t}", scale=1.0)
        assert_close(v, ev, dtype, rtol=1e-12 if dtype == np.float64 else 1e-5, what=f"v, step {t}", scale=1.0)
        assert_close(rp, ep, dtype, rtol=1e-12 if dtype == np.float64 else 1e-4, what="reference")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, False)])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_sgd_matches_formula(momentum, nesterov, weight_decay, dtype, rng):
    size = 1000
    p = rng.standard_normal(size).astype(dtype)
    vel = np.zeros_like(p)
    ep, ebuf = p.astype(np.float64), np.zeros(size)
    rp, rvel = p.copy(), vel.copy()
    for _ in range(6):
        g = rng.standard_normal(size).astype(dtype)
        ops.sgd_update(p, g, vel, 0.05, momentum, weight_decay, nesterov)
        reference.sgd_update(rp, g, rvel, 0.05, momentum, weight_decay, nesterov)
        ep, ebuf = sgd_by_hand(ep, g.astype(np.float64), ebuf, 0.05, momentum, weight_decay, nesterov)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        assert_close(p, ep, dtype, rtol=tol)
        assert_close(rp, ep, dtype, rtol=tol)
        if momentum:
            assert_close(vel, ebuf, dtype, rtol=tol)


def test_sgd_without_velocity():
    p = np.ones(4)
    ops.sgd_update(p, np.full(4, 2.0), None, lr=0.25)
    np.testing.assert_array_equal(p, np.full(4, 0.5))


def test_adam_first_step_moves_each_parameter_by_lr():
    """With bias correction, step 1 moves every parameter by lr * g / (|g| + eps) ~ lr."""
    p = np.zeros(5)
    g = np.array([1.0, -2.0, 3.0, -4.0, 0.5])
    ops.adam_update(p, g, np.zeros(5), np.zeros(5), 1, lr=0.1)
    np.testing.assert_allclose(p, -0.1 * np.sign(g), rtol=1e-7)


def test_update_any_shape(rng):
    p = rng.standard_normal((6, 1, 5, 5))
    m, v, g = np.zeros_like(p), np.zeros_like(p), rng.standard_normal(p.shape)
    expected, _, _ = adam_by_hand(p.copy(), g, 0, 0, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, True)
    ops.adam_update(p, g, m, v, 1)
    assert_close(p, expected)
