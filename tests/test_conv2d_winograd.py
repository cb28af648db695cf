"""conv2d by Winograd F(2x2, 3x3) (cpp/kernels/conv2d_winograd.cpp): forward, input and weight
gradients against the NumPy oracle on the shapes that reach its edges, finite differences, and the same
bits at any thread count. test_conv2d.py also runs every case there with the algorithm forced."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta
from maqueta import ops, reference
from conftest import assert_close, forced_conv_algo

# (N, C, H, W, O, padding). Widths pick the tile-row layouts of each vector width: a row of
# tiles filling whole vectors, half a vector (two tile rows share one: W 15-16 for 16 floats,
# 7-8 for 8 values, 3-4 and 1-2 for the 16-byte vectors), an odd number of tile rows (the last
# one alone in its vector), odd output sizes (the last tile's second row or column dropped).
SHAPES = [
    (2, 3, 16, 16, 5, 1),
    (1, 4, 15, 15, 3, 1),
    (2, 2, 13, 16, 4, 1),       # 7 tile rows of 8: the last one unpaired
    (3, 5, 8, 8, 6, 1),
    (2, 3, 7, 7, 2, 1),
    (2, 2, 4, 4, 3, 1),
    (1, 3, 3, 3, 2, 1),
    (2, 2, 2, 2, 3, 1),
    (1, 2, 1, 1, 2, 1),         # one pixel: all of the tile is padding but its centre
    (2, 3, 32, 32, 4, 1),
    (1, 2, 33, 34, 3, 1),
    (2, 3, 9, 40, 2, 1),        # rows of several vectors, the last one partial
    (2, 3, 10, 11, 4, 0),       # no padding
    (2, 3, 6, 7, 2, 2),         # padding 2: dx correlates unpadded dy
    (1, 2, 5, 5, 3, 3),         # padding 3: forward only (dx falls back)
    (2, 20, 16, 16, 24, 1),     # channels across several panels of the GEMM
    (2, 3, 5, 9, 2, (1, 2)),    # different paddings per axis
]


def make(rng, shape, dtype):
    N, C, H, W, O, padding = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, padding


@pytest.fixture
def winograd():
    with forced_conv_algo("winograd"):
        yield


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_oracle(shape, dtype, each_isa, threads, winograd, rng):
    x, w, b, padding = make(rng, shape, dtype)
    y = ops.conv2d_forward(x, w, b, 1, padding)
    assert_close(y, reference.conv2d_forward(x, w, b, 1, padding), dtype, what="y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = ops.conv2d_backward(dy, x, w, 1, padding)
    dx_ref, dw_ref, db_ref = reference.conv2d_backward(dy, x, w, 1, padding)
    assert_close(dx, dx_ref, dtype, what="dx")
    assert_close(dw, dw_ref, dtype, what="dw")
    assert_close(db, db_ref, dtype, what="db")


@pytest.mark.parametrize("shape", [(2, 2, 5, 6, 3, 1), (1, 3, 4, 4, 2, 0), (2, 2, 3, 5, 2, 2)], ids=str)
def test_gradients_match_finite_differences(shape, winograd, rng):
    """Central differences of L = sum(conv(x, w, b) * r) in float64 give dx, dw and db (dw by
    the transposed products: G^T [sum over tiles of (A r A^T) . (B^T x B)] G)."""
    x, w, b, padding = make(rng, shape, np.float64)
    r = rng.standard_normal(ops.conv2d_forward(x, w, b, 1, padding).shape)

    def loss():
        return float(np.sum(ops.conv2d_forward(x, w, b, 1, padding) * r))

    grads = dict(zip("xwb", ops.conv2d_backward(r, x, w, 1, padding)))
    for name, array in (("x", x), ("w", w), ("b", b)):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            saved = array[i]
            array[i] = saved + 1e-6
            up = loss()
            array[i] = saved - 1e-6
            down = loss()
            array[i] = saved
            numeric[i] = (up - down) / 2e-6
        assert_close(grads[name], numeric, rtol=1e-7, what=f"d{name}")


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu"])
def test_fused_activations_and_no_bias(activation, winograd, rng):
    x, w, b, padding = make(rng, (2, 3, 9, 16, 4, 1), np.float64)
    plain = reference.conv2d_forward(x, w, b, 1, padding)
    want = {"relu": np.maximum(plain, 0), "leaky_relu": np.where(plain > 0, plain, 0.1 * plain),
            "elu": np.where(plain > 0, plain, 0.1 * np.expm1(np.minimum(plain, 0)))}[activation]
    assert_close(ops.conv2d_forward(x, w, b, 1, padding, activation=activation, alpha=0.1), want, what=activation)
    assert_close(ops.conv2d_forward(x, w, None, 1, padding), reference.conv2d_forward(x, w, None, 1, padding),
                 what="no bias")


def test_relu_input_masks_dx_bit_for_bit(winograd, rng):
    """With relu_input, dx is the plain dx zeroed where x <= 0 (the mask is applied as dx is
    stored, in the output transform)."""
    x, w, _, padding = make(rng, (3, 4, 15, 17, 5, 1), np.float32)
    x = np.maximum(x, 0)
    dy = rng.standard_normal(ops.conv2d_forward(x, w, None, 1, padding).shape).astype(np.float32)
    dx, _, _ = ops.conv2d_backward(dy, x, w, 1, padding)
    masked, _, _ = ops.conv2d_backward(dy, x, w, 1, padding, relu_input=True)
    np.testing.assert_array_equal(masked, np.where(x > 0, dx, 0))


@pytest.mark.parametrize("shape", [(1, 16, 32, 32, 16, 1), (1, 32, 16, 16, 32, 1), (5, 16, 16, 16, 16, 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_at_any_thread_count(shape, dtype, rng):
    """Blocks of tile rows go to threads (one image is cut into several when the threads
    outnumber the images), and every value is computed the same way wherever it lands."""
    x, w, b, padding = make(rng, shape, dtype)
    dy = rng.standard_normal((shape[0], shape[4], shape[2], shape[3])).astype(dtype)
    before = maqueta.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3, 4):
            maqueta.set_num_threads(threads)
            outs.append([ops.conv2d_forward(x, w, b, 1, padding), ops.conv2d_backward(dy, x, w, 1, padding)[0]])
    finally:
        maqueta.set_num_threads(before)
    for other in outs[1:]:
        for a, b_ in zip(outs[0], other):
            np.testing.assert_array_equal(a, b_)


def test_auto_takes_winograd_for_wide_3x3_layers(rng):
    """The plan takes Winograd for a 3x3 stride-1 layer with 16 channels or more on 16-wide
    maps, 2,048 output pixels a call: auto's results are forced Winograd's, bit for bit, and not
    the pixel-major kernel's. With fewer pixels (one image: its latency) it keeps the others."""
    x, w, b, padding = make(rng, (8, 32, 16, 16, 32, 1), np.float32)
    dy = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)

    def run(algo):
        with forced_conv_algo(algo):
            return ops.conv2d_forward(x, w, b, 1, padding), ops.conv2d_backward(dy, x, w, 1, padding)[0]

    auto, wino, pixel = run("auto"), run("winograd"), run("pixel")
    for a, b_ in zip(auto, wino):
        np.testing.assert_array_equal(a, b_)
    assert not np.array_equal(auto[0], pixel[0])   # the two algorithms round differently
    x, dy = x[:1], dy[:1]
    auto, pixel = run("auto"), run("pixel")
    np.testing.assert_array_equal(auto[0], pixel[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_with_winograd_for_dx_only(dtype, threads, rng):
    """Unpadded 16x16 maps give 14-wide outputs: too narrow for the forward's Winograd with 16
    floats a vector, but dx's output is the 16-wide input, so auto takes Winograd for dx alone
    (after dw by the other kernels, which then also sum db)."""
    x, w, b, padding = make(rng, (8, 16, 16, 16, 16, 0), dtype)
    y = ops.conv2d_forward(x, w, b, 1, padding)
    assert_close(y, reference.conv2d_forward(x, w, b, 1, padding), dtype, what="y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    got, want = ops.conv2d_backward(dy, x, w, 1, padding), reference.conv2d_backward(dy, x, w, 1, padding)
    for g, e, what in zip(got, want, ("dx", "dw", "db")):
        assert_close(g, e, dtype, what=what)
    masked, _, _ = ops.conv2d_backward(dy, np.maximum(x, 0), w, 1, padding, relu_input=True)
    plain, _, _ = ops.conv2d_backward(dy, np.maximum(x, 0), w, 1, padding)
    np.testing.assert_array_equal(masked, np.where(x > 0, plain, 0))
