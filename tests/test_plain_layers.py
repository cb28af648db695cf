"""The plain C++ tier's kernels for the layers that came after it (cpp/plain/normalization.cpp,
dropout.cpp, avgpool2d.cpp, activation.cpp, rmsprop.cpp), tested as test_plain.py tests the first
ones: plain = the NumPy oracle and fast = plain on many shapes and both dtypes, dropout's masks bit
for bit, plain's gradients = finite differences, the same bits at any thread count. Their bad
arguments: test_plain.py and test_plain_bad_input.py; a model with every such layer training alike
on plain and native: test_backends.py."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta
from conftest import assert_close
from maqueta import ops, plain, reference
from test_layers import numeric_gradient

DTYPES = [np.float64, np.float32]


# ---- plain = oracle, and fast = plain, on the same inputs
NORM_SHAPES = [(1, 3), (2, 1), (7, 5), (1, 4, 3, 3), (5, 3, 8, 7), (3, 64, 1, 1), (9, 16, 10, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
def test_batchnorm_three_ways(shape, affine, dtype, rng):
    """(1, 3): one value per channel, var 0 (the layer refuses it; the kernel gives y = bias, dx = 0)."""
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    C = shape[1]
    w, b = (rng.uniform(0.5, 2, C).astype(dtype), rng.standard_normal(C).astype(dtype)) if affine else (None, None)
    dy = rng.standard_normal(shape).astype(dtype)
    y, mean, var = plain.batchnorm_forward(x, w, b, 1e-5)
    got = plain.batchnorm_backward(dy, x, w, mean, var, 1e-5)
    for k, name in ((reference, "oracle"), (ops, "fast")):
        y_k, mean_k, var_k = k.batchnorm_forward(x, w, b, 1e-5)
        for what, a, e in (("y", y, y_k), ("mean", mean, mean_k), ("var", var, var_k)):
            assert a.dtype == dtype
            assert_close(a, e, dtype, what=f"{name} {what}", scale=np.abs(x).max() if what == "mean" else 0)
        for what, a, e in zip(("dx", "dweight", "dbias"), got, k.batchnorm_backward(dy, x, w, mean, var, 1e-5)):
            assert (a is None) == (e is None) == (not affine and what != "dx")
            if e is not None:
                assert_close(a, e, dtype, what=f"{name} {what}", scale=np.abs(dy).sum() / C)
        scale, shift = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
        assert_close(plain.channel_affine(x, scale, shift), k.channel_affine(x, scale, shift), dtype, what="affine")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(1,), (2, 3), (7, 5), (1, 1, 1, 1), (5, 3, 8, 7), (33, 16, 10, 10)], ids=str)
def test_dropout_masks_are_the_fast_ones_bit_for_bit(shape, p, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for channelwise in (False, True) if len(shape) == 4 else (False,):
        seed = int(rng.integers(0, 2**64, dtype=np.uint64))
        y, mask = plain.dropout_forward(x, p, seed, channelwise)
        assert mask.dtype == np.uint8 and mask.shape == shape[:2 if channelwise else len(shape)]
        for k in (reference, ops):
            y_k, mask_k = k.dropout_forward(x, p, seed, channelwise)
            np.testing.assert_array_equal(mask, mask_k)
            np.testing.assert_array_equal(y, y_k)
            np.testing.assert_array_equal(plain.dropout_backward(dy, mask, p), k.dropout_backward(dy, mask, p))


AVGPOOL_CASES = [((2, 3, 8, 8), 2, None, 0), ((3, 2, 7, 9), 3, 2, 1), ((1, 1, 5, 5), (2, 3), 1, (1, 1)),
                 ((4, 5, 6, 6), 6, None, 0), ((2, 16, 11, 13), 3, 1, 1), ((1, 2, 1, 1), 1, None, 0),
                 ((2, 3, 5, 4), (5, 4), None, 0), ((1, 1, 3, 3), 3, 1, 1), ((2, 2, 9, 7), (4, 2), (3, 1), (2, 1))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=str)
def test_avgpool2d_three_ways(case, dtype, rng):
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(dtype)
    y = plain.avgpool2d_forward(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = plain.avgpool2d_backward(dy, shape, kernel, stride, padding)
    for k in (reference, ops):
        assert_close(y, k.avgpool2d_forward(x, kernel, stride, padding), dtype, what="y")
        assert_close(dx, k.avgpool2d_backward(dy, shape, kernel, stride, padding), dtype, what="dx")


ACTIVATIONS = [("leaky_relu", 0.01), ("leaky_relu", -0.5), ("elu", 1.0), ("elu", 0.3), ("gelu", 0.0),
               ("gelu_tanh", 0.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,alpha", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("size", [1, 9, 40000])   # 40000: over the plain kernels' parallel threshold
def test_activations_three_ways(size, kind, alpha, dtype, rng):
    edges = [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 700, -700]
    x = np.concatenate([edges, rng.standard_normal(size) * 5])[:size].astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(over="ignore"):
        y, dx = plain.activation_forward(x, kind, alpha), plain.activation_backward(dy, x, kind, alpha)
        for k in (reference, ops):
            assert_close(y, k.activation_forward(x, kind, alpha), dtype, what="y")
            assert_close(dx, k.activation_backward(dy, x, kind, alpha), dtype, what="dx")


RMSPROP_SETTINGS = [dict(lr=0.01), dict(lr=0.01, alpha=0.9, centered=True), dict(lr=0.01, momentum=0.9),
                    dict(lr=3e-3, alpha=0.95, eps=1e-6, weight_decay=0.1, momentum=0.5, centered=True)]


def run_rmsprop(k, settings, p0, grads):
    settings = dict(settings)
    centered = settings.pop("centered", False)
    p, square_avg = p0.copy(), np.zeros_like(p0)
    grad_avg = np.zeros_like(p0) if centered else None
    buffer = np.zeros_like(p0) if settings.get("momentum") else None
    for g in grads:
        k.rmsprop_update(p, g, square_avg, grad_avg, buffer, **settings)
    return p


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("settings", RMSPROP_SETTINGS, ids=str)
@pytest.mark.parametrize("size", [1, 7, 40000])   # 40000: over the parallel threshold
def test_rmsprop_three_ways(size, settings, dtype, rng):
    p0 = rng.standard_normal(size).astype(dtype)
    grads = [rng.standard_normal(size).astype(dtype) for _ in range(4)]
    p = run_rmsprop(plain, settings, p0, grads)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    assert_close(p, run_rmsprop(reference, settings, p0, grads), dtype, rtol=rtol)
    assert_close(run_rmsprop(ops, settings, p0, grads), p, dtype, rtol=rtol)


# ---- finite differences: plain's gradients are the derivatives of plain's forward
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 3, 4)], ids=str)
def test_batchnorm_finite_differences(shape, rng):
    x, dy = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    w, b = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])

    def loss():
        return float(np.sum(plain.batchnorm_forward(x, w, b)[0] * dy))

    _, mean, var = plain.batchnorm_forward(x, w, b)
    dx, dw, db = plain.batchnorm_backward(dy, x, w, mean, var)
    for name, got, wrt in (("dx", dx, x), ("dweight", dw, w), ("dbias", db, b)):
        assert_close(got, numeric_gradient(loss, wrt), rtol=1e-7, what=name)


def test_avgpool_dropout_activation_finite_differences(rng):
    x = rng.standard_normal((2, 2, 7, 6))
    for kernel, stride, padding in ((3, 2, 1), ((2, 3), 1, 0), ((7, 6), None, 0)):
        dy = rng.standard_normal(plain.avgpool2d_forward(x, kernel, stride, padding).shape)
        dx = plain.avgpool2d_backward(dy, x.shape, kernel, stride, padding)
        f = lambda: float(np.sum(plain.avgpool2d_forward(x, kernel, stride, padding) * dy))   # noqa: E731
        assert_close(dx, numeric_gradient(f, x), rtol=1e-7, what=f"avgpool {kernel}")
    for channelwise in (False, True):    # the same seed gives the same mask at every evaluation
        dy = rng.standard_normal(x.shape)
        _, mask = plain.dropout_forward(x, 0.4, 77, channelwise)
        f = lambda: float(np.sum(plain.dropout_forward(x, 0.4, 77, channelwise)[0] * dy))   # noqa: E731
        assert_close(plain.dropout_backward(dy, mask, 0.4), numeric_gradient(f, x), rtol=1e-7, what="dropout")
    a = rng.standard_normal((3, 17)) * 2
    a[np.abs(a) < 1e-3] = 0.5                  # away from the kinks of leaky_relu and elu at 0
    for kind, alpha in ACTIVATIONS:
        dy = rng.standard_normal(a.shape)
        f = lambda: float(np.sum(plain.activation_forward(a, kind, alpha) * dy))   # noqa: E731
        assert_close(plain.activation_backward(dy, a, kind, alpha), numeric_gradient(f, a), rtol=1e-7, what=kind)


# ---- determinism, and no kernel missing
def test_layer_kernels_give_the_same_bits_at_any_thread_count(rng):
    x = rng.standard_normal((6, 5, 70, 70)).astype(np.float32)   # over every parallel threshold
    flat, params = x.ravel()[:40000].copy(), rng.standard_normal(40000).astype(np.float32)

    def run():
        y, mean, var = plain.batchnorm_forward(x, None, None)
        p, sq, avg, buf = params.copy(), np.zeros_like(params), np.zeros_like(params), np.zeros_like(params)
        plain.rmsprop_update(p, flat, sq, avg, buf, 0.01, momentum=0.9)
        return [y, mean, var, plain.batchnorm_backward(x, x, None, mean, var)[0], plain.channel_affine(x, mean, var),
                *plain.dropout_forward(x, 0.3, 9, True), *plain.dropout_forward(x, 0.3, 9),
                plain.avgpool2d_forward(x, 3, 2, 1), plain.avgpool2d_backward(x, (6, 5, 139, 139), 3, 2, 1),
                plain.activation_forward(x, "gelu"), plain.activation_backward(x, x, "elu", 0.5), p]

    before = maqueta.get_num_threads()
    try:
        results = [(maqueta.set_num_threads(n), run())[1] for n in (1, 2, 3)]
    finally:
        maqueta.set_num_threads(before)
    for other in results[1:]:
        for k, (a, b) in enumerate(zip(other, results[0])):
            np.testing.assert_array_equal(a, b, err_msg=f"result {k}")


def test_plain_has_every_kernel():
    """set_backend("plain") finds every function a layer or optimizer asks the backend for."""
    assert plain.__all__ == ops.__all__ and all(callable(getattr(plain, name)) for name in ops.__all__)
