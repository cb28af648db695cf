"""Dense layer kernels against the oracle and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import ops, reference
from conftest import assert_close

pytestmark = pytest.mark.usefixtures("threads")

SHAPES = [(32, 400, 120), (32, 120, 84), (32, 84, 10), (1, 400, 120), (256, 400, 120), (3, 1, 1),
          (7, 5, 3), (65, 33, 17), (1, 2000, 1), (64, 1037, 19)]  # (N, IN, OUT); the last: w^T in 65 tiles


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_oracle(shape, dtype, each_isa, rng):
    N, IN, OUT = shape
    x = rng.standard_normal((N, IN)).astype(dtype)
    w = rng.standard_normal((OUT, IN)).astype(dtype)
    b = rng.standard_normal(OUT).astype(dtype)
    y = ops.linear_forward(x, w, b)
    assert_close(y, reference.linear_forward(x, w, b), dtype, what="y")
    assert_close(ops.linear_forward(x, w, b, relu=True), reference.linear_forward(x, w, b, relu=True), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    for got, want, name in zip(ops.linear_backward(dy, x, w), reference.linear_backward(dy, x, w), ("dx", "dw", "db")):
        assert got.dtype == dtype
        assert_close(got, want, dtype, what=name)
    dx, dw, db = ops.linear_backward(dy, x, w, need_dx=False)
    assert dx is None


def test_gradients_match_finite_differences(rng):
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    r = rng.standard_normal((3, 4))
    dx, dw, db = ops.linear_backward(r, x, w)
    h = 1e-6
    for array, grad in ((x, dx), (w, dw), (b, db)):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            saved = array[i]
            array[i] = saved + h
            up = np.sum(ops.linear_forward(x, w, b) * r)
            array[i] = saved - h
            down = np.sum(ops.linear_forward(x, w, b) * r)
            array[i] = saved
            numeric[i] = (up - down) / (2 * h)
        assert_close(grad, numeric, rtol=1e-7)
