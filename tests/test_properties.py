"""Property tests: random shapes, strides, paddings, dtypes and memory layouts against the oracle,
and random junk arguments that must raise, never crash."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maqueta import ops, reference
from conftest import assert_close

pytestmark = pytest.mark.usefixtures("threads")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

dtypes = st.sampled_from([np.float32, np.float64])
layouts = st.sampled_from(["c", "fortran", "strided", "reversed"])


def in_layout(a, layout):
    """The same values as a, in another memory layout."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 12))
    w = draw(st.integers(max(1, kw - 2 * pw), 12))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), o=draw(st.integers(1, 9)), h=h, w=w,
                kernel=(kh, kw), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
                bias=draw(st.booleans()), dtype=draw(dtypes), layout=draw(layouts), seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(case=conv_cases())
def test_conv2d_property(case, each_conv_algo):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["o"], case["c"], *case["kernel"])).astype(dtype)
    b = rng.standard_normal(case["o"]).astype(dtype) if case["bias"] else None
    xl, wl = in_layout(x, case["layout"]), in_layout(w, case["layout"])
    y = ops.conv2d_forward(xl, wl, b, case["stride"], case["padding"])
    size = reference.conv2d_forward(np.abs(x), np.abs(w), None if b is None else np.abs(b), case["stride"],
                                    case["padding"])   # the scale of the terms (see below)
    assert_close(y, reference.conv2d_forward(x, w, b, case["stride"], case["padding"]), dtype, what="y",
                 scale=float(np.max(size)))
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = ops.conv2d_backward(in_layout(dy, case["layout"]), xl, wl, case["stride"], case["padding"])
    want = reference.conv2d_backward(dy, x, w, case["stride"], case["padding"])
    # Each gradient is a sum of products that may cancel towards zero (db of 3 x 6 x 2 random dy came
    # to 0.0033 from terms of size 1): float32's rounding is relative to the terms, so the tolerance is too.
    terms = reference.conv2d_backward(np.abs(dy), np.abs(x), np.abs(w), case["stride"], case["padding"])
    for g, r, t, name in zip(got, want, terms, ("dx", "dw", "db")):
        assert_close(g, r, dtype, what=name, scale=float(np.max(t)))


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), h=draw(st.integers(kh, 11)),
                w=draw(st.integers(kw, 11)), kernel=(kh, kw),
                stride=draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4)))),
                dtype=draw(dtypes), layout=draw(layouts), ties=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(case=pool_cases())
def test_maxpool2d_property(case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"], case["h"], case["w"])
    x = (rng.integers(0, 3, shape) if case["ties"] else rng.standard_normal(shape)).astype(case["dtype"])
    y, idx = ops.maxpool2d_forward(in_layout(x, case["layout"]), case["kernel"], case["stride"])
    y_ref, idx_ref = reference.maxpool2d_forward(x, case["kernel"], case["stride"])
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = rng.standard_normal(y.shape).astype(case["dtype"])
    assert_close(ops.maxpool2d_backward(in_layout(dy, case["layout"]), idx, shape),
                 reference.maxpool2d_backward(dy, idx_ref, shape), case["dtype"])


@SETTINGS
@given(n=st.integers(1, 40), fan_in=st.integers(1, 70), fan_out=st.integers(1, 40), dtype=dtypes, layout=layouts,
       seed=st.integers(0, 2**31))
def test_linear_property(n, fan_in, fan_out, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, fan_in)).astype(dtype)
    w = rng.standard_normal((fan_out, fan_in)).astype(dtype)
    b = rng.standard_normal(fan_out).astype(dtype)
    y = ops.linear_forward(in_layout(x, layout), in_layout(w, layout), b)
    # tolerances relative to the size of the summed terms, which may cancel (see test_conv2d_property)
    assert_close(y, reference.linear_forward(x, w, b), dtype, scale=float(np.max(np.abs(x) @ np.abs(w).T + np.abs(b))))
    dy = rng.standard_normal(y.shape).astype(dtype)
    terms = reference.linear_backward(np.abs(dy), np.abs(x), np.abs(w))
    for g, r, t in zip(ops.linear_backward(in_layout(dy, layout), x, w), reference.linear_backward(dy, x, w), terms):
        assert_close(g, r, dtype, scale=float(np.max(t)))


# ----------------------------------------------------------------------------------- junk in
EXPECTED_ERRORS = (TypeError, ValueError, OverflowError, MemoryError)

junk_arrays = st.builds(
    lambda shape, dtype: np.ones(shape, dtype=dtype),
    st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple),
    st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.float16, np.uint8, bool, np.complex64]),
)
junk = st.one_of(junk_arrays, st.none(), st.integers(-3, 6), st.sampled_from([2**31, 2**40, -2**62, 2**70]),
                 st.floats(allow_nan=True), st.text(max_size=3), st.tuples(st.integers(-1, 4), st.integers(-1, 4)),
                 st.lists(st.integers(0, 3), max_size=4))

OPS = [
    (ops.conv2d_forward, 5), (ops.conv2d_backward, 5), (ops.maxpool2d_forward, 3), (ops.maxpool2d_backward, 3),
    (ops.linear_forward, 3), (ops.linear_backward, 3), (ops.adam_update, 5), (ops.sgd_update, 4),
    (ops.softmax_cross_entropy, 2),
]


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(OPS), args=st.lists(junk, min_size=0, max_size=6))
def test_junk_arguments_raise_and_never_crash(op, args):
    function, _ = op
    try:
        function(*args)
    except EXPECTED_ERRORS:
        pass


@settings(max_examples=200, deadline=None)
@given(x=junk_arrays, w=junk_arrays, stride=st.integers(-1, 3), padding=st.integers(-1, 3))
def test_junk_conv_shapes_raise_and_never_crash(x, w, stride, padding):
    try:
        ops.conv2d_forward(x, w, None, stride, padding)
        ops.conv2d_backward(np.ones((1,)), x, w, stride, padding)
    except EXPECTED_ERRORS:
        pass
