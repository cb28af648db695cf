"""A ReLU after a BatchNorm2D/1D runs inside the batch norm's kernels (training and evaluation), and
its gradient in the layer after it, as after a Conv2D, or, where that layer cannot apply it (a
global average pool, a dropout), in the batch norm's backward: the kernels against BN then ReLU,
and models with fusion on against fusion off, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta import ops, plain, reference
from maqueta.executor import Executor
from conftest import assert_close

TIERS = [ops, plain, reference]
TIER_IDS = ["native", "plain", "reference"]


@pytest.mark.parametrize("tier", TIERS, ids=TIER_IDS)
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5, 6), (1, 2, 7, 7), (64, 8, 4, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_kernels_apply_the_relu_after_normalising(tier, shape, dtype, affine, each_isa):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    if shape == (1, 2, 7, 7):   # NaN stays NaN through the fused ReLU, as through np.maximum
        x.flat[::7] = np.nan
    weight = rng.standard_normal(shape[1]).astype(dtype) if affine else None
    bias = rng.standard_normal(shape[1]).astype(dtype) if affine else None
    y, mean, var = tier.batchnorm_forward(x, weight, bias, 1e-5)
    fused, fused_mean, fused_var = tier.batchnorm_forward(x, weight, bias, 1e-5, relu=True)
    np.testing.assert_array_equal(fused, np.maximum(y, 0))
    np.testing.assert_array_equal(fused_mean, mean)
    np.testing.assert_array_equal(fused_var, var)
    assert (fused == 0).any() and (fused > 0).any() or np.isnan(x).any()
    scale, shift = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    out = np.empty_like(x)
    assert tier.channel_affine(x, scale, shift, out=out, relu=True) is out
    np.testing.assert_array_equal(out, np.maximum(tier.channel_affine(x, scale, shift), 0))


@pytest.mark.parametrize("tier", TIERS, ids=TIER_IDS)
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5, 6), (33, 16, 10, 10), (2, 3, 31, 33)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_applies_the_relus_gradient_from_its_output(tier, shape, dtype, each_isa):
    """relu_output: dy * (y > 0) takes dy's place, the ReLU layer's gradient. Each tier gives what
    it gives for that product computed beforehand, bit for bit (NaN outputs count as off, a NaN dy
    stays NaN where the ReLU was off, as in the ReLU layer; planes of 1023 values run through
    every chain), and the native kernel matches the oracle."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 0.5).astype(dtype)
    C = shape[1]
    w, b = rng.uniform(0.5, 2, C).astype(dtype), rng.standard_normal(C).astype(dtype)
    y, mean, var = tier.batchnorm_forward(x, w, b, 1e-5, relu=True)
    y.flat[3::11] = np.nan   # not positive: off, as the separate ReLU's y > 0 is false there
    dy = rng.standard_normal(shape).astype(dtype)
    masked = dy * (y > 0)
    assert masked.dtype == dtype and 0 < np.count_nonzero(masked) < masked.size
    nan_dy = dy.copy()
    nan_dy.flat[np.flatnonzero(y <= 0)[0]] = np.nan   # where the ReLU was off: NaN * 0, as in the ReLU layer
    assert np.isnan(tier.batchnorm_backward(nan_dy, x, w, mean, var, 1e-5, relu_output=y)[0]).any()
    for weight in (w, None):
        got = tier.batchnorm_backward(dy, x, weight, mean, var, 1e-5, relu_output=y)
        want = tier.batchnorm_backward(masked, x, weight, mean, var, 1e-5)
        for a, e in zip(got, want):
            assert (a is None) == (e is None)
            if e is not None:
                np.testing.assert_array_equal(a, e)
    if tier is ops:
        got = ops.batchnorm_backward(dy, x, w, mean, var, 1e-5, relu_output=y)
        want = reference.batchnorm_backward(dy, x, w, mean, var, 1e-5, relu_output=y)
        for name, a, e in zip(("dx", "dweight", "dbias"), got, want):
            assert_close(a, e, dtype, what=name, scale=np.abs(dy).sum() / C)


