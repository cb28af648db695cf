"""Every bad argument gives a TypeError or ValueError that names it and shows the shapes."""
from __future__ import annotations

import numpy as np
import pytest

from maqueta import _core, ops

f32 = np.float32
X = np.zeros((2, 1, 8, 8))
W = np.zeros((3, 1, 3, 3))
B = np.zeros(3)
DY = np.zeros((2, 3, 6, 6))


def raises(exc, *fragments):
    """pytest.raises that also checks the message names each fragment."""
    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self.ctx.__exit__(*args)
            message = str(self.info.value)
            for fragment in fragments:
                assert fragment in message, f"{fragment!r} not in {message!r}"
            return handled
    return Check()


# ----------------------------------------------------------------------------------- conv2d
@pytest.mark.parametrize("x,w,fragments", [
    (np.zeros((1, 8, 8)), W, ["x must be 4-D", "(1, 8, 8)"]),
    (X, np.zeros((3, 9)), ["w must be 4-D", "(3, 9)"]),
    (X, np.zeros((3, 2, 3, 3)), ["w has 2 input channels but x has 1", "(2, 1, 8, 8)", "(3, 2, 3, 3)"]),
    (np.zeros((0, 1, 8, 8)), W, ["x has an empty dimension", "(0, 1, 8, 8)"]),
    (X, np.zeros((0, 1, 3, 3)), ["w has an empty dimension"]),
    (np.zeros((2, 1, 2, 8)), W, ["kernel (3, 3) is larger than the padded input (2, 8)"]),
])
def test_conv_shape_errors(x, w, fragments):
    with raises(ValueError, *fragments):
        ops.conv2d_forward(x, w)


def test_conv_kernel_may_exceed_image_with_padding():
    assert ops.conv2d_forward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), padding=1).shape == (1, 1, 2, 2)


@pytest.mark.parametrize("kwargs,exc,fragments", [
    (dict(stride=0), ValueError, ["stride must be >= 1"]),
    (dict(stride=-2), ValueError, ["stride must be >= 1"]),
    (dict(stride=(1, 0)), ValueError, ["stride"]),
    (dict(stride=(1, 2, 3)), ValueError, ["stride must be an int or a pair"]),
    (dict(stride=1.5), TypeError, ["stride must be an int"]),
    (dict(stride=True), TypeError, ["stride must be an int"]),
    (dict(stride="2"), TypeError, ["stride"]),
    (dict(padding=-1), ValueError, ["padding must be >= 0"]),
    (dict(padding=(0, -3)), ValueError, ["padding must be >= 0"]),
    (dict(padding=2 ** 40), ValueError, ["padding[0] is too large"]),
    (dict(padding=2 ** 29), ValueError, ["too large"]),
    (dict(stride=2 ** 63), (ValueError, OverflowError, TypeError), []),
])
def test_conv_hyperparameter_errors(kwargs, exc, fragments):
    with raises(exc, *fragments):
        ops.conv2d_forward(X, W, **kwargs)


@pytest.mark.parametrize("x,w,b,exc,fragments", [
    (X.astype(np.int64), W, None, TypeError, ["x must have dtype float32 or float64, got int64"]),
    (X.astype(np.float16), W, None, TypeError, ["float16"]),
    (X.astype(np.complex128), W, None, TypeError, ["complex128"]),
    (X.astype(f32), W, None, TypeError, ["w has dtype float64 but x has float32"]),
    (X, W, B.astype(f32), TypeError, ["b has dtype float32 but x has float64"]),
    (X.tolist(), W, None, TypeError, ["x must be a numpy.ndarray, got list"]),
    (X, "w", None, TypeError, ["w must be a numpy.ndarray, got str"]),
    (X, W, [0.0, 0.0, 0.0], TypeError, ["b must be a numpy.ndarray"]),
    (X, W, np.zeros(4), ValueError, ["b must have shape (3,)", "(4,)"]),
    (X, W, np.zeros((3, 1)), ValueError, ["b must have shape (3,)", "(3, 1)"]),
    (X.astype(bool), W, None, TypeError, ["bool"]),
    (np.zeros((2, 1, 8, 8), dtype=object), W, None, TypeError, ["object"]),
])
def test_conv_type_errors(x, w, b, exc, fragments):
    with raises(exc, *fragments):
        ops.conv2d_forward(x, w, b)


