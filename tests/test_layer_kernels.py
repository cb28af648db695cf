"""The kernels behind BatchNorm, Dropout, AvgPool and the activations: native against the NumPy
oracle on many shapes, at 1 and 3 threads, and every bad argument a clear error."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close
from maqueta import ops, reference

# planes of 9, 56, 100, 64 and 1023 values: batch norm's sums run in 32 interleaved chains
SHAPES = [(2, 3), (7, 5), (1, 4, 3, 3), (5, 3, 8, 7), (33, 16, 10, 10), (3, 64, 1, 1), (3, 2, 8, 8), (2, 3, 31, 33)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_matches_the_oracle(shape, dtype, threads, each_isa, rng):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    C = shape[1]
    w, b = rng.uniform(0.5, 2, C).astype(dtype), rng.standard_normal(C).astype(dtype)
    for weight, bias in ((w, b), (None, None)):
        y, mean, var = ops.batchnorm_forward(x, weight, bias, 1e-5)
        ry, rmean, rvar = reference.batchnorm_forward(x, weight, bias, 1e-5)
        assert_close(y, ry, dtype, what="y")
        assert_close(mean, rmean, dtype, what="mean", scale=np.abs(x).max())
        assert_close(var, rvar, dtype, what="var")
        dy = rng.standard_normal(shape).astype(dtype)
        got = ops.batchnorm_backward(dy, x, weight, mean, var, 1e-5)
        want = reference.batchnorm_backward(dy, x, weight, rmean, rvar, 1e-5)
        for name, a, e in zip(("dx", "dweight", "dbias"), got, want):
            if e is None:
                assert a is None
            else:
                assert_close(a, e, dtype, what=name, scale=np.abs(dy).sum() / C)
        scale, shift = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
        assert_close(ops.channel_affine(x, scale, shift), reference.channel_affine(x, scale, shift), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_dropout_masks_are_the_oracles_bit_for_bit(shape, dtype, p, threads, rng):
    x = rng.standard_normal(shape).astype(dtype)
    for channelwise in (False, True) if len(shape) == 4 else (False,):
        seed = int(rng.integers(0, 2**63))
        y, mask = ops.dropout_forward(x, p, seed, channelwise)
        ry, rmask = reference.dropout_forward(x, p, seed, channelwise)
        np.testing.assert_array_equal(mask, rmask)
        np.testing.assert_array_equal(y, ry)
        dy = rng.standard_normal(shape).astype(dtype)
        np.testing.assert_array_equal(ops.dropout_backward(dy, mask, p), reference.dropout_backward(dy, rmask, p))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 3, 8, 8), 2, None, 0), ((3, 2, 7, 9), 3, 2, 1), ((1, 1, 5, 5), (2, 3), 1, (1, 1)),
    ((4, 5, 6, 6), 6, None, 0), ((2, 16, 11, 13), 3, 1, 1), ((1, 2, 1, 1), 1, None, 0),
])
def test_avgpool_matches_the_oracle(shape, kernel, stride, padding, dtype, threads, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y = ops.avgpool2d_forward(x, kernel, stride, padding)
    assert_close(y, reference.avgpool2d_forward(x, kernel, stride, padding), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(ops.avgpool2d_backward(dy, x.shape, kernel, stride, padding),
                 reference.avgpool2d_backward(dy, x.shape, kernel, stride, padding), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,alpha", [("leaky_relu", 0.01), ("leaky_relu", -0.5), ("elu", 1.0), ("elu", 0.3),
                                        ("gelu", 0.0), ("gelu_tanh", 0.0)])
def test_activations_match_the_oracle(kind, alpha, dtype, threads, rng):
    x = np.concatenate([rng.standard_normal(70000) * 5, [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 700, -700]])
    x = x.astype(dtype).reshape(2, -1)
    with np.errstate(over="ignore"):
        y = ops.activation_forward(x, kind, alpha)
        assert_close(y, reference.activation_forward(x, kind, alpha), dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        assert_close(ops.activation_backward(dy, x, kind, alpha), reference.activation_backward(dy, x, kind, alpha),
                     dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 40_003])   # vector tails; the last in ranges over the threads
def test_vectorised_activations_give_the_plain_kernels_bits(n, dtype, threads, each_isa, rng):
    """The leaky ReLU (forward, backward) and ELU's gradient from its output run on each
    instruction set's micro-kernel: bit for bit the plain twin's one-value-at-a-time loop, special
    values included, and so is a convolution's and a dense layer's fused leaky ReLU (in place)."""
    from maqueta import plain
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-310, -1e-310]
    x = (rng.standard_normal(n) * 3).astype(dtype)
    x[:len(special)] = np.array(special, dtype)[:n]   # subnormals: 1e-45 in float32, 1e-310 in float64
    dy = rng.standard_normal(x.shape).astype(dtype)
    for alpha in (0.1, -0.5, 0.0):
        np.testing.assert_array_equal(ops.activation_forward(x, "leaky_relu", alpha),
                                      plain.activation_forward(x, "leaky_relu", alpha))
        np.testing.assert_array_equal(ops.activation_backward(dy, x, "leaky_relu", alpha),
                                      plain.activation_backward(dy, x, "leaky_relu", alpha))
    for alpha in (1.0, 0.3):
        np.testing.assert_array_equal(ops.activation_backward(dy, x, "elu_from_output", alpha),
                                      plain.activation_backward(dy, x, "elu_from_output", alpha))
    images = rng.standard_normal((2, 3, 9, 9)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    conv = ops.conv2d_forward(images, w, None, 1, 1)
    np.testing.assert_array_equal(ops.conv2d_forward(images, w, None, 1, 1, activation="leaky_relu", alpha=0.2),
                                  plain.activation_forward(conv, "leaky_relu", 0.2))
    flat, wd = images.reshape(2, -1), rng.standard_normal((7, 243)).astype(dtype)
    np.testing.assert_array_equal(ops.linear_forward(flat, wd, None, activation="leaky_relu", alpha=0.2),
                                  plain.activation_forward(ops.linear_forward(flat, wd, None), "leaky_relu", 0.2))


X4 = np.zeros((2, 3, 4, 4), np.float32)


@pytest.mark.parametrize("call,error,message", [
    (lambda: ops.batchnorm_forward(np.zeros((2, 3, 4)), None, None), ValueError, "must be 2-D [N, C] or 4-D"),
    (lambda: ops.batchnorm_forward(X4, np.ones(3, np.float32), None), ValueError, "both be given or both be None"),
    (lambda: ops.batchnorm_forward(X4, np.ones(4, np.float32), np.ones(4, np.float32)), ValueError,
     "weight must have shape (3,)"),
    (lambda: ops.batchnorm_forward(X4, np.ones(3), np.ones(3)), TypeError, "weight has dtype float64"),
    (lambda: ops.batchnorm_forward(X4, None, None, eps=0.0), ValueError, "eps must be in (0"),
    (lambda: ops.batchnorm_forward(X4, None, None, eps=float("nan")), ValueError, "eps must be in (0"),
    (lambda: ops.batchnorm_backward(X4[:1], X4, None, np.ones(3, np.float32), np.ones(3, np.float32)), ValueError,
     "dy must have the shape of x"),
    (lambda: ops.batchnorm_backward(X4, X4, None, np.ones(2, np.float32), np.ones(3, np.float32)), ValueError,
     "mean must have shape (3,)"),
    (lambda: ops.batchnorm_backward(X4, X4, None, np.ones(3, np.float32), np.ones(3, np.float32),
                                    relu_output=X4[:, :2]), ValueError, "relu_output must have the shape of dy"),
    (lambda: ops.batchnorm_backward(X4, X4, None, np.ones(3, np.float32), np.ones(3, np.float32),
                                    relu_output=X4.astype(np.float64)), TypeError, "relu_output has dtype float64"),
    (lambda: ops.batchnorm_backward(X4, X4, None, np.ones(3, np.float32), np.ones(3, np.float32),
                                    dx_out=X4, relu_output=X4), ValueError, "share memory"),
    (lambda: ops.channel_affine(X4, np.ones(3, np.float32), np.ones((3, 1), np.float32)), ValueError,
     "shift must have shape (3,)"),
    (lambda: ops.dropout_forward(X4, 1.5, 0), ValueError, "p must be a probability"),
    (lambda: ops.dropout_forward(X4, 0.5, -1), ValueError, "seed must be an int in [0, 2**64)"),
    (lambda: ops.dropout_forward(X4, 0.5, 2**64), ValueError, "seed must be an int in [0, 2**64)"),
    (lambda: ops.dropout_forward(np.zeros((3, 4), np.float32), 0.5, 1, channelwise=True), ValueError,
     "channelwise dropout needs x of shape [N, C, H, W]"),
    (lambda: ops.dropout_forward(X4, 0.5, 1, mask_out=np.zeros(X4.shape, np.int8)), TypeError,
     "mask_out must have dtype uint8"),
    (lambda: ops.dropout_backward(X4, np.ones((2, 4), np.uint8), 0.5), ValueError, "mask (2, 4) must have the shape"),
    (lambda: ops.dropout_backward(X4, np.ones((2, 3), bool), 0.5), TypeError, "mask must have dtype uint8"),
    (lambda: ops.avgpool2d_forward(X4, 5), ValueError, "is larger than the padded input"),
    (lambda: ops.avgpool2d_forward(X4, 2, padding=2), ValueError, "must be at most half the kernel_size"),
    (lambda: ops.avgpool2d_forward(X4, 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: ops.avgpool2d_forward(X4[0], 2), ValueError, "x must be 4-D"),
    (lambda: ops.avgpool2d_backward(np.zeros((2, 3, 3, 3), np.float32), X4.shape, 2), ValueError,
     "dy must have shape (2, 3, 2, 2)"),
    (lambda: ops.avgpool2d_backward(np.zeros((2, 3, 2, 2), np.float32), (2, 3, 4), 2), ValueError,
     "x_shape must be (N, C, H, W)"),
    (lambda: ops.activation_forward(X4, "swish"), ValueError, "kind must be 'leaky_relu'"),
    (lambda: ops.activation_forward(X4, "elu", float("inf")), ValueError, "alpha must be finite"),
    (lambda: ops.activation_backward(X4, X4[:1], "elu"), ValueError, "must have the shape of x"),
    (lambda: ops.activation_forward(X4.astype(np.int32), "elu"), TypeError, "float32 or float64"),
    (lambda: ops.activation_forward(X4, "elu", out=X4), ValueError, "share memory"),
])
def test_bad_arguments_are_clear_errors(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)
