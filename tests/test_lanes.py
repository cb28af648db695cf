"""Batch-lane kernels (images in the vector lanes) against the NCHW kernels they stand in for."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import _core, ops
from conftest import assert_close


def to_lanes(x):
    v = _core._lanes_width(x.dtype)
    n = x.shape[0]
    out = np.empty(((n + v - 1) // v, *x.shape[1:], v), x.dtype)
    _core._lanes_pack(np.ascontiguousarray(x), out)
    return out


def from_lanes(lanes, n):
    out = np.empty((n, *lanes.shape[1:4]), lanes.dtype)
    _core._lanes_unpack(lanes, out)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 16, 17, 40])
def test_pack_round_trip(n, dtype, each_isa, rng):
    x = rng.standard_normal((n, 3, 5, 7)).astype(dtype)
    lanes = to_lanes(x)
    v = _core._lanes_width(dtype)
    assert lanes.shape == (-(-n // v), 3, 5, 7, v)
    np.testing.assert_array_equal(lanes[0, 1, 2, 3, : min(n, v)], x[: min(n, v), 1, 2, 3])
    if n % v:
        assert (lanes[-1, ..., n % v:] == 0).all()
    np.testing.assert_array_equal(from_lanes(lanes, n), x)


CONVS = [(33, 1, 32, 32, 6, 5, 5), (20, 6, 14, 14, 16, 5, 5), (16, 3, 9, 7, 5, 3, 2), (5, 2, 4, 4, 7, 4, 4),
         (18, 4, 6, 11, 3, 1, 1), (19, 7, 8, 13, 5, 2, 3), (3, 8, 6, 5, 2, 3, 5)]
# N, C, H, W, O, KH, KW: dx has its own kernels for KW = 5 and 3 (channel and pixel tiles of every
# size), the general one for the rest


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", CONVS, ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_conv_matches_nchw(shape, relu, dtype, each_isa, threads, rng):
    n, c, h, w, o, kh, kw = shape
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    xl = to_lanes(x)
    v = xl.shape[-1]
    y = np.empty((xl.shape[0], o, h - kh + 1, w - kw + 1, v), dtype)
    _core._lanes_conv2d_forward(xl, wt, b, relu, y)
    assert_close(from_lanes(y, n), ops.conv2d_forward(x, wt, b, relu=relu), dtype, what="y")
    dy = rng.standard_normal((n, o, h - kh + 1, w - kw + 1)).astype(dtype)
    xr = np.maximum(x, 0) if relu else x           # relu_input: x is the output of a ReLU
    dx = np.empty_like(xl)
    dw, db = np.empty_like(wt), np.empty(o, dtype)
    _core._lanes_conv2d_backward(to_lanes(dy), to_lanes(xr), wt, relu, dx, dw, db)
    want = ops.conv2d_backward(dy, xr, wt, relu_input=relu)
    assert_close(from_lanes(dx, n), want[0], dtype, what="dx")
    assert_close(dw, want[1], dtype, what="dw")
    assert_close(db, want[2], dtype, what="db")
    _core._lanes_conv2d_backward(to_lanes(dy), to_lanes(xr), wt, relu, None, dw, db)   # without dx
    assert_close(dw, want[1], dtype, what="dw (no dx)")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(33, 6, 28, 28), (20, 16, 10, 10), (17, 2, 7, 9), (3, 1, 2, 2)], ids=str)
def test_pool_matches_nchw(shape, dtype, each_isa, threads, rng):
    x = rng.integers(0, 3, shape).astype(dtype)          # ties everywhere
    x[0, 0, 0, 1] = np.nan
    x[-1, -1, 1, 0] = np.nan
    xl = to_lanes(x)
    oh, ow = shape[2] // 2, shape[3] // 2
    y = np.empty((*xl.shape[:2], oh, ow, xl.shape[-1]), dtype)
    code = np.empty(y.shape, np.int32 if dtype == np.float32 else np.int64)
    _core._lanes_maxpool2x2_forward(xl, y, code)
    y_ref, idx_ref = ops.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(from_lanes(y, shape[0]), y_ref)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    for mask in (None, y_ref):
        dx = np.empty_like(xl)
        _core._lanes_maxpool2x2_backward(to_lanes(dy), code, None if mask is None else to_lanes(mask), dx)
        np.testing.assert_array_equal(from_lanes(dx, shape[0]), ops.maxpool2d_backward(dy, idx_ref, shape, relu_output=mask))


POOLED_CONVS = [(33, 1, 32, 32, 6, 5, 5), (20, 6, 14, 14, 16, 5, 5), (17, 2, 9, 8, 3, 3, 2), (5, 3, 3, 3, 4, 2, 2),
                (16, 1, 12, 12, 2, 1, 1)]  # N, C, H, W, O, KH, KW; the third and fourth pool odd outputs


def code_dtype(dtype):
    return np.int32 if dtype == np.float32 else np.int64


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", POOLED_CONVS, ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_pooled_conv_equals_conv_then_pool(shape, relu, dtype, each_isa, threads, rng):
    """A convolution that pools its output on the way out gives the separate kernels' output
    and codes bit for bit; its backward through the pool gives their dx bit for bit, and dw, db
    to rounding (summed block by block)."""
    n, c, h, w, o, kh, kw = shape
    x = rng.integers(-2, 3, (n, c, h, w)).astype(dtype)   # small integers: many tied windows
    x[0, 0, 0, 0] = np.nan
    wt = rng.integers(-1, 2, (o, c, kh, kw)).astype(dtype)
    b = rng.integers(-1, 2, o).astype(dtype)
    xl = to_lanes(x)
    oh, ow = h - kh + 1, w - kw + 1
    full = np.empty((xl.shape[0], o, oh, ow, xl.shape[-1]), dtype)
    _core._lanes_conv2d_forward(xl, wt, b, relu, full)
    y_want = np.empty((*full.shape[:2], oh // 2, ow // 2, full.shape[-1]), dtype)
    code_want = np.empty(y_want.shape, code_dtype(dtype))
    _core._lanes_maxpool2x2_forward(full, y_want, code_want)
    y, code = np.full_like(y_want, 7), np.full_like(code_want, 9)
    _core._lanes_conv2d_forward(xl, wt, b, relu, y, code)
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(code, code_want)
    assert np.isnan(y).any() != relu   # the NaN went through the pool (the fused ReLU maps it to 0)

    x = rng.standard_normal((n, c, h, w)).astype(dtype)   # backward: finite values
    xl = to_lanes(x)
    _core._lanes_conv2d_forward(xl, wt, b, relu, y, code)
    g = to_lanes(rng.standard_normal((n, o, oh // 2, ow // 2)).astype(dtype))
    mask = y if relu else None
    grad_full = np.empty_like(full)
    _core._lanes_maxpool2x2_backward(g, code, mask, grad_full)
    dx_want, dw_want, db_want = np.empty_like(xl), np.empty_like(wt), np.empty(o, dtype)
    _core._lanes_conv2d_backward(grad_full, xl, wt, False, dx_want, dw_want, db_want)
    for with_dx in (True, False):
        dx, dw, db = np.full_like(xl, 5), np.full_like(wt, 5), np.full(o, 5, dtype)
        _core._lanes_conv2d_backward(g, xl, wt, False, dx if with_dx else None, dw, db, code, mask)
        if with_dx:
            np.testing.assert_array_equal(dx, dx_want)
        else:
            assert (dx == 5).all()
        assert_close(dw, dw_want, dtype, rtol=1e-12 if dtype == np.float64 else 1e-5, what="dw")
        assert_close(db, db_want, dtype, rtol=1e-12 if dtype == np.float64 else 1e-5, what="db")
    # and against the NCHW reference path, conv -> (relu) -> pool
    y_ref, idx = ops.maxpool2d_forward(ops.conv2d_forward(x, wt, b, relu=relu), 2)
    assert_close(from_lanes(y, n), y_ref, dtype, what="pooled y")
    g_ref = from_lanes(g, n)
    d_full = ops.maxpool2d_backward(g_ref, idx, (n, o, oh, ow), relu_output=y_ref if relu else None)
    want = ops.conv2d_backward(d_full, x, wt)
    _core._lanes_conv2d_backward(g, xl, wt, False, dx, dw, db, code, mask)
    assert_close(from_lanes(dx, n), want[0], dtype, what="dx vs NCHW")
    assert_close(dw, want[1], dtype, what="dw vs NCHW")
    assert_close(db, want[2], dtype, what="db vs NCHW")


def test_pooled_conv_arguments_are_checked():
    v = _core._lanes_width(np.float32)
    x = np.zeros((2, 1, 8, 8, v), np.float32)
    w = np.zeros((3, 1, 3, 3), np.float32)
    y, code = np.zeros((2, 3, 3, 3, v), np.float32), np.zeros((2, 3, 3, 3, v), np.int32)
    _core._lanes_conv2d_forward(x, w, None, True, y, code)   # 6x6 pools to 3x3
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 3, 3\)"):
        _core._lanes_conv2d_forward(x, w, None, True, np.zeros((2, 3, 6, 6, v), np.float32), code)
    with pytest.raises(TypeError, match="code_out must be"):
        _core._lanes_conv2d_forward(x, w, None, True, y, code.astype(np.int64))
    with pytest.raises(ValueError, match="smaller than a 2x2 window"):
        _core._lanes_conv2d_forward(x, np.zeros((3, 1, 8, 8), np.float32), None, True,
                                    np.zeros((2, 3, 1, 1, v), np.float32), code)
    with pytest.raises(ValueError, match="code_out shares memory|share"):
        _core._lanes_conv2d_forward(x, w, None, True, y, y.view(np.int32))
    dw, db = np.zeros_like(w), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="code holds 4"):
        _core._lanes_conv2d_backward(y, x, w, False, None, dw, db, np.full_like(code, 4), None)
    with pytest.raises(ValueError, match="needs its code"):
        _core._lanes_conv2d_backward(np.zeros((2, 3, 6, 6, v), np.float32), x, w, False, None, dw, db, None, y)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 3, 3, 3\)"):
        _core._lanes_conv2d_backward(np.zeros((2, 3, 6, 6, v), np.float32), x, w, False, None, dw, db, code, None)
    with pytest.raises(ValueError, match="relu_output must have|relu_output has"):
        _core._lanes_conv2d_backward(y, x, w, False, None, dw, db, code, np.zeros((2, 3, 2, 3, v), np.float32))


def test_lane_arguments_are_checked():
    v = _core._lanes_width(np.float32)
    x = np.zeros((2, 1, 8, 8, v), np.float32)
    with pytest.raises(ValueError, match="lanes but the active instruction set uses"):
        _core._lanes_conv2d_forward(np.zeros((2, 1, 8, 8, v + 1), np.float32), np.zeros((3, 1, 3, 3), np.float32),
                                    None, False, np.zeros((2, 3, 6, 6, v), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        _core._lanes_conv2d_forward(x, np.zeros((3, 1, 3, 3), np.float32), None, False,
                                    np.zeros((2, 3, 5, 6, v), np.float32))
    with pytest.raises(ValueError, match="w has 2 input channels"):
        _core._lanes_conv2d_forward(x, np.zeros((3, 2, 3, 3), np.float32), None, False,
                                    np.zeros((2, 3, 6, 6, v), np.float32))
    with pytest.raises(ValueError, match="code holds 7"):
        _core._lanes_maxpool2x2_backward(np.zeros((2, 1, 4, 4, v), np.float32), np.full((2, 1, 4, 4, v), 7, np.int32),
                                         None, np.zeros((2, 1, 8, 8, v), np.float32))
    with pytest.raises(TypeError, match="code_out must be"):
        _core._lanes_maxpool2x2_forward(x, np.zeros((2, 1, 4, 4, v), np.float32), np.zeros((2, 1, 4, 4, v), np.int64))
    with pytest.raises(ValueError, match="does not hold x"):
        _core._lanes_pack(np.zeros((v + 1, 1, 8, 8), np.float32), x[:1])   # needs two blocks


def test_instruction_set_switch_cannot_land_mid_call(rng):
    """Each call reads the instruction set once: while another thread flips it between two of
    different widths, a lane call either runs whole on the width its arrays have or refuses them."""
    import threading
    import time
    widths = {}
    for name in _core.available_isas():
        _core._set_isa(name)
        widths.setdefault(_core._lanes_width(np.float32), name)
    if len(widths) < 2:
        pytest.skip("needs two instruction sets of different vector widths")
    (v, first), (_, second) = list(widths.items())[:2]
    _core._set_isa(first)
    x = rng.standard_normal((2 * v, 2, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    xl = to_lanes(x)
    want = np.empty((2, 4, 7, 7, v), np.float32)
    _core._lanes_conv2d_forward(xl, w, None, False, want)
    stop = threading.Event()

    def flip():   # the sleeps hand over the GIL in both states, and kernels run without it
        while not stop.is_set():
            for name in (second, first):
                _core._set_isa(name)
                time.sleep(0.0002)

    flipper = threading.Thread(target=flip)
    flipper.start()
    ran = refused = 0
    deadline = time.monotonic() + 10
    try:
        while (ran < 50 or refused < 5) and time.monotonic() < deadline:
            y = np.full_like(want, np.nan)
            try:
                _core._lanes_conv2d_forward(xl, w, None, False, y)
            except ValueError as e:
                assert "lanes but the active instruction set uses" in str(e)
                refused += 1
                continue
            assert_close(y, want, np.float32, what="y")   # a whole call on one ISA of this width
            ran += 1
    finally:
        stop.set()
        flipper.join()
        _core._set_isa(_core.available_isas()[0])
    assert ran > 0