@pytest.mark.parametrize("dy,fragments", [
    (np.zeros((2, 3, 6, 5)), ["dy must have the output's shape (2, 3, 6, 6)", "(2, 3, 6, 5)"]),
    (np.zeros((2, 3, 36)), ["dy must be 4-D"]),
    (np.zeros((1, 3, 6, 6)), ["dy must have the output's shape"]),
])
def test_conv_backward_shape_errors(dy, fragments):
    with raises(ValueError, *fragments):
        ops.conv2d_backward(dy, X, W)


def test_conv_backward_dtype_errors():
    with raises(TypeError, "x has dtype float32 but dy has float64"):
        ops.conv2d_backward(DY, X.astype(f32), W)
    with raises(TypeError, "dy must have dtype float32 or float64"):
        ops.conv2d_backward(DY.astype(np.int32), X, W)


# ----------------------------------------------------------------------------------- max-pool
@pytest.mark.parametrize("args,exc,fragments", [
    ((np.zeros((1, 8, 8)), 2), ValueError, ["x must be 4-D", "(1, 8, 8)"]),
    ((np.zeros((1, 1, 1, 8)), 2), ValueError, ["kernel_size (2, 2) is larger than the input (1, 8)"]),
    ((X, 0), ValueError, ["kernel_size must be >= 1"]),
    ((X, 2, 0), ValueError, ["stride must be >= 1"]),
    ((X, (2, 2, 2)), ValueError, ["kernel_size must be an int or a pair"]),
    ((X, 2.0), TypeError, ["kernel_size must be an int"]),
    ((X.astype(np.int8), 2), TypeError, ["int8"]),
    ((np.zeros((1, 0, 4, 4)), 2), ValueError, ["empty dimension"]),
    ((X, 2 ** 40), ValueError, ["too large"]),
])
def test_pool_forward_errors(args, exc, fragments):
    with raises(exc, *fragments):
        ops.maxpool2d_forward(*args)


def test_pool_backward_errors():
    y, idx = ops.maxpool2d_forward(X, 2)
    with raises(TypeError, "indices must have dtype int64"):
        ops.maxpool2d_backward(y, idx.astype(np.int32), X.shape)
    with raises(TypeError, "indices must have dtype int64"):
        ops.maxpool2d_backward(y, idx.astype(np.float64), X.shape)
    with raises(ValueError, "indices must have the shape of dy", "(2, 1, 4, 4)", "(2, 1, 4, 3)"):
        ops.maxpool2d_backward(y, idx[..., :3], X.shape)
    with raises(ValueError, "x_shape must have 4 entries"):
        ops.maxpool2d_backward(y, idx, (2, 1, 8))
    with raises(TypeError, "x_shape must be a sequence of 4 ints"):
        ops.maxpool2d_backward(y, idx, "abcd")
    with raises(ValueError, "does not match dy"):
        ops.maxpool2d_backward(y, idx, (3, 1, 8, 8))
    with raises(ValueError, "dy (2, 1, 4, 4) has more rows or columns than x_shape"):
        ops.maxpool2d_backward(y, idx, (2, 1, 3, 8))
    with raises(ValueError, "x_shape entries must be in"):
        ops.maxpool2d_backward(y, idx, (2, 1, 0, 8))
    with raises(ValueError, "x_shape entries must be in"):
        ops.maxpool2d_backward(y, idx, (2, 1, 2 ** 40, 8))
    bad = idx.copy()
    bad[1, 0, 3, 3] = 64
    with raises(ValueError, "indices holds 64", "outside the plane [0, H*W = 64)"):
        ops.maxpool2d_backward(y, bad, X.shape)
    bad[1, 0, 3, 3] = -1
    with raises(ValueError, "indices holds -1"):
        ops.maxpool2d_backward(y, bad, X.shape)
    with raises(TypeError, "dy"):
        ops.maxpool2d_backward(y.astype(np.int64), idx, X.shape)


def test_pool_backward_accepts_ndarray_shape():
    y, idx = ops.maxpool2d_forward(X, 2)
    assert ops.maxpool2d_backward(y, idx, np.array(X.shape)).shape == X.shape


# ----------------------------------------------------------------------------------- linear
def test_linear_errors():
    x, w = np.zeros((4, 5)), np.zeros((3, 5))
    with raises(ValueError, "w has 6 input features but x has 5", "(4, 5)", "(3, 6)"):
        ops.linear_forward(x, np.zeros((3, 6)))
    with raises(ValueError, "x must be 2-D [N, IN]", "(4, 5, 1)"):
        ops.linear_forward(x[..., None], w)
    with raises(ValueError, "b must have shape (3,)"):
        ops.linear_forward(x, w, np.zeros(5))
    with raises(TypeError, "w has dtype float32 but x has float64"):
        ops.linear_forward(x, w.astype(f32))
    with raises(ValueError, "dy must have shape (4, 3)", "(4, 2)"):
        ops.linear_backward(np.zeros((4, 2)), x, w)
    with raises(ValueError, "empty dimension"):
        ops.linear_forward(np.zeros((0, 5)), w)


