"""The plain C++ tier (cpp/plain/, maqueta.plain), tested three ways on many shapes: plain = the
NumPy oracle, fast = plain, and plain's gradients = finite differences. Also: the plain kernels
refuse bad arguments as the fast ones do, and give the same bits at any thread count. The kernels
of the later layers (batch norm, dropout, average pooling, activations, RMSprop): test_plain_layers.py."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import maqueta
from maqueta import ops, plain, reference
from conftest import assert_close
from test_conv2d import SHAPES as CONV_SHAPES
from test_layers import numeric_gradient
from test_maxpool2d import CASES as POOL_CASES
from test_properties import conv_cases, in_layout

DTYPES = [np.float64, np.float32]
LINEAR_SHAPES = [(1, 1, 1), (4, 400, 120), (64, 120, 84), (3, 84, 10), (7, 5, 33)]   # (N, IN, OUT)


def conv_case(rng, shape, dtype):
    N, C, H, W, O, KH, KW, stride, padding = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, stride, padding


def conv_all(k, x, w, b, stride, padding, dy, relu):
    """Every output of one forward and backward through backend module k."""
    y = k.conv2d_forward(x, w, b, stride, padding, relu=relu)
    dx, dw, db = k.conv2d_backward(dy, x, w, stride, padding, relu_input=relu)
    return {"y": y, "dx": dx, "dw": dw, "db": db}


# ---- plain = oracle, and fast = plain, on the same inputs
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_conv2d_three_ways(shape, relu, dtype, rng):
    x, w, b, stride, padding = conv_case(rng, shape, dtype)
    y = plain.conv2d_forward(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = conv_all(plain, x, w, b, stride, padding, dy, relu)
    for name, value in got.items():
        assert value.dtype == dtype
        assert_close(value, conv_all(reference, x, w, b, stride, padding, dy, relu)[name], dtype, what=name)
        assert_close(conv_all(ops, x, w, b, stride, padding, dy, relu)[name], value, dtype, what="fast " + name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool2d_three_ways(case, dtype, rng):
    shape, kernel, stride = case
    x = rng.integers(-3, 4, shape).astype(dtype)            # small integers: many tied maxima
    y, idx = plain.maxpool2d_forward(x, kernel, stride)
    for k in (reference, ops):                               # ties: the first maximum wins in all three
        y_k, idx_k = k.maxpool2d_forward(x, kernel, stride)
        np.testing.assert_array_equal(y, y_k)
        np.testing.assert_array_equal(idx, idx_k)
    dy = rng.standard_normal(y.shape).astype(dtype)
    for relu_output in (None, y):
        dx = plain.maxpool2d_backward(dy, idx, shape, relu_output=relu_output)
        assert_close(dx, reference.maxpool2d_backward(dy, idx, shape, relu_output=relu_output), dtype)
        assert_close(ops.maxpool2d_backward(dy, idx, shape, relu_output=relu_output), dx, dtype)


def test_maxpool2d_nan_propagates():
    x = np.array([[[[1.0, np.nan], [np.nan, 5.0]]]])
    y, idx = plain.maxpool2d_forward(x, 2)
    assert np.isnan(y).all() and idx.item() == 1             # the first NaN, as np.argmax


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=str)
def test_linear_three_ways(shape, relu, dtype, rng):
    N, IN, OUT = shape
    x = rng.standard_normal((N, IN)).astype(dtype)
    w = rng.standard_normal((OUT, IN)).astype(dtype)
    b = rng.standard_normal(OUT).astype(dtype)
    dy = rng.standard_normal((N, OUT)).astype(dtype)
    y = plain.linear_forward(x, w, b, relu=relu)
    assert_close(y, reference.linear_forward(x, w, b, relu=relu), dtype, what="y")
    assert_close(ops.linear_forward(x, w, b, relu=relu), y, dtype, what="fast y")
    got = plain.linear_backward(dy, x, w, relu_input=relu)
    for name, p, r, f in zip(("dx", "dw", "db"), got, reference.linear_backward(dy, x, w, relu_input=relu),
                             ops.linear_backward(dy, x, w, relu_input=relu)):
        assert_close(p, r, dtype, what=name)
        assert_close(f, p, dtype, what="fast " + name)
    dx, dw, db = plain.linear_backward(dy, x, w, need_dx=False)   # relu_input changes only dx
    assert dx is None
    np.testing.assert_array_equal(dw, got[1])
    np.testing.assert_array_equal(db, got[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 10), (64, 10), (3, 1000)], ids=str)
def test_softmax_cross_entropy_three_ways(shape, dtype, rng):
    n, k = shape
    logits = (rng.standard_normal(shape) * 30).astype(dtype)   # large: the shift by the maximum matters
    targets = rng.integers(0, k, n)
    loss, grad = plain.softmax_cross_entropy(logits, targets)
    loss_ref, grad_ref = reference.softmax_cross_entropy(logits, targets)
    loss_fast, grad_fast = ops.softmax_cross_entropy(logits, targets)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert loss == pytest.approx(loss_ref, rel=rtol) and loss_fast == pytest.approx(loss, rel=rtol)
    assert_close(grad, grad_ref, dtype)
    assert_close(grad_fast, grad, dtype)


ADAM_SETTINGS = [dict(), dict(lr=0.01, beta1=0.95, beta2=0.99, eps=1e-7, bias_correction=False),
                 dict(lr=3e-3, weight_decay=0.1)]
SGD_SETTINGS = [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)]


def run_optimizer(k, kind, settings, p0, grads):
    p = p0.copy()
    state = [np.zeros_like(p), np.zeros_like(p)]
    for step, g in enumerate(grads, start=1):
        if kind == "adam":
            k.adam_update(p, g, state[0], state[1], step, **settings)
        else:
            k.sgd_update(p, g, state[0], **settings)
    return p


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,settings", [("adam", s) for s in ADAM_SETTINGS] + [("sgd", s) for s in SGD_SETTINGS],
                         ids=str)
@pytest.mark.parametrize("size", [1, 7, 40000])   # 40000: over the plain kernels' parallel threshold
def test_optimizers_three_ways(size, kind, settings, dtype, rng):
    p0 = rng.standard_normal(size).astype(dtype)
    grads = [rng.standard_normal(size).astype(dtype) for _ in range(4)]
    p = run_optimizer(plain, kind, settings, p0, grads)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    assert_close(p, run_optimizer(reference, kind, settings, p0, grads), dtype, rtol=rtol)
    assert_close(run_optimizer(ops, kind, settings, p0, grads), p, dtype, rtol=rtol)


@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_conv2d_three_ways_on_random_shapes(case):
    """Random sizes, kernels, strides, paddings, dtypes and memory layouts (test_properties' cases)."""
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["o"], case["c"], *case["kernel"])).astype(dtype)
    b = rng.standard_normal(case["o"]).astype(dtype) if case["bias"] else None
    stride, padding = case["stride"], case["padding"]
    y = reference.conv2d_forward(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = conv_all(plain, in_layout(x, case["layout"]), in_layout(w, case["layout"]), b, stride, padding, dy, False)
    expected = conv_all(reference, x, w, b, stride, padding, dy, False)
    fast = conv_all(ops, x, w, b, stride, padding, dy, False)
    for name in got:
        assert_close(got[name], expected[name], dtype, what=name)
        assert_close(fast[name], got[name], dtype, what="fast " + name)


# ---- finite differences: plain's gradients are the derivatives of plain's forward
@pytest.mark.parametrize("shape", [(2, 2, 5, 5, 3, 3, 3, 1, 0), (1, 2, 6, 5, 2, 3, 2, 2, 1),
                                   (2, 1, 4, 4, 1, 3, 3, 1, 0)], ids=str)   # the last: the guide's 4x4, 3x3
def test_conv2d_finite_differences(shape, rng):
    x, w, b, stride, padding = conv_case(rng, shape, np.float64)
    y = plain.conv2d_forward(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(plain.conv2d_forward(x, w, b, stride, padding) * dy))

    dx, dw, db = plain.conv2d_backward(dy, x, w, stride, padding)
    for name, got, wrt in (("dx", dx, x), ("dw", dw, w), ("db", db, b)):
        assert_close(got, numeric_gradient(loss, wrt), rtol=1e-7, what=name)


def test_maxpool2d_and_linear_finite_differences(rng):
    x = rng.standard_normal((2, 2, 7, 6))                     # distinct values: no ties to step across
    y, idx = plain.maxpool2d_forward(x, 3, 2)
    dy = rng.standard_normal(y.shape)
    dx = plain.maxpool2d_backward(dy, idx, x.shape)
    assert_close(dx, numeric_gradient(lambda: float(np.sum(plain.maxpool2d_forward(x, 3, 2)[0] * dy)), x),
                 rtol=1e-7, what="pool dx")
    a, w, b = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    dz = rng.standard_normal((3, 4))
    dx, dw, db = plain.linear_backward(dz, a, w)

    def loss():
        return float(np.sum(plain.linear_forward(a, w, b) * dz))

    for name, got, wrt in (("dx", dx, a), ("dw", dw, w), ("db", db, b)):
        assert_close(got, numeric_gradient(loss, wrt), rtol=1e-7, what=name)
    logits, targets = rng.standard_normal((4, 6)), np.array([0, 5, 2, 2])
    _, grad = plain.softmax_cross_entropy(logits, targets)
    assert_close(grad, numeric_gradient(lambda: plain.softmax_cross_entropy(logits, targets)[0], logits),
                 rtol=1e-7, what="P - Y")


# ---- determinism, outputs, errors
def test_same_bits_at_any_thread_count(rng):
    x, w, b, stride, padding = conv_case(rng, (5, 3, 12, 11, 7, 3, 3, 1, 1), np.float32)
    dy = rng.standard_normal((5, 7, 12, 11)).astype(np.float32)
    before = maqueta.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            maqueta.set_num_threads(n)
            results.append(conv_all(plain, x, w, b, stride, padding, dy, True))
    finally:
        maqueta.set_num_threads(before)
    for other in results[1:]:
        for name in other:
            np.testing.assert_array_equal(other[name], results[0][name], err_msg=name)


def test_writes_into_given_outputs(rng):
    x, w, b, stride, padding = conv_case(rng, (2, 3, 8, 8, 4, 3, 3, 1, 1), np.float64)
    out = np.full((2, 4, 8, 8), np.nan)
    assert plain.conv2d_forward(x, w, b, stride, padding, out=out) is out
    assert_close(out, reference.conv2d_forward(x, w, b, stride, padding))
    dy = rng.standard_normal(out.shape)
    dx_out, dw_out, db_out = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    dx, dw, db = plain.conv2d_backward(dy, x, w, stride, padding, dx_out=dx_out, dw_out=dw_out, db_out=db_out)
    assert dx is dx_out and dw is dw_out and db is db_out
    dx, _, _ = plain.conv2d_backward(dy, x, w, stride, padding, need_dx=False)
    assert dx is None


@pytest.mark.parametrize("call", [
    lambda k: k.conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((3, 1, 3, 3))),
    lambda k: k.conv2d_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3), np.float32)),
    lambda k: k.maxpool2d_forward(np.zeros((1, 1, 2, 2)), 3),
    lambda k: k.maxpool2d_backward(np.zeros((1, 1, 1, 1)), np.array([[[[9]]]]), (1, 1, 2, 2)),
    lambda k: k.linear_backward(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((5, 4))),
    lambda k: k.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
    lambda k: k.adam_update(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), 0),
    lambda k: k.sgd_update(np.zeros(3), np.zeros(3), None, 0.1, momentum=0.9),
    lambda k: k.rmsprop_update(np.zeros(3), np.zeros(3), np.zeros(3), None, None, 0.1, momentum=0.9),
    lambda k: k.batchnorm_forward(np.zeros((2, 3)), np.ones(2), np.ones(2)),
    lambda k: k.batchnorm_backward(np.zeros((2, 3)), np.zeros((2, 3)), None, np.zeros(3), np.zeros(2)),
    lambda k: k.channel_affine(np.zeros((2, 3, 1, 1)), np.ones(3), np.ones(3, np.float32)),
    lambda k: k.dropout_forward(np.zeros((2, 3)), 0.5, 1, channelwise=True),
    lambda k: k.dropout_backward(np.zeros((2, 3)), np.ones(3, np.uint8), 0.5),
    lambda k: k.avgpool2d_forward(np.zeros((1, 1, 4, 4)), 3, padding=2),
    lambda k: k.activation_backward(np.zeros(3), np.zeros(3), "swish"),
], ids=["conv channels", "conv dtype", "pool kernel", "pool index", "linear dy", "targets", "adam step",
        "sgd velocity", "rmsprop buffer", "bn weight", "bn var", "affine dtype", "dropout2d rank", "dropout mask",
        "avgpool padding", "activation kind"])
def test_refuses_what_the_fast_kernels_refuse(call):
    with pytest.raises((TypeError, ValueError)) as fast:
        call(ops)
    with pytest.raises(type(fast.value)) as slow:
        call(plain)
    assert str(slow.value) == str(fast.value)
