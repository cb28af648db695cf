"""max-pool: native kernels against the oracle, ties, NaN, floor sizes, finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import ops, reference
from conftest import assert_close

pytestmark = pytest.mark.usefixtures("threads")

# (x shape, kernel_size, stride)
CASES = [
    ((4, 6, 28, 28), 2, None),        # LeNet-5 pool1
    ((4, 16, 10, 10), 2, None),       # LeNet-5 pool2
    ((1, 1, 2, 2), 2, None),          # one window
    ((2, 3, 7, 9), 2, None),          # odd sizes: last row and column dropped
    ((2, 3, 9, 7), 3, 2),             # overlapping windows
    ((2, 2, 8, 11), (2, 3), (1, 2)),  # non-square kernel and stride
    ((2, 2, 5, 5), 5, 1),             # the whole plane
    ((3, 1, 6, 6), 1, 1),             # identity
    ((1, 2, 10, 10), 3, 3),           # 10 not divisible by 3
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_oracle(case, dtype, each_isa, rng):
    shape, kernel, stride = case
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = ops.maxpool2d_forward(x, kernel, stride)
    y_ref, idx_ref = reference.maxpool2d_forward(x, kernel, stride)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(ops.maxpool2d_backward(dy, idx, shape), reference.maxpool2d_backward(dy, idx_ref, shape), dtype)


def test_output_size_is_floored():
    y, _ = ops.maxpool2d_forward(np.zeros((1, 1, 7, 9)), 2)
    assert y.shape == (1, 1, 3, 4)
    y, _ = ops.maxpool2d_forward(np.zeros((1, 1, 10, 10)), 3, 2)
    assert y.shape == (1, 1, 4, 4)


def test_ties_first_maximum_wins(each_isa):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = x[0, 0, 1, 1] = 5.0   # three tied maxima in the first window
    x[0, 0, 2:, 2:] = 1.0                                 # a window of four equal values
    y, idx = ops.maxpool2d_forward(x, 2)
    assert idx[0, 0, 0, 0] == 1          # (0, 1) comes first in row-major order
    assert idx[0, 0, 1, 1] == 2 * 4 + 2  # first of the all-equal window
    assert idx[0, 0, 0, 1] == 2          # all zeros: the window's first element
    dx = ops.maxpool2d_backward(np.ones_like(y), idx, x.shape)
    assert dx.sum() == 4.0 and dx[0, 0, 0, 1] == 1.0 and dx[0, 0, 1, 1] == 0.0  # no double counting


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nan_propagates(dtype, each_isa):
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan                   # in window (0, 0), after larger numbers
    x[0, 0, 2, 3] = x[0, 0, 3, 2] = np.nan   # two NaNs in window (1, 1)
    x[0, 0, 0, 2] = -np.inf
    y, idx = ops.maxpool2d_forward(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 4
    assert np.isnan(y[0, 0, 1, 1]) and idx[0, 0, 1, 1] == 11    # the first NaN
    assert y[0, 0, 0, 1] == 7 and y[0, 0, 1, 0] == 13
    y_ref, idx_ref = reference.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_infinities():
    x = np.full((1, 1, 2, 4), -np.inf)
    x[0, 0, 1, 3] = np.inf
    y, idx = ops.maxpool2d_forward(x, 2)
    assert y[0, 0, 0, 0] == -np.inf and idx[0, 0, 0, 0] == 0
    assert y[0, 0, 0, 1] == np.inf and idx[0, 0, 0, 1] == 7


def test_overlapping_windows_accumulate():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 9.0            # the maximum of all four 2x2 windows with stride 1
    y, idx = ops.maxpool2d_forward(x, 2, 1)
    assert (idx == 4).all()
    dx = ops.maxpool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), idx, x.shape)
    assert dx[0, 0, 1, 1] == 10.0 and dx.sum() == 10.0


@pytest.mark.parametrize("case", [((2, 3, 6, 6), 2, None), ((1, 2, 7, 8), 3, 2), ((2, 1, 5, 7), (2, 3), (1, 2))], ids=str)
def test_gradient_matches_finite_differences(case, rng):
    """Away from ties (values at least 1e-3 apart) max-pool is locally linear."""
    shape, kernel, stride = case
    x = rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) * 1e-3
    r = rng.standard_normal(ops.maxpool2d_forward(x, kernel, stride)[0].shape)
    _, idx = ops.maxpool2d_forward(x, kernel, stride)
    dx = ops.maxpool2d_backward(r, idx, shape)
    h = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(shape):
        saved = x[i]
        x[i] = saved + h
        up = np.sum(ops.maxpool2d_forward(x, kernel, stride)[0] * r)
        x[i] = saved - h
        down = np.sum(ops.maxpool2d_forward(x, kernel, stride)[0] * r)
        x[i] = saved
        numeric[i] = (up - down) / (2 * h)
    assert_close(dx, numeric, rtol=1e-7)


def test_matches_oracle_with_many_ties(each_isa, rng):
    x = rng.integers(0, 3, size=(3, 4, 12, 12)).astype(np.float32)   # ties everywhere
    for kernel, stride in ((2, None), (3, 1), ((2, 3), (2, 1))):
        y, idx = ops.maxpool2d_forward(x, kernel, stride)
        y_ref, idx_ref = reference.maxpool2d_forward(x, kernel, stride)
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("width", [2, 3, 4, 31, 32, 33, 34, 63, 64, 65])
def test_every_row_width_and_the_end_of_the_buffer(width, dtype, each_isa, rng):
    """Rows shorter and longer than a vector, odd widths, and rows that end the input (where the
    vector path may not read ahead); values with ties and NaN."""
    x = rng.integers(0, 4, (2, 3, 5, width)).astype(dtype)
    x[0, 1, 2, ::7] = np.nan
    x[1, 2, 4, -1] = np.nan
    y, idx = ops.maxpool2d_forward(x, 2)
    y_ref, idx_ref = reference.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (2, 1, 5, 4)], ids=str)
def test_backward_with_foreign_indices(shape, rng):
    """Indices need not come from a 2x2 forward: any in-plane index scatters exactly (the 2x2 block
    fast path must notice and step aside), with and without the ReLU mask."""
    n, c, h, w = shape
    dy = rng.standard_normal((n, c, h // 2, w // 2))
    y = rng.standard_normal(dy.shape)
    for indices in (rng.integers(0, h * w, dy.shape),                       # anywhere in the plane
                    ops.maxpool2d_forward(rng.standard_normal(shape), 2)[1]):  # the fast path's case
        for mask in (None, y):
            got = ops.maxpool2d_backward(dy, indices, shape, relu_output=mask)
            want = reference.maxpool2d_backward(dy, indices, shape, relu_output=mask)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