# ----------------------------------------------------------------------------------- optimizers
def adam_args(n=6, dtype=np.float64):
    return [np.zeros(n, dtype) for _ in range(4)]


@pytest.mark.parametrize("mutate,exc,fragments", [
    (lambda a: a.__setitem__(0, np.zeros(12)[::2]), ValueError, ["param is updated in place, so it must be C-contiguous"]),
    (lambda a: a.__setitem__(2, np.zeros(12)[::2]), ValueError, ["m is updated in place"]),
    (lambda a: a.__setitem__(3, np.zeros((6, 2)).T[0]), ValueError, ["v is updated in place"]),
    (lambda a: a.__setitem__(0, np.zeros(6, np.float32)), TypeError, ["grad has dtype float64 but param has float32"]),
    (lambda a: a.__setitem__(2, np.zeros(6, np.float32)), TypeError, ["m has dtype float32 but param has float64"]),
    (lambda a: a.__setitem__(3, np.zeros(7)), ValueError, ["v must have the shape of param", "(6,)", "(7,)"]),
    (lambda a: a.__setitem__(1, np.zeros((2, 3))), ValueError, ["grad must have the shape of param"]),
    (lambda a: a.__setitem__(3, a[2]), ValueError, ["m and v share memory"]),
    (lambda a: a.__setitem__(2, a[0]), ValueError, ["param and m share memory"]),
    (lambda a: a.__setitem__(0, np.zeros(6, np.int32)), TypeError, ["param must have dtype float32 or float64"]),
    (lambda a: a.__setitem__(1, [0.0] * 6), TypeError, ["grad must be a numpy.ndarray"]),
])
def test_adam_operand_errors(mutate, exc, fragments):
    args = adam_args()
    mutate(args)
    with raises(exc, *fragments):
        ops.adam_update(*args, step=1)


def test_adam_rejects_readonly_state():
    p, g, m, v = adam_args()
    m.setflags(write=False)
    with raises(ValueError, "m is updated in place but is read-only"):
        ops.adam_update(p, g, m, v, 1)


def test_adam_overlapping_views_rejected():
    buf = np.zeros(10)
    with raises(ValueError, "share memory"):
        ops.adam_update(buf[:6], np.zeros(6), buf[4:], np.zeros(6), 1)


@pytest.mark.parametrize("kwargs,exc,fragments", [
    (dict(step=0), ValueError, ["step must be >= 1"]),
    (dict(step=1.0), TypeError, ["step must be an int"]),
    (dict(step=1, lr=-1.0), ValueError, ["lr must be in"]),
    (dict(step=1, lr=float("nan")), ValueError, ["lr must be in"]),
    (dict(step=1, beta1=1.0), ValueError, ["beta1 must be in [0"]),
    (dict(step=1, beta2=-0.1), ValueError, ["beta2 must be in"]),
    (dict(step=1, eps=-1e-8), ValueError, ["eps must be in"]),
    (dict(step=1, weight_decay=float("inf")), ValueError, ["weight_decay must be in"]),
])
def test_adam_hyperparameter_errors(kwargs, exc, fragments):
    with raises(exc, *fragments):
        ops.adam_update(*adam_args(), **kwargs)


def test_sgd_errors():
    p, g, vel = np.zeros(4), np.zeros(4), np.zeros(4)
    with raises(ValueError, "velocity is required when momentum is not 0"):
        ops.sgd_update(p, g, None, 0.1, momentum=0.9)
    with raises(ValueError, "velocity is updated in place"):
        ops.sgd_update(p, g, np.zeros(8)[::2], 0.1, momentum=0.9)
    with raises(ValueError, "param and velocity share memory"):
        ops.sgd_update(p, g, p, 0.1, momentum=0.9)
    with raises(ValueError, "lr must be in"):
        ops.sgd_update(p, g, vel, -0.1)
    with raises(ValueError, "nesterov momentum needs momentum > 0"):
        ops.sgd_update(p, g, vel, 0.1, nesterov=True)
    with raises(ValueError, "param is updated in place but is read-only"):
        ro = np.zeros(4)
        ro.setflags(write=False)
        ops.sgd_update(ro, g, vel, 0.1)


