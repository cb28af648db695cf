"""softmax_cross_entropy and all_finite: native against the reference and PyTorch, and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import _core, ops, reference
from conftest import assert_close


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,k", [(1, 2), (32, 10), (256, 10), (7, 1), (3, 1000)])
def test_matches_reference(n, k, dtype, rng):
    logits = (rng.standard_normal((n, k)) * 4).astype(dtype)
    targets = rng.integers(0, k, n)
    loss, grad = ops.softmax_cross_entropy(logits, targets)
    ref_loss, ref_grad = reference.softmax_cross_entropy(logits, targets)
    assert isinstance(loss, float) and grad.dtype == dtype
    assert loss == pytest.approx(ref_loss, rel=1e-12 if dtype == np.float64 else 1e-6)
    assert_close(grad, ref_grad, dtype)
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-6)


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((64, 10)) * 3
    targets = rng.integers(0, 10, 64)
    z = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(z, torch.from_numpy(targets))
    expected.backward()
    loss, grad = ops.softmax_cross_entropy(logits, targets)
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert_close(grad, z.grad.numpy())


def test_stable_and_nan_aware():
    loss, grad = ops.softmax_cross_entropy(np.array([[1000.0, 0.0, -1000.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0) and np.isfinite(grad).all()
    loss, _ = ops.softmax_cross_entropy(np.array([[1.0, np.nan]]), np.array([0]))
    assert np.isnan(loss)
    loss, _ = ops.softmax_cross_entropy(np.array([[np.inf, 0.0]]), np.array([0]))
    assert np.isnan(loss)


def test_writes_into_grad_out(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    out = np.empty((4, 3), np.float32)
    _, grad = ops.softmax_cross_entropy(logits, np.array([0, 1, 2, 0]), grad_out=out)
    assert grad is out


@pytest.mark.parametrize("logits,targets,exc,message", [
    (np.zeros((2, 3)), np.array([0, 3]), ValueError, "targets holds 3 at position 1, outside the 3 classes"),
    (np.zeros((2, 3)), np.array([-1, 0]), ValueError, "targets holds -1"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), TypeError, "targets must hold integer class indices"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), ValueError, r"targets must have shape \(2,\)"),
    (np.zeros(3), np.array([0]), ValueError, "logits must be 2-D"),
    (np.zeros((2, 3), np.int32), np.array([0, 1]), TypeError, "logits must have dtype float32 or float64"),
    (np.zeros((0, 3)), np.array([], np.int64), ValueError, "empty dimension"),
])
def test_bad_input(logits, targets, exc, message):
    with pytest.raises(exc, match=message):
        ops.softmax_cross_entropy(logits, targets)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 15, 16, 17, 61706])
def test_all_finite(size, dtype, each_isa):
    x = np.ones(size, dtype)
    assert _core.all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, size // 2, size - 1):
            y = x.copy()
            y[where] = bad
            assert not _core.all_finite(y)
    big = np.full(size, np.finfo(dtype).max, dtype)   # huge but finite: no overflow in the check
    assert _core.all_finite(big)
