"""LeakyReLU and ELU fused into the Conv2D / Dense kernel before them: the kernels' fused forward
against the separate activation kernel, and models with fusion on against fusion off.

The forward is the activation kernel's own arithmetic, so fused == separate bit for bit. The
backward takes the derivative from the output y: the leaky ReLU's (1 or slope) is the separate
layer's bit for bit; the ELU's is y + alpha where the ELU layer computes alpha e^x from x, which
differs in rounding (see maqueta.layers.activations.fused_activation_gradient), so ELU gradients
are compared to a tolerance relative to each gradient's largest value.
"""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta import _core, ops, plain, reference
from maqueta.executor import Executor
from conftest import assert_close

ACTIVATIONS = [("leaky_relu", 0.01), ("leaky_relu", 0.2), ("elu", 1.0), ("elu", 0.5)]
LAYER = {"leaky_relu": mq.LeakyReLU, "elu": mq.ELU}
CONV_SHAPES = [  # (N, C, H, W, O, K, stride, padding)
    (2, 3, 9, 9, 4, 3, 1, 0), (3, 2, 8, 7, 5, 3, 1, 1), (2, 3, 10, 9, 8, 3, 2, 1), (1, 1, 6, 6, 16, 2, 1, 0),
    (2, 4, 7, 8, 3, 1, 2, 0),
]


def act_id(a):
    return f"{a[0]}{a[1]}"


# ---- kernels
@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("act", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_conv_forward_is_conv_then_activation(shape, act, dtype, each_conv_algo):
    n, c, h, w, o, k, s, p = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, k, k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    for tier in (ops, plain):
        fused = tier.conv2d_forward(x, wt, b, s, p, activation=act[0], alpha=act[1])
        separate = tier.activation_forward(tier.conv2d_forward(x, wt, b, s, p), act[0], act[1])
        np.testing.assert_array_equal(fused, separate)
    expected = reference.conv2d_forward(x, wt, b, s, p, activation=act[0], alpha=act[1])
    assert_close(plain.conv2d_forward(x, wt, b, s, p, activation=act[0], alpha=act[1]), expected, dtype, what="plain")
    assert_close(ops.conv2d_forward(x, wt, b, s, p, activation=act[0], alpha=act[1]), expected, dtype, what="fast")
    out = np.empty_like(expected)
    assert ops.conv2d_forward(x, wt, None, s, p, activation=act[0], alpha=act[1], out=out) is out
    np.testing.assert_array_equal(out, ops.activation_forward(ops.conv2d_forward(x, wt, None, s, p), *act))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 100_003])   # the last one runs in parallel
