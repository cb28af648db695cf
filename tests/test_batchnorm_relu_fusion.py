"""A ReLU after a BatchNorm2D/1D runs inside the batch norm's kernels (training and evaluation), and
its gradient in the layer after it, as after a Conv2D: the kernels against BN then ReLU, and models
with fusion on against fusion off, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta import ops, plain, reference
from maqueta.executor import Executor

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


def replan(model, **options):
    model.executor = Executor(model, **options)
    return model


def network(kind, seed=3):
    if kind == "conv":    # BN -> ReLU -> Conv2D, and BN -> ReLU -> MaxPool2D
        layers = [mq.Conv2D(2, 4, 3, padding="same", bias=False), mq.BatchNorm2D(4), mq.ReLU(),
                  mq.Conv2D(4, 4, 3, padding="same", bias=False), mq.BatchNorm2D(4), mq.ReLU(), mq.MaxPool2D(2),
                  mq.Flatten(), mq.Dense(4 * 4 * 4, 6, bias=False), mq.BatchNorm1D(6), mq.ReLU(), mq.Dense(6, 3)]
        shape = (2, 8, 8)
    else:                 # BN -> ReLU -> Flatten -> Dense, and BN without affine parameters
        layers = [mq.Conv2D(2, 3, 3, bias=False), mq.BatchNorm2D(3, affine=False), mq.ReLU(), mq.Flatten(),
                  mq.Dense(3 * 6 * 6, 3)]
        shape = (2, 8, 8)
    return mq.Sequential(layers, seed=seed, dtype="float64", input_shape=shape), shape


@pytest.mark.parametrize("backend", ["native", "plain", "reference"])
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_fused_batch_norm_trains_and_predicts_like_separate_layers(backend, kind):
    fused, shape = network(kind)
    separate, _ = network(kind)
    replan(fused, lanes=False)
    replan(separate, fuse=False, lanes=False)
    norms = [i for i, layer in enumerate(fused.layers) if isinstance(layer, mq.BatchNorm2D)]   # the test's own check
    assert all(any(s.index == i and s.relu for s in fused.executor.plan.steps) for i in norms)
    assert not any(s.relu for s in separate.executor.plan.steps)
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


def test_a_relu_whose_gradient_nobody_applies_stays_a_layer():
    """BN -> ReLU -> Dropout: the dropout cannot apply the ReLU's gradient, so no fusion."""
    model = mq.Sequential([mq.Dense(4, 4), mq.BatchNorm1D(4), mq.ReLU(), mq.Dropout(0.5), mq.Dense(4, 2)])
    steps = {s.index: s for s in model.executor.plan.steps}
    assert not steps[1].relu and 2 in steps