def replan(model, **options):
    model.executor = Executor(model, **options)
    return model


def network(kind, seed=3):
    if kind == "conv":    # BN -> ReLU -> Conv2D, and BN -> ReLU -> MaxPool2D
        layers = [mq.Conv2D(2, 4, 3, padding="same", bias=False), mq.BatchNorm2D(4), mq.ReLU(),
                  mq.Conv2D(4, 4, 3, padding="same", bias=False), mq.BatchNorm2D(4), mq.ReLU(), mq.MaxPool2D(2),
                  mq.Flatten(), mq.Dense(4 * 4 * 4, 6, bias=False), mq.BatchNorm1D(6), mq.ReLU(), mq.Dense(6, 3)]
        shape = (2, 8, 8)
    elif kind == "dense":   # BN -> ReLU -> Flatten -> Dense, and BN without affine parameters
        layers = [mq.Conv2D(2, 3, 3, bias=False), mq.BatchNorm2D(3, affine=False), mq.ReLU(), mq.Flatten(),
                  mq.Dense(3 * 6 * 6, 3)]
        shape = (2, 8, 8)
    elif kind == "gap":     # BN -> ReLU -> GlobalAvgPool2D, BN -> ReLU -> Dropout: the BN applies the gradient
        layers = [mq.Conv2D(2, 4, 3, padding=1, bias=False), mq.BatchNorm2D(4), mq.ReLU(),
                  mq.Conv2D(4, 6, 3, stride=2, padding=1, bias=False), mq.BatchNorm2D(6), mq.ReLU(),
                  mq.GlobalAvgPool2D(), mq.Dense(6, 5, bias=False), mq.BatchNorm1D(5), mq.ReLU(), mq.Dropout(0.3),
                  mq.Dense(5, 3)]
        shape = (2, 8, 8)
    return mq.Sequential(layers, seed=seed, dtype="float64", input_shape=shape), shape


@pytest.mark.parametrize("backend", ["native", "plain", "reference"])
@pytest.mark.parametrize("kind", ["conv", "dense", "gap"])
def test_fused_batch_norm_trains_and_predicts_like_separate_layers(backend, kind):
    fused, shape = network(kind)
    separate, _ = network(kind)
    replan(fused, lanes=False)
    replan(separate, fuse=False, lanes=False)
    norms = [i for i, layer in enumerate(fused.layers) if isinstance(layer, mq.BatchNorm2D)]   # the test's own check
    assert all(any(s.index == i and (s.relu or s.epilogue) for s in fused.executor.plan.steps) for i in norms)
    assert not any(s.relu or s.epilogue for s in separate.executor.plan.steps)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, *shape)), rng.integers(0, 3, 10)
    with mq.use_backend(backend):
        for _ in range(3):
            losses = [m.train_on_batch(x, y, optimizer=m.optimizer or mq.Adam(1e-2)) for m in (fused, separate)]
            assert losses[0] == losses[1]
        np.testing.assert_array_equal(fused.get_flat_parameters(), separate.get_flat_parameters())
        for key, value in separate.state.buffers.items():
            np.testing.assert_array_equal(fused.state.buffers[key], value)
        np.testing.assert_array_equal(fused.predict_proba(x), separate.predict_proba(x))   # evaluation mode


def test_the_batch_norm_applies_the_gradient_that_the_layer_after_the_relu_cannot():
    """BN -> ReLU -> Dropout: the dropout cannot apply the ReLU's gradient, so the batch norm's
    backward does (the step's epilogue)."""
    model = mq.Sequential([mq.Dense(4, 4), mq.BatchNorm1D(4), mq.ReLU(), mq.Dropout(0.5), mq.Dense(4, 2)])
    steps = {s.index: s for s in model.executor.plan.steps}
    assert 2 not in steps and not steps[1].relu and steps[1].epilogue == ("relu", 0.0)
    assert not steps[3].relu_input