def test_elu_gradient_from_its_output(alpha, dtype, n):
    """kind "elu_from_output": the fused ELU's derivative from its output y, 1 or y + alpha: the
    same bits on the fast, plain and oracle tiers, and alpha e^x to rounding."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    x[:3] = [0.0, -0.0, -40.0][:min(n, 3)]
    dy = rng.standard_normal(n).astype(dtype)
    y = ops.activation_forward(x, "elu", alpha)
    fast = ops.activation_backward(dy, y, "elu_from_output", alpha)
    np.testing.assert_array_equal(plain.activation_backward(dy, y, "elu_from_output", alpha), fast)
    np.testing.assert_array_equal(reference.activation_backward(dy, y, "elu_from_output", alpha), fast)
    from_input = ops.activation_backward(dy, x, "elu", alpha)
    np.testing.assert_allclose(fast, from_input, rtol=0, atol=4 * np.finfo(dtype).eps * alpha * np.abs(dy).max())
    for tier in (ops, plain):
        with pytest.raises(ValueError, match="kind must be"):
            tier.activation_forward(x, "elu_from_output", alpha)


@pytest.mark.parametrize("n,i,o", [(1, 5, 3), (7, 16, 10), (47, 9, 13), (48, 20, 7), (100, 33, 17)])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_linear_forward_is_linear_then_activation(n, i, o, act, dtype):
    rng = np.random.default_rng(n + i + o)
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    for tier in (ops, plain):
        for bias in (b, None):
            fused = tier.linear_forward(x, w, bias, activation=act[0], alpha=act[1])
            np.testing.assert_array_equal(fused, tier.activation_forward(tier.linear_forward(x, w, bias), *act))
    expected = reference.linear_forward(x, w, b, activation=act[0], alpha=act[1])
    assert_close(plain.linear_forward(x, w, b, activation=act[0], alpha=act[1]), expected, dtype, what="plain")
    assert_close(ops.linear_forward(x, w, b, activation=act[0], alpha=act[1]), expected, dtype, what="fast")


@pytest.mark.parametrize("tier", [ops, plain, reference], ids=["native", "plain", "reference"])
def test_relu_through_activation_equals_relu_flag(tier):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    np.testing.assert_array_equal(tier.conv2d_forward(x, w, b, activation="relu"), tier.conv2d_forward(x, w, b, relu=True))
    x2, w2 = rng.standard_normal((5, 7)), rng.standard_normal((3, 7))
    np.testing.assert_array_equal(tier.linear_forward(x2, w2, None, activation="relu"),
                                  tier.linear_forward(x2, w2, None, relu=True))


@pytest.mark.parametrize("tier", [ops, plain, reference], ids=["native", "plain", "reference"])
def test_bad_activation_arguments(tier):
    x, w = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="activation"):
        tier.linear_forward(x, w, None, activation="gelu")
    with pytest.raises(ValueError, match="two activations"):
        tier.linear_forward(x, w, None, relu=True, activation="elu")
    with pytest.raises(ValueError, match="activation"):
        tier.conv2d_forward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), None, activation="tanh")
    if tier is not reference:
        with pytest.raises(ValueError, match="alpha"):
            tier.linear_forward(x, w, None, activation="elu", alpha=float("nan"))


# ---- models: fusion on against fusion off
def replan(model, **options):
    model.executor = Executor(model, **options)
    return model


def gradients(model, x, targets):
    _, outputs = model.executor.gradients(x, targets, mq.losses.cross_entropy)
    return outputs.copy(), model.state.grads.copy()


def compare(make, act, dtype, backend, x, targets):
    fused = replan(make(), lanes=False)
    separate = replan(make(), fuse=False, lanes=False)
    kinds = [s.epilogue[0] for s in fused.executor.plan.steps if s.epilogue]
    assert act[0] in kinds and not any(s.epilogue for s in separate.executor.plan.steps)
    with mq.use_backend(backend):
        (yf, gf), (ys, gs) = gradients(fused, x, targets), gradients(separate, x, targets)
        np.testing.assert_array_equal(yf, ys)   # the forward is the activation kernel's arithmetic
        np.testing.assert_array_equal(fused.forward(x), separate.forward(x))
    if act[0] == "leaky_relu" and not (backend == "reference" and dtype == "float32"):
        np.testing.assert_array_equal(gf, gs)
    else:   # the ELU's derivative from y (y + alpha) against alpha e^x: rounding apart. (And the NumPy
        # oracle's separate leaky ReLU multiplies float32 dy by the float64 slope, where the kernels
        # and the fused gradient use the slope as a float32.)
        rtol = 1e-12 if dtype == "float64" else 1e-6
        offsets = np.cumsum([0] + [v.size for layer in fused.layers for v in layer._grads.values()])
        for lo, hi in zip(offsets[:-1], offsets[1:]):
            scale = np.abs(gs[lo:hi]).max()
            assert np.abs(gf[lo:hi] - gs[lo:hi]).max() <= rtol * scale, (lo, hi)


def conv_model(act, dtype, c, h, o, k, s, p, pool):
    oh = (h + 2 * p - k) // s + 1
    tail = (lambda: [mq.MaxPool2D(2), mq.Flatten(), mq.Dense(o * (oh // 2) ** 2, 3)]) if pool else \
        (lambda: [mq.Flatten(), mq.Dense(o * oh * oh, 6), LAYER[act[0]](act[1]), mq.Dense(6, 3)])
    return lambda: mq.Sequential([mq.Conv2D(c, o, k, stride=s, padding=p), LAYER[act[0]](act[1]), *tail()],
                                 dtype=dtype, seed=3, input_shape=(c, h, h))


CONV_MODELS = [(2, 9, 4, 3, 1, 0, True), (3, 8, 5, 3, 1, 1, False), (2, 11, 8, 3, 2, 1, True), (1, 8, 16, 2, 1, 0, False)]


@pytest.mark.parametrize("config", CONV_MODELS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("act", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_fusion_native(config, act, dtype, each_conv_algo):
    c, h = config[0], config[1]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, c, h, h)).astype(dtype)
    compare(conv_model(act, dtype, *config), act, dtype, "native", x, rng.integers(0, 3, 5))


@pytest.mark.parametrize("backend", ["plain", "reference"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_fusion_plain_and_reference(backend, act, dtype):
    for config in (CONV_MODELS[0], CONV_MODELS[1]):
        rng = np.random.default_rng(8)
        x = rng.standard_normal((4, config[0], config[1], config[1])).astype(dtype)
        compare(conv_model(act, dtype, *config), act, dtype, backend, x, rng.integers(0, 3, 4))


@pytest.mark.parametrize("backend", ["native", "plain", "reference"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [5, 60])   # dot products and broadcast tiles
def test_dense_fusion(backend, act, dtype, n):
    make = lambda: mq.Sequential([mq.Dense(12, 9), LAYER[act[0]](act[1]), mq.Dense(9, 7), LAYER[act[0]](act[1]),
                                  mq.Dense(7, 3)], dtype=dtype, seed=4, input_shape=(12,))
    rng = np.random.default_rng(9)
    compare(make, act, dtype, backend, rng.standard_normal((n, 12)).astype(dtype), rng.integers(0, 3, n))


def plan_summary(model):
    return [(type(model.layers[s.index]).__name__, s.relu, s.epilogue) for s in model.executor.plan.steps]


def test_plan_fuses_what_the_layers_declare():
    model = mq.Sequential([mq.Conv2D(1, 2, 3), mq.LeakyReLU(0.2), mq.Conv2D(2, 2, 3), mq.ELU(0.5), mq.Sigmoid(),
                           mq.Flatten(), mq.Dense(8, 4), mq.ELU(), mq.Dense(4, 3), mq.GELU(), mq.Dense(3, 2),
                           mq.LeakyReLU()])
    assert plan_summary(model) == [
        ("Conv2D", False, ("leaky_relu", 0.2)), ("Conv2D", False, ("elu", 0.5)), ("Sigmoid", False, None),
        ("Flatten", False, None), ("Dense", False, ("elu", 1.0)), ("Dense", False, None), ("GELU", False, None),
        ("Dense", False, ("leaky_relu", 0.01))]   # a leaky ReLU fuses at the end too: no consumer needed
    assert all(s.epilogue is None and not s.relu for s in replan(model, fuse=False).executor.plan.steps)


@pytest.mark.parametrize("make", [lambda: mq.LeakyReLU(-0.1), lambda: mq.LeakyReLU(0), lambda: mq.ELU(0),
                                  lambda: mq.ELU(-0.5)], ids=["leaky-0.1", "leaky0", "elu0", "elu-0.5"])
@pytest.mark.parametrize("backend", ["native", "plain", "reference"])
def test_activations_whose_output_hides_the_input_do_not_fuse(make, backend):
    """slope <= 0 or alpha <= 0: y's sign no longer gives x's, so the layer stays a layer; still correct."""
    assert make().epilogue is None
    model = mq.Sequential([mq.Conv2D(2, 3, 3), make(), mq.Flatten(), mq.Dense(3 * 5 * 5, 4), make(), mq.Dense(4, 3)],
                          dtype="float64", seed=5, input_shape=(2, 7, 7))
    assert [type(model.layers[s.index]).__name__ for s in model.executor.plan.steps] == \
        ["Conv2D", type(make()).__name__, "Flatten", "Dense", type(make()).__name__, "Dense"]
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((4, 2, 7, 7)), rng.integers(0, 3, 4)
    with mq.use_backend(backend):
        y, g = gradients(model, x, t)
    layers = model.layers
    h1 = reference.conv2d_forward(x, layers[0].weight, layers[0].bias)
    a1 = reference.activation_forward(h1, layers[1].kind, layers[1]._alpha())
    h2 = reference.linear_forward(a1.reshape(4, -1), layers[3].weight, layers[3].bias)
    a2 = reference.activation_forward(h2, layers[4].kind, layers[4]._alpha())
    np.testing.assert_allclose(y, reference.linear_forward(a2, layers[5].weight, layers[5].bias), rtol=1e-12, atol=1e-12)


def test_gelu_does_not_fuse():
    model = mq.Sequential([mq.Dense(4, 5), mq.GELU(), mq.Dense(5, 3)])
    assert [s.epilogue for s in model.executor.plan.steps] == [None, None, None]


def test_lane_segment_leaves_out_a_conv_with_a_fused_leaky_relu():
    """The lane kernel applies a ReLU only: a conv with a fused leaky ReLU or ELU runs in NCHW."""
    make = lambda: mq.Sequential([mq.Conv2D(1, 4, 3), mq.LeakyReLU(0.1), mq.MaxPool2D(2), mq.Flatten(),
                                  mq.Dense(4 * 5 * 5, 3)], seed=6, input_shape=(1, 12, 12))
    model = make()
    assert model.executor.plan.lane_steps == 0 and model.executor.plan.steps[0].epilogue == ("leaky_relu", 0.1)
    unfused = replan(make(), fuse=False)
    assert unfused.executor.plan.lane_steps == 1   # the conv alone, then the LeakyReLU as a layer
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((20, 1, 12, 12)).astype(np.float32), rng.integers(0, 3, 20)
    (yf, gf), (ys, gs) = gradients(model, x, t), gradients(unfused, x, t)
    np.testing.assert_allclose(yf, ys, rtol=1e-5, atol=1e-5)      # lanes sum in another order
    assert np.abs(gf - gs).max() <= 1e-4 * np.abs(gs).max()


def test_config_and_state_dict_are_unchanged():
    model = mq.Sequential([mq.Dense(4, 5), mq.ELU(0.5), mq.Dense(5, 3)], seed=1)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "ELU", "Dense"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert model.get_config()["layers"][1] == {"type": "ELU", "config": {"alpha": 0.5}} or \
        "ELU" in str(model.get_config())