def test_failed_update_leaves_state_untouched():
    p, g, m, v = np.ones(6), np.ones(6), np.ones(6), np.ones(6)
    with pytest.raises(ValueError):
        ops.adam_update(p, g, m, v[:5].copy(), 1)
    assert (p == 1).all() and (m == 1).all()


# ----------------------------------------------------------------------------------- runtime
def test_thread_count_errors():
    import maqueta
    with raises(ValueError, "set_num_threads needs n >= 1, got 0"):
        maqueta.set_num_threads(0)
    with raises(TypeError, "set_num_threads needs an int"):
        maqueta.set_num_threads(2.5)


def test_private_switches_reject_unknown_names():
    with raises(ValueError, "not available"):
        _core._set_isa("avx9000")
    with raises(ValueError, "conv algorithm must be"):
        _core._set_conv_algo("fft")


def test_binding_called_directly_checks_too():
    with raises(ValueError, "stride[0] must be >= 1"):
        _core.conv2d_forward(X, W, None, 0, 1, 0, 0)
    with raises(ValueError, "padding[1] must be >= 0"):
        _core.conv2d_forward(X, W, None, 1, 1, 0, -1)
    with raises(ValueError, "kernel_size[0] must be >= 1"):
        _core.maxpool2d_forward(X, -1, 2, 2, 2)


# ----------------------------------------------------------------------------------- found in review
def test_sizes_that_overflow_the_workspace_raise():
    """A huge stride keeps the output 1x1 while a huge padding makes the padded input enormous:
    the workspace size must not wrap to a small buffer (it used to, and then wrote past it)."""
    import maqueta
    S, P = 2**31 - 1, 2**28 - 1
    x, w = np.zeros((8, 1, 2, 2)), np.zeros((16, 1, 1, 1))
    before = maqueta.get_num_threads()
    try:
        for threads in (1, 2, 8):
            maqueta.set_num_threads(threads)
            with pytest.raises((MemoryError, ValueError)):
                _core.conv2d_backward(np.zeros((8, 16, 1, 1)), x, w, S, S, P, P, False)
            with pytest.raises((MemoryError, ValueError)):
                _core.conv2d_forward(x, w, None, S, S, P, P)
    finally:
        maqueta.set_num_threads(before)


def test_misaligned_arrays():
    raw = bytearray(8 * 2 * 1 * 6 * 6 + 1)
    x = np.frombuffer(raw, np.float64, 2 * 36, offset=1).reshape(2, 1, 6, 6)
    assert not x.flags.aligned
    w = np.ones((3, 1, 3, 3))
    np.testing.assert_array_equal(ops.conv2d_forward(x, w), ops.conv2d_forward(np.ascontiguousarray(x), w))
    p = np.frombuffer(bytearray(8 * 4 + 1), np.float64, 4, offset=1)
    assert p.flags.writeable and not p.flags.aligned
    with raises(ValueError, "must be aligned"):
        ops.sgd_update(p, np.zeros(4), None, 0.1)


SMALLER_TEAM = """
import numpy as np, maqueta
from maqueta import ops
rng = np.random.default_rng(0)
x = rng.standard_normal((9, 6, 14, 14)); w = rng.standard_normal((16, 6, 5, 5)); dy = rng.standard_normal((9, 16, 10, 10))
p = rng.standard_normal(70000); g = rng.standard_normal(70000); m = np.zeros(70000); v = np.zeros(70000)
a = np.maximum(rng.standard_normal((9, 6, 28, 28)), 0)
def run():
    y, i = ops.maxpool2d_forward(a, 2)
    q, mm, vv = p.copy(), m.copy(), v.copy()
    ops.adam_update(q, g, mm, vv, 1)
    return [ops.conv2d_forward(x, w), *ops.conv2d_backward(dy, x, w), y, i, q]
maqueta.set_num_threads(1)
one = run()
maqueta.set_num_threads(4)   # asked for 4; OMP_THREAD_LIMIT lets 1 run
four = run()
for a_, b_ in zip(one, four):
    np.testing.assert_allclose(a_, b_, rtol=1e-12, atol=1e-12)
print("ok")
"""


@pytest.mark.skipif(not _core.openmp_enabled(), reason="needs OpenMP")
def test_a_smaller_team_than_asked_still_does_all_the_work():
    import os
    import subprocess
    import sys
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    out = subprocess.run([sys.executable, "-c", SMALLER_TEAM], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
